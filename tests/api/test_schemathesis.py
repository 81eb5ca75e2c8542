"""Schemathesis against a live server: property-based requests from the OpenAPI
schema, positive and negative, must never get a 5xx.

The server is pytest-django's `live_server` (a real HTTP server thread on
127.0.0.1 in this process, on the test database). Schemathesis runs as its
CLI in a subprocess with a token. Two passes:

1. as staff (every endpoint but labeling reaches its real code);
2. as an annotator, on the labeling endpoints (next / skip / submit).

`{slug}` is pinned to the seeded project so requests get past the 404 and
exercise the validation and services behind it. Bounded: a few examples per
operation, one worker, a time budget; the whole test takes well under 2 min.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from annotate.models import Assignment, Comparison, Membership
from tests.factories import (
    AssignmentFactory,
    ComparisonFactory,
    JudgmentFactory,
    MembershipFactory,
    ProjectFactory,
    UserFactory,
)
from training import services
from training.models import MetricPoint, TrainingRun

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _seed() -> dict[str, str]:
    """Project `demo`: judgments, alice's open assignment, an export, a run; tokens and ids."""
    project = ProjectFactory(slug="demo", name="Demo")
    staff = UserFactory(username="sam", is_staff=True)
    alice = UserFactory(username="alice")
    bob = UserFactory(username="bob")
    for user in (alice, bob):
        MembershipFactory(project=project, user=user, role=Membership.Role.ANNOTATOR)
    comparisons = [ComparisonFactory(project=project) for _ in range(6)]
    for c in comparisons[:3]:
        JudgmentFactory(
            assignment=AssignmentFactory(comparison=c, annotator=bob),
            overall=-2,
            axes={"helpful": "A", "truthful": "tie", "harmless": "B"},
        )
    now = timezone.now()
    AssignmentFactory(
        comparison=comparisons[3],
        annotator=alice,
        status=Assignment.Status.OPEN,
        shown_at=now,
        lease_expires_at=now + timezone.timedelta(hours=1),
    )
    # Keep the assignment service's counter (open + submitted per comparison) exact.
    Comparison.objects.filter(pk__in=[c.pk for c in comparisons[:4]]).update(slots_taken=1)
    export = services.export_create(project=project, user=staff, eval_fraction=0.0)
    run = TrainingRun.objects.create(
        project=project, kind="reward", export=export, created_by=staff
    )
    MetricPoint.objects.create(run=run, step=1, name="loss", value=0.7)
    ids = sorted(
        {
            *(c.pk for c in comparisons),
            *Assignment.objects.values_list("pk", flat=True),
            export.pk,
            run.pk,
        }
    )
    return {
        "staff": Token.objects.create(user=staff).key,
        "annotator": Token.objects.create(user=alice).key,
        "ids": ", ".join(f'"{pk}"' for pk in ids),  # the path id is a digit string
    }


def _schemathesis(url: str, token: str, out: Path, *extra: str) -> tuple[int, str, ET.Element]:
    junit = out / "junit.xml"
    cmd = [
        str(SCHEMATHESIS),
        "--config-file",
        str(out.parent / "schemathesis.toml"),
        "run",
        f"{url}/api/v1/schema/",
        "--checks",
        "not_a_server_error",
        "--mode",
        "all",
        "--max-examples",
        "8",
        "--workers",
        "1",
        "--phases",
        "examples,coverage,fuzzing",
        "--seed",
        "1",
        "--no-shrink",
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "30",
        "-H",
        f"Authorization: Token {token}",
        "--report",
        "junit",
        "--report-junit-path",
        str(junit),
        *extra,
    ]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=out)
    return proc.returncode, proc.stdout + proc.stderr, ET.parse(junit).getroot()


@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_no_server_errors(
    live_server, settings, tmp_path: Path, monkeypatch
) -> None:
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    # Runs created by the fuzzer must not reach a real broker.
    enqueued: list[int] = []
    monkeypatch.setattr(services, "run_enqueue", lambda *, run_id: enqueued.append(run_id))
    tokens = _seed()
    # Real ids half of the time, so detail/skip/submit/download reach their logic, not just a 404.
    (tmp_path / "schemathesis.toml").write_text(
        '[parameters]\n"path.slug" = "demo"\n'
        '"path.id" = { dictionary = "ids", probability = 0.5 }\n\n'
        f"[dictionaries.ids]\nvalues = [{tokens['ids']}]\n"
    )

    passes = {
        "staff": (tokens["staff"], ()),
        "annotator": (tokens["annotator"], ("--include-path-regex", "assignments")),
    }
    for name, (token, extra) in passes.items():
        out = tmp_path / name
        out.mkdir()
        rc, log, junit = _schemathesis(live_server.url, token, out, *extra)
        cases = junit.iter("testcase")
        failed = [
            c.get("name")
            for c in cases
            if c.find("failure") is not None or c.find("error") is not None
        ]
        tested = len(list(junit.iter("testcase")))
        assert rc == 0 and not failed, (
            f"{name} pass: rc={rc}, failing operations: {failed}\n{log[-6000:]}"
        )
        # It really exercised the API: every operation of the pass was tested.
        assert tested >= (18 if name == "staff" else 4), log[-3000:]
