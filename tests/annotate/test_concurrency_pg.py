"""20 annotators hammering the assignment service at once, on PostgreSQL.

Run with `DATABASE_URL=$TEST_POSTGRES_URL` (the Makefile's PostgreSQL pass and
.ci/run do): pytest-django then creates its test database on that server.
Each thread gets its own connection (Django connections are per thread).
"""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest
from django.db import connection, connections
from django.db.models import Count, F, Q

from annotate.models import Assignment, Comparison, Judgment, Membership
from annotate.services.assignments import LabelingError, assignment_next, assignment_skip
from annotate.services.judgments import judgment_submit
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ANNOTATORS = 20
CYCLES = 50
OVERLAP = 3
COMPARISONS = 420  # 20 x 50 judgments need 334 at overlap 3; the rest absorbs skips and gold.


@pytest.fixture(autouse=True)
def require_postgres() -> None:
    # On SQLite conftest deselects this module; only CI keeps it, to fail loudly here.
    if connection.vendor != "postgresql":
        pytest.fail(
            "needs PostgreSQL: run with DATABASE_URL=$TEST_POSTGRES_URL "
            "(make test's second pass does when TEST_POSTGRES_URL is set)"
        )


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_twenty_annotators_fifty_cycles_overlap_three() -> None:
    project = ProjectFactory(slug="race", overlap=OVERLAP, gold_rate=0.1)
    Comparison.objects.bulk_create(
        Comparison(
            project=project,
            external_id=f"r{i}",
            content_hash=f"h{i}",
            prompt=f"q{i}",
            response_a=f"a{i}",
            response_b=f"b{i}",
            gold=(-1 if i % 12 == 0 else None),
            # A few were sent back by a lead: capacity 4.
            extra_overlap=(1 if i % 50 == 7 else 0),
        )
        for i in range(COMPARISONS)
    )
    users = [UserFactory(username=f"racer{i}") for i in range(ANNOTATORS)]
    for user in users:
        MembershipFactory(project=project, user=user, role=Membership.Role.ANNOTATOR)

    barrier = threading.Barrier(ANNOTATORS)
    errors: list[BaseException] = []
    submitted: dict[int, list[int]] = {u.pk: [] for u in users}  # annotator -> assignment ids
    repeats: dict[int, int] = {u.pk: 0 for u in users}

    def work(index: int) -> None:
        user = users[index]
        rng = random.Random(index)
        try:
            barrier.wait()
            done = 0
            while done < CYCLES:
                a = assignment_next(project=project, annotator=user, rng=rng)
                assert a is not None, f"{user} ran out of work after {done} cycles"
                if rng.random() < 0.08:  # now and then a skip with a reason
                    assignment_skip(
                        project=project, annotator=user, assignment_id=a.pk, reason="broken"
                    )
                    continue
                answer = {
                    "overall": rng.randint(-3, 3),
                    "axes": {ax: rng.choice(["A", "tie", "B"]) for ax in project.rubric_axes},
                }
                outcome = judgment_submit(
                    project=project, annotator=user, assignment_id=a.pk, **answer
                )
                assert outcome.created
                submitted[user.pk].append(a.pk)
                if rng.random() < 0.1:  # a double POST
                    again = judgment_submit(
                        project=project, annotator=user, assignment_id=a.pk, **answer
                    )
                    assert not again.created and again.judgment.pk == outcome.judgment.pk
                    repeats[user.pk] += 1
                done += 1
        except (
            AssertionError,
            LabelingError,
            Exception,
        ) as exc:  # reported below, with the thread's name
            errors.append(exc)
        finally:
            connections.close_all()  # this thread's connection

    threads = [
        threading.Thread(target=work, args=(i,), name=f"annotator-{i}") for i in range(ANNOTATORS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a worker hung (lock wait?)"
    assert not errors, errors[:3]

    # Every submission recorded exactly once.
    all_submitted = [aid for ids in submitted.values() for aid in ids]
    assert len(all_submitted) == ANNOTATORS * CYCLES
    judgments = Judgment.objects.filter(project=project)
    assert judgments.count() == len(all_submitted)
    assert Counter(judgments.values_list("assignment_id", flat=True)) == Counter(all_submitted)
    assert sum(repeats.values()) > 0
    assert not Assignment.objects.filter(pk__in=all_submitted).exclude(status="submitted").exists()

    # No duplicate (comparison, annotator).
    dupes = (
        Assignment.objects.filter(project=project)
        .values("comparison", "annotator")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
    )
    assert not dupes.exists()

    # Never above capacity, and the denormalised counter matches the truth.
    rows = Comparison.objects.filter(project=project).annotate(
        live=Count("assignments", filter=Q(assignments__status__in=["open", "submitted"])),
        capacity=F("project__overlap") + F("extra_overlap"),
    )
    over = [(c.pk, c.live, c.capacity) for c in rows if c.live > c.capacity]
    assert not over, over[:5]
    drift = [(c.pk, c.slots_taken, c.live) for c in rows if c.slots_taken != c.live]
    assert not drift, drift[:5]
    # Closest-to-completion: work piles up on few comparisons instead of spreading thinly.
    full = sum(1 for c in rows if c.live >= c.capacity)
    assert full >= (ANNOTATORS * CYCLES) // (OVERLAP + 1) - ANNOTATORS, full
