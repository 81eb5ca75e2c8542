"""Assignment and judgment services: fairness, capacity, gold, orientation, leases."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from annotate.models import Assignment, Comparison, Judgment, Membership
from annotate.services.assignments import (
    LabelingError,
    annotator_progress,
    assignment_expire_stale,
    assignment_next,
    assignment_skip,
)
from annotate.services.judgments import JudgmentInvalid, judgment_correct, judgment_submit
from tests.factories import ComparisonFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    # PBKDF2 at its production cost dominates these tests' run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


AXES_A = {"helpful": "A", "truthful": "tie", "harmless": "B"}


def annotators(project, n: int) -> list:
    users = [UserFactory(username=f"ann{i}") for i in range(n)]
    for u in users:
        MembershipFactory(project=project, user=u, role=Membership.Role.ANNOTATOR)
    return users


def submit(project, user, assignment, overall: int = -2, axes: dict | None = None, **kw):
    return judgment_submit(
        project=project,
        annotator=user,
        assignment_id=assignment.pk,
        overall=overall,
        axes=axes or AXES_A,
        **kw,
    )


def slots(comparison: Comparison) -> int:
    comparison.refresh_from_db()
    return comparison.slots_taken


def test_never_twice_and_never_above_overlap(project) -> None:
    project.overlap = 2
    project.save()
    comparisons = ComparisonFactory.create_batch(3, project=project)
    users = annotators(project, 4)
    served: list[tuple[int, int]] = []
    for _ in range(3):
        for user in users:
            a = assignment_next(project=project, annotator=user)
            if a is not None:
                served.append((a.comparison_id, user.pk))
                submit(project, user, a)
    assert len(served) == len(set(served)) == 6  # 3 comparisons x overlap 2
    per_comparison = Counter(c for c, _ in served)
    assert set(per_comparison.values()) == {2}
    assert [slots(c) for c in comparisons] == [2, 2, 2]
    assert all(assignment_next(project=project, annotator=u) is None for u in users)


def test_prefers_the_comparison_closest_to_completion(project) -> None:
    near, half, fresh = ComparisonFactory.create_batch(3, project=project)
    Comparison.objects.filter(pk=near.pk).update(slots_taken=2)
    Comparison.objects.filter(pk=half.pk).update(slots_taken=1)
    user = annotators(project, 1)[0]
    assert assignment_next(project=project, annotator=user).comparison_id == near.pk
    assert slots(near) == 3


def test_extra_overlap_serves_a_full_comparison_again(project) -> None:
    project.overlap = 1
    project.save()
    c = ComparisonFactory(project=project)
    first, second = annotators(project, 2)
    submit(project, first, assignment_next(project=project, annotator=first))
    assert assignment_next(project=project, annotator=second) is None
    # A lead sends it back for more judgments.
    Comparison.objects.filter(pk=c.pk).update(extra_overlap=1)
    again = assignment_next(project=project, annotator=second)
    assert again is not None and again.comparison_id == c.pk


def test_open_assignment_is_resumed_not_duplicated(project, alice) -> None:
    ComparisonFactory.create_batch(3, project=project)
    first = assignment_next(project=project, annotator=alice)
    assert assignment_next(project=project, annotator=alice).pk == first.pk
    assert Assignment.objects.filter(annotator=alice).count() == 1


def test_gold_rate_and_gold_flag(project) -> None:
    project.gold_rate = 0.3
    project.overlap = 1
    project.save()
    gold = ComparisonFactory.create_batch(30, project=project, gold=-1)
    plain = ComparisonFactory.create_batch(70, project=project)
    user = annotators(project, 1)[0]
    rng = random.Random(7)
    served = []
    for _ in range(40):
        a = assignment_next(project=project, annotator=user, rng=rng)
        served.append(a)
        submit(project, user, a)
    gold_ids = {c.pk for c in gold}
    assert all(a.is_gold == (a.comparison_id in gold_ids) for a in served)
    share = sum(a.is_gold for a in served) / len(served)
    assert 0.1 <= share <= 0.55, share
    # When one kind runs out the other is still served.
    remaining = len(gold) + len(plain) - len(served)
    rest = []
    while (a := assignment_next(project=project, annotator=user, rng=rng)) is not None:
        rest.append(a)
        submit(project, user, a)
    assert len(rest) == remaining


def test_swap_is_random_per_assignment_and_judgments_are_canonical(project) -> None:
    project.overlap = 1
    project.save()
    ComparisonFactory.create_batch(40, project=project)
    user = annotators(project, 1)[0]
    rng = random.Random(3)
    flags = []
    for _ in range(40):
        a = assignment_next(project=project, annotator=user, rng=rng)
        # On screen: left (displayed A) much better, helpful left, harmless right.
        outcome = submit(
            project, user, a, overall=-3, axes={"helpful": "A", "truthful": "tie", "harmless": "B"}
        )
        j = outcome.judgment
        flags.append(a.swapped)
        assert j.swapped == a.swapped
        if a.swapped:  # the left one was canonical B
            assert (j.overall, j.axes) == (3, {"helpful": "B", "truthful": "tie", "harmless": "A"})
        else:
            assert (j.overall, j.axes) == (-3, {"helpful": "A", "truthful": "tie", "harmless": "B"})
    assert 8 <= sum(flags) <= 32  # both orientations, roughly balanced


def test_canonical_input_is_stored_as_given(project, alice) -> None:
    ComparisonFactory(project=project)
    a = assignment_next(project=project, annotator=alice, rng=random.Random(0))
    Assignment.objects.filter(pk=a.pk).update(swapped=True)
    j = submit(project, alice, a, overall=2, displayed=False).judgment
    assert j.overall == 2 and j.axes == AXES_A


def test_double_submit_records_one_judgment(project, alice) -> None:
    ComparisonFactory(project=project)
    a = assignment_next(project=project, annotator=alice)
    first = submit(project, alice, a, overall=-1)
    again = submit(project, alice, a, overall=3)
    assert first.created and not again.created
    # The first answer is kept, stored canonically (the pair may have been shown swapped).
    kept = 1 if a.swapped else -1
    assert again.judgment.pk == first.judgment.pk and again.judgment.overall == kept
    assert Judgment.objects.count() == 1


def test_foreign_skipped_and_unknown_assignments_are_refused(project, alice, bob) -> None:
    ComparisonFactory.create_batch(2, project=project)
    a = assignment_next(project=project, annotator=alice)
    with pytest.raises(LabelingError) as err:
        submit(project, bob, a)
    assert err.value.code == "not_yours"
    with pytest.raises(LabelingError) as err:
        judgment_submit(
            project=project, annotator=alice, assignment_id=999999, overall=0, axes=AXES_A
        )
    assert err.value.code == "not_found"
    assignment_skip(project=project, annotator=alice, assignment_id=a.pk, reason="broken")
    with pytest.raises(LabelingError) as err:
        submit(project, alice, a)
    assert err.value.code == "skipped"
    assert Judgment.objects.count() == 0


def test_invalid_answers_are_refused_with_field_errors(project, alice) -> None:
    project.require_rationale = True
    project.save()
    ComparisonFactory(project=project)
    a = assignment_next(project=project, annotator=alice)
    with pytest.raises(JudgmentInvalid) as err:
        submit(project, alice, a, overall=4, axes={"helpful": "A", "bogus": "B"}, flags=["nope"])
    assert set(err.value.errors) == {
        "overall",
        "axis-truthful",
        "axis-harmless",
        "axes",
        "flags",
        "rationale",
    }
    assert Judgment.objects.count() == 0
    j = submit(
        project, alice, a, rationale=" A is right. ", flags=["unsafe", "hallucination", "unsafe"]
    ).judgment
    assert j.rationale == "A is right." and j.flags == ["hallucination", "unsafe"]


def test_skip_releases_the_slot_but_blocks_the_annotator(project, alice, bob) -> None:
    project.overlap = 1
    project.save()
    c = ComparisonFactory(project=project)
    a = assignment_next(project=project, annotator=alice)
    assert slots(c) == 1
    skipped = assignment_skip(
        project=project, annotator=alice, assignment_id=a.pk, reason="unclear_prompt"
    )
    assert skipped.status == "skipped" and slots(c) == 0
    assignment_skip(
        project=project, annotator=alice, assignment_id=a.pk, reason="again"
    )  # idempotent
    assert slots(c) == 0
    assert assignment_next(project=project, annotator=alice) is None
    assert assignment_next(project=project, annotator=bob).comparison_id == c.pk


def test_budget_lease_reclaim_and_late_submits(project, alice, bob) -> None:
    project.overlap = 1
    project.time_budget_s, project.lease_grace_s = 60, 60
    project.save()
    c = ComparisonFactory(project=project)
    t0 = timezone.now()
    a = assignment_next(project=project, annotator=alice, now=t0)
    assert a.lease_expires_at == t0 + timedelta(seconds=120)
    # Late but within the lease: accepted, over budget.
    ok = submit(project, alice, a, now=t0 + timedelta(seconds=90))
    assert ok.over_budget and ok.judgment.over_budget and not ok.late
    assert ok.judgment.shown_at == t0

    c2 = ComparisonFactory(project=project)
    b = assignment_next(project=project, annotator=bob, now=t0)
    assert b.comparison_id == c2.pk
    # The lease runs out: reclaimed, the slot returns to the pool.
    assert assignment_expire_stale(project=project, now=t0 + timedelta(seconds=121)) == 1
    assert slots(c2) == 0 and Assignment.objects.get(pk=b.pk).status == "expired"
    # Still free: the late answer is kept and retakes the slot.
    late = submit(project, bob, b, now=t0 + timedelta(seconds=130))
    assert late.created and late.late and late.over_budget and slots(c2) == 1
    assert slots(c) == 1


def test_late_submit_after_slot_went_elsewhere_is_refused(project, alice, bob) -> None:
    project.overlap = 1
    project.save()
    c = ComparisonFactory(project=project)
    t0 = timezone.now()
    a = assignment_next(project=project, annotator=alice, now=t0)
    later = t0 + timedelta(seconds=project.lease_s + 1)
    b = assignment_next(
        project=project, annotator=bob, now=later
    )  # reclaims alice's lease, takes the slot
    assert b.comparison_id == c.pk and slots(c) == 1
    with pytest.raises(LabelingError) as err:
        submit(project, alice, a, now=later)
    assert err.value.code == "lease_lost" and "not recorded" in err.value.message
    assert Judgment.objects.count() == 0 and slots(c) == 1
    # Alice never gets that comparison again.
    assert assignment_next(project=project, annotator=alice, now=later) is None


def test_active_time_is_clamped_to_server_time(project, alice) -> None:
    ComparisonFactory(project=project)
    t0 = timezone.now()
    a = assignment_next(project=project, annotator=alice, now=t0)
    j = submit(project, alice, a, active_ms=10**9, now=t0 + timedelta(seconds=5)).judgment
    assert j.active_ms == 7000 and not j.over_budget


def test_correction_supersedes_instead_of_editing(project, alice, lee) -> None:
    ComparisonFactory(project=project)
    a = assignment_next(project=project, annotator=alice)
    old = submit(project, alice, a, overall=-2, displayed=False).judgment
    new = judgment_correct(judgment_id=old.pk, by=lee, overall=1, axes=AXES_A)
    old.refresh_from_db()
    assert old.overall == -2 and old.superseded_at is not None and old.superseded_by == lee
    assert new.supersedes_id == old.pk and new.overall == 1 and new.assignment_id == a.pk
    with pytest.raises(LabelingError):
        judgment_correct(judgment_id=old.pk, by=lee, overall=0, axes=AXES_A)


def test_progress_counts(project, alice, bob) -> None:
    project.overlap = 1
    project.save()
    ComparisonFactory.create_batch(5, project=project)
    for _ in range(2):
        submit(project, alice, assignment_next(project=project, annotator=alice))
    assignment_next(project=project, annotator=alice)  # one open
    assignment_next(project=project, annotator=bob)  # bob holds one
    progress = annotator_progress(annotator=alice, project_ids=[project.pk])[project.pk]
    assert (progress.done_today, progress.done_total) == (2, 2)
    assert progress.remaining == 2  # her open one + one free (bob holds one)
