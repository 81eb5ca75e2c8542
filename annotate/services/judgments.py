"""Recording judgments: validation, orientation, idempotency, late answers.

Orientation: the annotator answers about what they *saw* ("displayed": the
left response is called A on screen). When the assignment was shown swapped,
the displayed A is the canonical B, so the overall sign and every axis choice
flip before storage. Everything downstream reads canonical values only.

Idempotency: submitting an already-submitted assignment records nothing and
returns the judgment that was stored the first time (a double click, a retried
POST after a flaky network). The assignment row is locked first, so two
concurrent copies of the same POST serialize and the second sees the first.

Late answers (documented policy):
* after the time budget but within the lease: accepted, ``over_budget=True``;
* after the lease, before anyone reclaimed it: the same (the slot is still
  ours);
* after the lease was reclaimed (status ``expired``): accepted only if the
  comparison still has a free slot, which the submit then takes back; if the
  slot went to someone else it is refused with ``LabelingError("lease_lost")``
  and a message saying so. Never a server error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotate.models import AXIS_CHOICES, Assignment, Comparison, Judgment, Project, User
from annotate.services.assignments import LabelingError, lock_own_assignment

MAX_RATIONALE_CHARS = 5000
_FLIP = {"A": "B", "B": "A", "tie": "tie"}


class JudgmentInvalid(LabelingError):
    """The answer breaks the project's rules; `errors` maps field -> message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("invalid", "Please fix the highlighted fields.")
        self.errors = errors


@dataclass(frozen=True)
class SubmitOutcome:
    judgment: Judgment
    created: bool  # False: a repeat of an earlier submit, nothing new stored
    over_budget: bool
    late: bool  # accepted after the lease had run out


def canonical_overall(value: int, *, swapped: bool) -> int:
    """Displayed signed preference (<0: left better) -> canonical (<0: A better)."""
    return -value if swapped else value


def canonical_side(side: str, *, swapped: bool) -> str:
    return _FLIP[side] if swapped else side


def _validated(
    *, project: Project, overall: int, axes: Mapping[str, str], flags: Sequence[str], rationale: str
) -> tuple[int, dict[str, str], list[str], str]:
    errors: dict[str, str] = {}
    limit = project.max_strength
    if not isinstance(overall, int) or isinstance(overall, bool) or abs(overall) > limit:
        errors["overall"] = f"Choose a point on the scale (-{limit}..{limit})."
    clean_axes: dict[str, str] = {}
    for axis in project.rubric_axes:
        choice = axes.get(axis)
        if choice not in AXIS_CHOICES:
            errors[f"axis-{axis}"] = f"Choose A, tie or B for {axis}."
        else:
            clean_axes[axis] = choice
    unknown_axes = set(axes) - set(project.rubric_axes)
    if unknown_axes:
        errors["axes"] = f"Unknown axes: {', '.join(sorted(unknown_axes))}."
    unknown_flags = [f for f in flags if f not in project.flags]
    if unknown_flags:
        errors["flags"] = f"Unknown flags: {', '.join(unknown_flags)}."
    rationale = (rationale or "").strip()
    if project.require_rationale and not rationale:
        errors["rationale"] = "This project asks for a short rationale."
    if len(rationale) > MAX_RATIONALE_CHARS:
        errors["rationale"] = f"Keep the rationale under {MAX_RATIONALE_CHARS} characters."
    if errors:
        raise JudgmentInvalid(errors)
    # Keep the project's flag order and drop repeats, so equal answers compare equal.
    chosen = set(flags)
    return overall, clean_axes, [f for f in project.flags if f in chosen], rationale


