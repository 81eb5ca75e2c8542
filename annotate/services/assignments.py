"""Who labels what next: fair, capacity-bounded, concurrency-safe assignment.

Invariants (tested in tests/annotate/test_assignments.py and, under 20
concurrent annotators, in test_concurrency_pg.py):

* an annotator never gets the same comparison twice (unique constraint on
  (comparison, annotator); skipped and expired assignments keep their row, so
  they keep blocking it too);
* ``Comparison.slots_taken`` counts open + submitted assignments and never
  exceeds the capacity ``project.overlap + comparison.extra_overlap``;
* non-gold work goes to the comparison closest to completion (highest
  ``slots_taken`` below capacity) so finished items accumulate instead of
  every item sitting at 1/3;
* with probability ``project.gold_rate`` a gold comparison is served
  (``Assignment.is_gold``); the gold answer itself never leaves the server;
* the side shown on the left is drawn per assignment and stored
  (``Assignment.swapped``); judgments are stored canonically (see judgments.py).

Concurrency: on PostgreSQL the candidate row is taken with
``SELECT ... FOR UPDATE SKIP LOCKED``, so two annotators asking at the same
moment get different comparisons instead of queueing on one row. On SQLite the
settings open every transaction with BEGIN IMMEDIATE, which serializes writers
(``select_for_update`` is a no-op there).

Every function issues a fixed number of queries, whatever the project's size.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Count, Exists, F, OuterRef, Q, Value, When
from django.utils import timezone

from annotate.models import Assignment, Comparison, Judgment, Project, User

# Reclaiming is done a bounded batch at a time inside `assignment_next`, which
# keeps the request's cost constant even after a long outage.
RECLAIM_BATCH = 100


class LabelingError(Exception):
    """A request the rules refuse; `message` is meant for the annotator."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _random_source(*, project: Project, annotator: User) -> random.Random:
    """Fresh randomness per call, or a reproducible stream in tests/demos.

    With ``settings.ANNOTATE_RANDOM_SEED`` set, the n-th assignment of an
    annotator in a project always draws the same numbers, so a browser test can
    know in advance which items will be shown swapped. Production leaves it
    unset and uses the OS entropy source.
    """
    seed = getattr(settings, "ANNOTATE_RANDOM_SEED", None)
    if seed is None:
        return random.SystemRandom()
    served = Assignment.objects.filter(project=project, annotator=annotator).count()
    return seeded_random(seed=seed, project_id=project.pk, annotator_id=annotator.pk, served=served)


def seeded_random(
    *, seed: int | str, project_id: int, annotator_id: int, served: int
) -> random.Random:
    """The stream `_random_source` uses for an annotator's `served`-th item."""
    return random.Random(f"{seed}:{project_id}:{annotator_id}:{served}")


def _reclaim(*, project: Project | None, now: datetime, limit: int) -> int:
    """Expire open assignments whose lease ended and give their slots back.

    Runs inside the caller's transaction. SKIP LOCKED: a row another request is
    working on right now (its own late submit, say) is left for next time.
    """
    stale = Assignment.objects.filter(status=Assignment.Status.OPEN, lease_expires_at__lte=now)
    if project is not None:
        stale = stale.filter(project=project)
    rows = list(
        stale.select_for_update(skip_locked=True).values_list("pk", "comparison_id")[:limit]
    )
    if not rows:
        return 0
    Assignment.objects.filter(pk__in=[pk for pk, _ in rows]).update(
        status=Assignment.Status.EXPIRED, closed_at=now
    )
    released: dict[int, int] = {}
    for _, comparison_id in rows:
        released[comparison_id] = released.get(comparison_id, 0) + 1
    # One UPDATE for all comparisons; F() makes the decrement atomic against
    # concurrent increments of the same row.
    Comparison.objects.filter(pk__in=released).update(
        slots_taken=F("slots_taken")
        - Case(*(When(pk=cid, then=Value(n)) for cid, n in released.items()), default=Value(0))
    )
    return len(rows)


@transaction.atomic
def assignment_expire_stale(
    *, project: Project | None = None, now: datetime | None = None, limit: int = RECLAIM_BATCH
) -> int:
    """Reclaim expired leases (all projects when `project` is None); returns how many."""
    return _reclaim(project=project, now=now or timezone.now(), limit=limit)


def _capacity_filter(project: Project) -> Q:
    return Q(slots_taken__lt=project.overlap + F("extra_overlap"))


def _pick(*, project: Project, annotator: User, gold: bool) -> Comparison | None:
    seen = Assignment.objects.filter(comparison=OuterRef("pk"), annotator=annotator)
    candidates = (
        Comparison.objects.filter(_capacity_filter(project), project=project, gold__isnull=not gold)
        .filter(~Exists(seen))
        # Non-gold: closest to completion first. Gold checks: least served
        # first, so each gold item checks many different annotators.
        .order_by("-slots_taken" if not gold else "slots_taken", "pk")
        # NO KEY: the FK checks of concurrent judgment inserts on this
        # comparison take KEY SHARE locks, which plain FOR UPDATE would block.
        .select_for_update(skip_locked=True, no_key=True)
    )
    return candidates.first()


