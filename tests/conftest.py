"""Shared fixtures. Personas: alice and bob annotate, lee leads, mia is ML staff."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

# No per-example deadline (speed is measured in benchmarks/, and a loaded CI
# box would flake); in CI the examples are derived from the test, so a red run
# is reproducible from its log rather than a lucky draw.
hypothesis_settings.register_profile("default", deadline=None)
hypothesis_settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") == "true" else "default")

from annotate.models import Membership, Project, User
from tests.factories import MembershipFactory, ProjectFactory, UserFactory


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (not skip) the tests whose server is absent on a developer's machine.

    `postgres` tests need the suite to run on PostgreSQL (`make test`'s second
    pass, `DATABASE_URL=$TEST_POSTGRES_URL`); `redis` tests need `TEST_REDIS_URL`.
    In CI nothing is dropped: a missing server there fails the test with a
    message saying what is missing.
    """
    from django.conf import settings

    if os.environ.get("CI") == "true":
        return
    absent = set()
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        absent.add("postgres")
    if not os.environ.get("TEST_REDIS_URL"):
        absent.add("redis")
    dropped = [i for i in items if any(i.get_closest_marker(m) for m in absent)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if i not in dropped]

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
