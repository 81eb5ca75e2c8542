"""Shared fixtures. Personas: alice and bob annotate, lee leads, mia is ML staff."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from annotate.models import Membership, Project, User
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
HH_RLHF = SHARED_DATA / "hh-rlhf-harmless-sample.jsonl.gz"
ALPACA_DIR = SHARED_DATA / "alpaca-eval"
TEST_OUTPUT = Path(os.environ.get("TEST_OUTPUT_DIR", REPO / "test-output"))
PASSWORD = "pw-for-tests-1"


@pytest.fixture
def project(db) -> Project:
    return ProjectFactory(slug="demo", name="Demo")


def _member(project: Project, username: str, role: str) -> User:
    user = UserFactory(username=username)
    MembershipFactory(project=project, user=user, role=role)
    return user


@pytest.fixture
def alice(project: Project) -> User:
    return _member(project, "alice", Membership.Role.ANNOTATOR)


@pytest.fixture
def bob(project: Project) -> User:
    return _member(project, "bob", Membership.Role.ANNOTATOR)


@pytest.fixture
def lee(project: Project) -> User:
    return _member(project, "lee", Membership.Role.LEAD)


@pytest.fixture
def mia(project: Project) -> User:
    return _member(project, "mia", Membership.Role.ML)


@pytest.fixture
def test_output() -> Path:
    TEST_OUTPUT.mkdir(parents=True, exist_ok=True)
    return TEST_OUTPUT
