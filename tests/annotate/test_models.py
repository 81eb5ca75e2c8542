"""Database constraints that keep the labeling data honest."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotate.models import User
from tests.factories import AssignmentFactory, ComparisonFactory, JudgmentFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_one_assignment_per_comparison_and_annotator(project, alice) -> None:
    comparison = ComparisonFactory(project=project)
    AssignmentFactory(comparison=comparison, annotator=alice)
    with pytest.raises(IntegrityError), transaction.atomic():
        AssignmentFactory(comparison=comparison, annotator=alice)


def test_external_id_unique_per_project(project) -> None:
    ComparisonFactory(project=project, external_id="x1")
    with pytest.raises(IntegrityError), transaction.atomic():
        ComparisonFactory(project=project, external_id="x1")


def test_one_current_judgment_per_assignment_but_corrections_allowed(project, alice) -> None:
    first = JudgmentFactory(
        assignment=AssignmentFactory(comparison=ComparisonFactory(project=project), annotator=alice)
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        JudgmentFactory(assignment=first.assignment)
    # A correction supersedes the old record instead of editing it.
    first.superseded_at = timezone.now()
    first.save(update_fields=["superseded_at"])
    second = JudgmentFactory(assignment=first.assignment, supersedes=first, overall=1)
    assert second.side == "B" and first.side == "A"


def test_ai_annotators_cannot_log_in(client) -> None:
    UserFactory(username="judge", kind=User.Kind.AI)
    UserFactory(username="human")
    assert not client.login(username="judge", password="pw-for-tests-1")
    assert client.login(username="human", password="pw-for-tests-1")