@transaction.atomic
def assignment_next(
    *,
    project: Project,
    annotator: User,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> Assignment | None:
    """The annotator's current open assignment, or a new one; None when done.

    An open assignment whose lease has not run out is returned again (a page
    reload resumes it, and its countdown keeps running from `shown_at`), so
    reloading never burns slots nor resets the clock.
    """
    now = now or timezone.now()
    _reclaim(project=project, now=now, limit=RECLAIM_BATCH)
    current = (
        Assignment.objects.filter(
            project=project,
            annotator=annotator,
            status=Assignment.Status.OPEN,
            lease_expires_at__gt=now,
        )
        .select_related("comparison")
        .order_by("shown_at", "pk")
        .first()
    )
    if current is not None:
        return current

    rng = rng or _random_source(project=project, annotator=annotator)
    want_gold = project.gold_rate > 0 and rng.random() < project.gold_rate
    comparison = _pick(project=project, annotator=annotator, gold=want_gold)
    if comparison is None:
        # Nothing of the drawn kind left: any remaining item is still useful work.
        comparison = _pick(project=project, annotator=annotator, gold=not want_gold)
    if comparison is None:
        return None
    swapped = rng.random() < 0.5
    Comparison.objects.filter(pk=comparison.pk).update(slots_taken=F("slots_taken") + 1)
    comparison.slots_taken += 1
    return Assignment.objects.create(
        project=project,
        comparison=comparison,
        annotator=annotator,
        swapped=swapped,
        is_gold=comparison.gold is not None,
        status=Assignment.Status.OPEN,
        shown_at=now,
        lease_expires_at=now + timedelta(seconds=project.lease_s),
    )


@transaction.atomic
def assignment_skip(
    *,
    project: Project,
    annotator: User,
    assignment_id: int,
    reason: str,
    now: datetime | None = None,
) -> Assignment:
    """Give an open assignment back with a reason; its slot returns to the pool.

    Idempotent: skipping a skipped (or already expired) assignment changes
    nothing. The row stays, so this annotator is never offered it again.
    """
    now = now or timezone.now()
    assignment = lock_own_assignment(
        project=project, annotator=annotator, assignment_id=assignment_id
    )
    if assignment.status == Assignment.Status.SUBMITTED:
        raise LabelingError(
            "already_submitted", "You already submitted this comparison; it cannot be skipped now."
        )
    if assignment.status == Assignment.Status.OPEN:
        Assignment.objects.filter(pk=assignment.pk).update(
            status=Assignment.Status.SKIPPED, closed_at=now, skip_reason=reason[:200]
        )
        Comparison.objects.filter(pk=assignment.comparison_id).update(
            slots_taken=F("slots_taken") - 1
        )
        assignment.status, assignment.closed_at, assignment.skip_reason = (
            Assignment.Status.SKIPPED,
            now,
            reason[:200],
        )
    return assignment


def lock_own_assignment(*, project: Project, annotator: User, assignment_id: int) -> Assignment:
    """Row-lock an assignment of this project, refusing other people's.

    Must run inside a transaction. Locks only the assignment row (`of`), not
    the joined comparison, so submits on the same comparison do not queue.
    """
    assignment = (
        Assignment.objects.select_for_update(of=("self",), no_key=True)
        .select_related("comparison")
        .filter(pk=assignment_id, project=project)
        .first()
    )
    if assignment is None:
        raise LabelingError("not_found", "That comparison does not exist in this project.")
    if assignment.annotator_id != annotator.pk:
        raise LabelingError(
            "not_yours", "That comparison is assigned to someone else; nothing was recorded."
        )
    return assignment


@dataclass(frozen=True)
class Progress:
    done_today: int
    done_total: int
    remaining: int


def annotator_progress(
    *, annotator: User, project_ids: list[int], now: datetime | None = None
) -> dict[int, Progress]:
    """Per project: current judgments today / in total, and items still available to this annotator.

    "Today" is the calendar day in the server's time zone. Three queries for
    any number of projects.
    """
    now = timezone.localtime(now or timezone.now())
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    done = {
        row["project_id"]: row
        for row in Judgment.objects.filter(
            annotator=annotator, project_id__in=project_ids, superseded_at__isnull=True
        )
        .values("project_id")
        .annotate(total=Count("pk"), today=Count("pk", filter=Q(submitted_at__gte=midnight)))
    }
    seen = Assignment.objects.filter(comparison=OuterRef("pk"), annotator=annotator)
    available = dict(
        Comparison.objects.filter(
            project_id__in=project_ids, slots_taken__lt=F("project__overlap") + F("extra_overlap")
        )
        .filter(~Exists(seen))
        .values("project_id")
        .annotate(n=Count("pk"))
        .values_list("project_id", "n")
    )
    open_now = dict(
        Assignment.objects.filter(
            annotator=annotator,
            project_id__in=project_ids,
            status=Assignment.Status.OPEN,
            lease_expires_at__gt=now,
        )
        .values("project_id")
        .annotate(n=Count("pk"))
        .values_list("project_id", "n")
    )
    return {
        pid: Progress(
            done_today=done.get(pid, {}).get("today", 0),
            done_total=done.get(pid, {}).get("total", 0),
            remaining=available.get(pid, 0) + open_now.get(pid, 0),
        )
        for pid in project_ids
    }
