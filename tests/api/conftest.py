"""A small world for API tests: one project with every role, and one outsider.

Personas (tests/conftest.py): alice annotates, lee leads, mia is ML staff;
here also sam (is_staff, no membership) and nina (ML staff of ANOTHER
project: a member of something, but not of this project).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotate.models import Assignment, Comparison, Membership, Project, User
from tests.factories import (
    AssignmentFactory,
    ComparisonFactory,
    JudgmentFactory,
    MembershipFactory,
    ProjectFactory,
    UserFactory,
)
from training.models import DatasetExport, MetricPoint, TrainingRun
from training.services import export_create

ROLES = ("anonymous", "annotator", "lead", "ml", "staff", "nonmember")


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    # PBKDF2 costs ~1 s per user on this CPU; these tests are not about hashing.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def artifacts(settings, tmp_path: Path) -> Path:
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    return settings.ARTIFACTS_ROOT


@dataclass
class World:
    project: Project
    other: Project
    users: dict[str, User | None]
    comparisons: list[Comparison]
    open_assignment: Assignment  # alice's, open
    export: DatasetExport
    run: TrainingRun

    def client(self, role: str) -> APIClient:
        client = APIClient()
        user = self.users[role]
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client


@pytest.fixture
def world(db) -> World:
    project = ProjectFactory(slug="demo", name="Demo")
    other = ProjectFactory(slug="other", name="Other")
    users: dict[str, User | None] = {
        "anonymous": None,
        "annotator": UserFactory(username="alice"),
        "lead": UserFactory(username="lee"),
        "ml": UserFactory(username="mia"),
        "staff": UserFactory(username="sam", is_staff=True),
        "nonmember": UserFactory(username="nina"),
    }
    for role, name in (
        ("annotator", Membership.Role.ANNOTATOR),
        ("lead", Membership.Role.LEAD),
        ("ml", Membership.Role.ML),
    ):
        MembershipFactory(project=project, user=users[role], role=name)
    MembershipFactory(project=other, user=users["nonmember"], role=Membership.Role.ML)
    bob = UserFactory(username="bob")
    MembershipFactory(project=project, user=bob, role=Membership.Role.ANNOTATOR)
    comparisons = [ComparisonFactory(project=project, model_a="m1", model_b="m2") for _ in range(4)]
    ComparisonFactory(project=other)
    # bob judged the first two (B better, then A much better); alice has one open slot on the third.
    JudgmentFactory(
        assignment=AssignmentFactory(comparison=comparisons[0], annotator=bob),
        overall=2,
        axes={"helpful": "B", "truthful": "B", "harmless": "tie"},
    )
    JudgmentFactory(
        assignment=AssignmentFactory(comparison=comparisons[1], annotator=bob),
        overall=-3,
        axes={"helpful": "A", "truthful": "tie", "harmless": "A"},
    )
    JudgmentFactory(
        assignment=AssignmentFactory(comparison=comparisons[1], annotator=users["annotator"]),
        overall=-1,
        axes={"helpful": "A", "truthful": "A", "harmless": "A"},
    )
    from django.utils import timezone

    now = timezone.now()
    open_assignment = AssignmentFactory(
        comparison=comparisons[2],
        annotator=users["annotator"],
        status=Assignment.Status.OPEN,
        shown_at=now,
        lease_expires_at=now + timezone.timedelta(seconds=project.lease_s),
    )
    for c in comparisons[:3]:
        Comparison.objects.filter(pk=c.pk).update(slots_taken=1 + (c == comparisons[1]))
    export = export_create(project=project, user=users["ml"], eval_fraction=0.0)
    run = TrainingRun.objects.create(
        project=project, kind=TrainingRun.Kind.REWARD, export=export, created_by=users["ml"]
    )
    MetricPoint.objects.bulk_create(
        [
            MetricPoint(run=run, step=s, name=n, value=v)
            for s in range(3)
            for n, v in (("loss", 1.0 / (s + 1)), ("accuracy", 0.5))
        ]
    )
    return World(
        project=project,
        other=other,
        users=users,
        comparisons=comparisons,
        open_assignment=open_assignment,
        export=export,
        run=run,
    )
