"""`manage.py demo`: seeds real data, serves the login page, runs a worker."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from celery import Celery
from django.core.management import call_command

from annotate.models import Comparison, Judgment, Membership, Project, User

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_seed_only_is_idempotent_and_creates_personas(capsys) -> None:
    call_command("demo", "--seed-only")
    first = capsys.readouterr().out
    assert "Seeded" in first and "alice" in first
    hh = Project.objects.get(slug="hh-harmless")
    assert Comparison.objects.filter(project=hh).count() > 0
    alpaca = Project.objects.get(slug="alpaca-judges")
    assert Judgment.objects.filter(project=alpaca).count() > 0
    assert User.objects.get(username="alice").check_password("alice-demo-pw")
    assert Membership.objects.filter(user__username="lee", role="lead", project=hh).exists()
    assert Membership.objects.filter(user__username="mia", role="ml", project=hh).exists()
    counts = (Comparison.objects.count(), Judgment.objects.count())

    call_command("demo", "--seed-only")
    assert "already seeded" in capsys.readouterr().out
    assert (Comparison.objects.count(), Judgment.objects.count()) == counts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_serves_login_page_with_a_worker(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "DEBUG": "1", "VAR_DIR": str(tmp_path)}
    for key in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        env.pop(key, None)
    log = open(tmp_path / "demo.log", "wb")  # noqa: SIM115
    demo = subprocess.Popen([sys.executable, "manage.py", "demo", "--port", str(port)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        body = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=5) as response:
                    body = response.read().decode()
                    break
            except OSError:
                time.sleep(1)
        assert 'name="password"' in body, (tmp_path / "demo.log").read_text()[-3000:]
        # The demo's worker consumes from the embedded broker under VAR_DIR.
        client = Celery("probe", broker=f"sqla+sqlite:///{tmp_path / 'celery-broker.sqlite'}",
                        backend=f"db+sqlite:///{tmp_path / 'celery-results.sqlite'}")
        try:
            assert client.send_task("config.ping", args=[1]).get(timeout=90) == 2
        finally:
            client.close()
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C does
        try:
            demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
            pytest.fail("demo did not stop on Ctrl-C within 30 s")
