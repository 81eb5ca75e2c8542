"""The project report for leads, and what leads do about disagreements.

* `agreement_report` loads a project's current judgments into one frame
  (`annotate.services.report_frames`: a few narrow queries), computes
  `annotate.agreement.project_report` and caches it under a fingerprint of
  the data (judgment count, last id, last correction, skips), so a new
  judgment, a correction or a skip makes the next call recompute.
* `comparison_disagreements` lists comparisons whose current judgments split.
* `comparison_send_back` raises a comparison's `extra_overlap`, which is what
  makes `assignment_next` serve it again; `comparison_resolve` closes it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, F, Max, Q, QuerySet, Sum
from django.utils import timezone

from annotate import agreement
from annotate.models import Assignment, Comparison, Judgment, Membership, Project, User
from annotate.services.report_frames import assignments_frame, judgments_frame, judgments_query

__all__ = [
    "agreement_report",
    "assignments_frame",
    "comparison_disagreements",
    "comparison_resolve",
    "comparison_send_back",
    "judgments_frame",
    "judgments_query",
]

CACHE_TIMEOUT_S = 7 * 24 * 3600
# How many more judgments one "send back" may ask for: a typo must not queue
# a comparison for hundreds of annotators.
MAX_SEND_BACK = 10


def _fingerprint(project: Project) -> str:
    judgments = Judgment.objects.filter(project=project).aggregate(
        n=Count("id"), last=Max("id"), corrected=Max("superseded_at")
    )
    skips = Assignment.objects.filter(project=project, status=Assignment.Status.SKIPPED).aggregate(
        n=Count("id"), last=Max("id")
    )
    # A lead can change gold answers (admin) without any judgment arriving; a
    # position-weighted sum notices a changed, added, removed or moved answer.
    gold = Comparison.objects.filter(project=project, gold__isnull=False).aggregate(
        n=Count("id"), weighted=Sum(F("id") * (F("gold") + 10))
    )
    # created_at: a project deleted and re-created (tests, demos) may reuse the
    # same pk and ids; its report must not be served from the old one's cache.
    shape = [
        project.created_at,
        project.rubric_axes,
        project.max_strength,
        agreement.SCHEMA_VERSION,
    ]
    text = json.dumps([judgments, skips, gold, shape], default=str, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def agreement_report(*, project: Project, refresh: bool = False) -> dict[str, Any]:
    """The project's agreement/bias report (schema: `annotate.agreement`), cached.

    Not wrapped in a transaction on purpose: on SQLite every transaction here
    begins IMMEDIATE (takes the write lock), and a report is a pure read.
    """
    key = f"pairwise:agreement:{project.pk}:{_fingerprint(project)}"
    if not refresh:
        cached = cache.get(key)
        if cached is not None:
            return cached
    report = agreement.project_report(
        judgments_frame(project=project),
        project=project.slug,
        axes=list(project.rubric_axes),
        max_strength=project.max_strength,
        assignments=assignments_frame(project=project),
    )
    report["generated_at"] = timezone.now().isoformat()
    cache.set(key, report, CACHE_TIMEOUT_S)
    return report


def comparison_disagreements(*, project: Project, status: str = "all") -> QuerySet[Comparison]:
    """Comparisons whose current judgments do not all pick the same side (A / tie / B).

    Unresolved first; ``status`` is "open", "resolved" or "all". Each row carries
    ``n_a``, ``n_tie``, ``n_b`` (current judgments per side).
    """
    current = Q(judgments__superseded_at__isnull=True)
    qs = (
        Comparison.objects.filter(project=project)
        .annotate(
            n_a=Count("judgments", filter=current & Q(judgments__overall__lt=0)),
            n_tie=Count("judgments", filter=current & Q(judgments__overall=0)),
            n_b=Count("judgments", filter=current & Q(judgments__overall__gt=0)),
        )
        .filter(Q(n_a__gt=0, n_b__gt=0) | Q(n_a__gt=0, n_tie__gt=0) | Q(n_tie__gt=0, n_b__gt=0))
        .order_by(F("resolved_at").asc(nulls_first=True), "pk")
    )
    if status == "open":
        qs = qs.filter(resolved_at__isnull=True)
    elif status == "resolved":
        qs = qs.filter(resolved_at__isnull=False)
    elif status != "all":
        raise ValidationError({"status": f"unknown status {status!r} (open, resolved or all)"})
    return qs


def _require_lead(*, project_id: int, user: User) -> None:
    # Views check this too; the rule lives here so the API and commands cannot skip it.
    if not Membership.objects.filter(
        project_id=project_id, user=user, role=Membership.Role.LEAD
    ).exists():
        raise PermissionDenied("only a lead of this project may do that")


@transaction.atomic
def comparison_send_back(*, comparison: Comparison, lead: User, extra: int = 1) -> Comparison:
    """Ask for `extra` more judgments on a comparison and reopen it.

    Raising `extra_overlap` raises its capacity (`overlap + extra_overlap`),
    so `assignment_next` offers it again to annotators who have not seen it.
    """
    if not isinstance(extra, int) or not 1 <= extra <= MAX_SEND_BACK:
        raise ValidationError({"extra": f"ask for 1 to {MAX_SEND_BACK} more judgments"})
    _require_lead(project_id=comparison.project_id, user=lead)
    # Row lock: two leads sending it back at once must add up, not overwrite.
    locked = Comparison.objects.select_for_update().get(pk=comparison.pk)
    locked.extra_overlap += extra
    locked.resolved_at = None
    locked.resolved_by = None
    locked.save(update_fields=["extra_overlap", "resolved_at", "resolved_by"])
    return locked


@transaction.atomic
def comparison_resolve(*, comparison: Comparison, lead: User) -> Comparison:
    """Mark a disagreement resolved; resolving twice keeps the first who/when."""
    _require_lead(project_id=comparison.project_id, user=lead)
    locked = Comparison.objects.select_for_update().get(pk=comparison.pk)
    if locked.resolved_at is None:
        locked.resolved_at = timezone.now()
        locked.resolved_by = lead
        locked.save(update_fields=["resolved_at", "resolved_by"])
    return locked