@transaction.atomic
def judgment_submit(
    *,
    project: Project,
    annotator: User,
    assignment_id: int,
    overall: int,
    axes: Mapping[str, str],
    flags: Sequence[str] = (),
    rationale: str = "",
    active_ms: int | None = None,
    displayed: bool = True,
    source: str = Judgment.Source.WEB,
    now: datetime | None = None,
) -> SubmitOutcome:
    """Record the annotator's answer for one assignment (see module docstring).

    `displayed=True`: `overall` and `axes` are as seen on screen (the web
    form); `displayed=False`: they are already canonical (an API client that
    did its own un-swapping).
    """
    now = now or timezone.now()
    assignment = lock_own_assignment(
        project=project, annotator=annotator, assignment_id=assignment_id
    )
    if assignment.status == Assignment.Status.SUBMITTED:
        existing = Judgment.objects.filter(
            assignment=assignment, superseded_at__isnull=True
        ).first()
        if existing is not None:
            return SubmitOutcome(
                judgment=existing, created=False, over_budget=existing.over_budget, late=False
            )
    if assignment.status == Assignment.Status.SKIPPED:
        raise LabelingError(
            "skipped", "You skipped this comparison, so this answer was not recorded."
        )

    overall, axes_clean, flags_clean, rationale = _validated(
        project=project, overall=overall, axes=axes, flags=flags, rationale=rationale
    )
    if displayed and assignment.swapped:
        overall = canonical_overall(overall, swapped=True)
        axes_clean = {axis: canonical_side(side, swapped=True) for axis, side in axes_clean.items()}

    late = assignment.status == Assignment.Status.EXPIRED or (
        assignment.lease_expires_at is not None and assignment.lease_expires_at <= now
    )
    if assignment.status == Assignment.Status.EXPIRED:
        # Take the slot back only if nobody filled it meanwhile; the filter
        # and the increment are one statement, so this cannot overfill.
        retaken = Comparison.objects.filter(
            pk=assignment.comparison_id, slots_taken__lt=project.overlap + F("extra_overlap")
        ).update(slots_taken=F("slots_taken") + 1)
        if not retaken:
            raise LabelingError(
                "lease_lost",
                "Time ran out on that comparison and its slot went to another annotator, "
                "so this answer was not recorded.",
            )

    elapsed_ms = max(0, int((now - assignment.shown_at).total_seconds() * 1000))
    if active_ms is not None:
        # The browser's clock cannot have been active longer than the item was
        # on screen by the server's clock (plus a little transfer slack).
        active_ms = max(0, min(int(active_ms), elapsed_ms + 2000))
    over_budget = elapsed_ms > project.time_budget_s * 1000
    judgment = Judgment.objects.create(
        project=project,
        comparison_id=assignment.comparison_id,
        assignment=assignment,
        annotator=annotator,
        overall=overall,
        axes=axes_clean,
        flags=flags_clean,
        rationale=rationale,
        swapped=assignment.swapped,
        source=source,
        shown_at=assignment.shown_at,
        submitted_at=now,
        active_ms=active_ms,
        over_budget=over_budget,
    )
    Assignment.objects.filter(pk=assignment.pk).update(
        status=Assignment.Status.SUBMITTED, closed_at=now
    )
    return SubmitOutcome(judgment=judgment, created=True, over_budget=over_budget, late=late)


@transaction.atomic
def judgment_correct(
    *,
    judgment_id: int,
    by: User,
    overall: int,
    axes: Mapping[str, str],
    flags: Sequence[str] = (),
    rationale: str = "",
    now: datetime | None = None,
) -> Judgment:
    """Replace a current judgment by a corrected copy (canonical values).

    Judgments are never edited: the old row gets `superseded_at/by` and the new
    row points at it with `supersedes`. Callers check that `by` may do this
    (the author, or a lead of the project).
    """
    now = now or timezone.now()
    old = (
        Judgment.objects.select_for_update(of=("self",))
        .select_related("project")
        .filter(pk=judgment_id)
        .first()
    )
    if old is None:
        raise LabelingError("not_found", "That judgment does not exist.")
    if old.superseded_at is not None:
        raise LabelingError(
            "superseded", "That judgment was already corrected; correct the newest version."
        )
    overall, axes_clean, flags_clean, rationale = _validated(
        project=old.project, overall=overall, axes=axes, flags=flags, rationale=rationale
    )
    # The partial unique constraint allows one current judgment per
    # assignment, so the old one must stop being current first.
    Judgment.objects.filter(pk=old.pk).update(superseded_at=now, superseded_by=by)
    return Judgment.objects.create(
        project_id=old.project_id,
        comparison_id=old.comparison_id,
        assignment_id=old.assignment_id,
        annotator_id=old.annotator_id,
        overall=overall,
        axes=axes_clean,
        flags=flags_clean,
        rationale=rationale,
        swapped=old.swapped,
        source=old.source,
        shown_at=old.shown_at,
        submitted_at=now,
        active_ms=old.active_ms,
        over_budget=old.over_budget,
        supersedes=old,
    )
