"""The project report for leads, and what leads do about disagreements.

* `agreement_report` loads a project's current judgments into one frame (one
  query), computes `annotate.agreement.project_report` and caches it under a
  fingerprint of the data (judgment count, last id, last correction, skips),
  so a new judgment, a correction or a skip makes the next call recompute.
* `comparison_disagreements` lists comparisons whose current judgments split.
* `comparison_send_back` raises a comparison's `extra_overlap`, which is what
  makes `assignment_next` serve it again; `comparison_resolve` closes it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import Count, F, Max, Q, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Length
from django.utils import timezone

from annotate import agreement
from annotate.models import Assignment, Comparison, Judgment, Membership, Project, User

CACHE_TIMEOUT_S = 7 * 24 * 3600
# How many more judgments one "send back" may ask for: a typo must not queue
# a comparison for hundreds of annotators.
MAX_SEND_BACK = 10


def judgments_frame(*, project: Project) -> pd.DataFrame:
    """The project's current judgments, one row each, in `annotate.agreement`'s schema.

    One query: lengths and gold come from the comparison join, rubric choices
    are pulled out of the JSON by the database (no per-row JSON parsing here).
    The ORM builds it (``.values()``); its rows are read through the cursor
    straight into pandas, which converts whole columns at once: Django's
    per-row converters and dicts cost ~2.5x the CPU at 100k judgments.
    ``seconds`` is the client-measured active time when the browser sent it,
    else submitted_at - shown_at; NaN for imported verdicts (no real timing).
    """
    axes = list(project.rubric_axes)
    axis_fields = {f"axis_{i}": KeyTextTransform(axis, "axes") for i, axis in enumerate(axes)}
    rows = (
        Judgment.objects.filter(project=project, superseded_at__isnull=True)
        .values(
            "comparison_id",
            "overall",
            "swapped",
            "shown_at",
            "submitted_at",
            "active_ms",
            "over_budget",
            "source",
            username=F("annotator__username"),
            gold=F("comparison__gold"),
            len_a=Length("comparison__response_a"),
            len_b=Length("comparison__response_b"),
            **axis_fields,
        )
        .order_by()
    )
    sql, params = rows.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        columns = [column[0] for column in cursor.description]
        raw = pd.DataFrame.from_records(cursor.fetchall(), columns=columns)
    if raw.empty:
        return agreement.empty_frame(axes)
    # SQLite hands back naive UTC datetimes (or ISO text), PostgreSQL aware ones.
    submitted = pd.to_datetime(raw["submitted_at"], utc=True, format="ISO8601")
    wall = (
        submitted - pd.to_datetime(raw["shown_at"], utc=True, format="ISO8601")
    ).dt.total_seconds()
    # Imported verdicts carry no real timing (the importer stamps both times).
    wall = wall.where(raw["source"] != Judgment.Source.IMPORT)
    active = pd.to_numeric(raw["active_ms"], errors="coerce") / 1000.0
    frame = pd.DataFrame(
        {
            "comparison": raw["comparison_id"].astype("int64"),
            "annotator": pd.Categorical(raw["username"].astype(str)),
            "overall": raw["overall"].astype("int64"),
            "swapped": raw["swapped"].astype(bool),
            "seconds": active.fillna(wall).astype(float),
            "over_budget": raw["over_budget"].astype(bool),
            "len_a": raw["len_a"].fillna(0).astype("int64"),
            "len_b": raw["len_b"].fillna(0).astype("int64"),
            "gold": pd.to_numeric(raw["gold"], errors="coerce").astype(float),
        }
    )
    for i, axis in enumerate(axes):
        frame[agreement.axis_column(axis)] = raw[f"axis_{i}"]
    return frame


def assignments_frame(*, project: Project) -> pd.DataFrame:
    """Assignment counts per (annotator, status), for skip rates."""
    rows = (
        Assignment.objects.filter(project=project)
        .values(annotator_name=F("annotator__username"), state=F("status"))
        .annotate(n=Count("id"))
        .order_by()
    )
    frame = pd.DataFrame.from_records(list(rows), columns=["annotator_name", "state", "n"])
    return frame.rename(columns={"annotator_name": "annotator", "state": "status"})


def _fingerprint(project: Project) -> str:
    judgments = Judgment.objects.filter(project=project).aggregate(
        n=Count("id"), last=Max("id"), corrected=Max("superseded_at")
    )
    skips = Assignment.objects.filter(project=project, status=Assignment.Status.SKIPPED).aggregate(
        n=Count("id"), last=Max("id")
    )
    # created_at: a project deleted and re-created (tests, demos) may reuse the
    # same pk and ids; its report must not be served from the old one's cache.
    shape = [
        project.created_at,
        project.rubric_axes,
        project.max_strength,
        agreement.SCHEMA_VERSION,
    ]
    text = json.dumps([judgments, skips, shape], default=str, sort_keys=True)
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
