"""`manage.py import_comparisons`: messages, exit status, and a real process run."""

from __future__ import annotations

import gzip
import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotate.models import Comparison, Judgment, Project
from tests.conftest import ALPACA_DIR, HH_RLHF, REPO

pytestmark = pytest.mark.django_db


@pytest.fixture
def hh_files(tmp_path: Path) -> tuple[Path, Path]:
    lines = [
        line for line in gzip.open(HH_RLHF, "rt", encoding="utf-8").read().split("\n") if line
    ][:512]
    good = tmp_path / "hh512.jsonl"
    good.write_text("\n".join(lines) + "\n", encoding="utf-8")
    lines[255] = lines[255][: len(lines[255]) // 2]  # line 256 cut in half
    broken = tmp_path / "hh512-broken.jsonl"
    broken.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return good, broken


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("import_comparisons", *args, stdout=out)
    return out.getvalue()


def test_command_creates_then_says_nothing_new_then_refuses_a_broken_copy(hh_files) -> None:
    good, broken = hh_files
    out = run("demo-hh", str(good), "--format", "hh-rlhf")
    assert "created project demo-hh with defaults" in out
    assert "512 new comparisons (0 already present)" in out
    assert "pass --with-judgments" in out

    out = run("demo-hh", str(good), "--format", "hh-rlhf")
    assert "created project" not in out and "0 new comparisons (512 already present)" in out
    assert "nothing new" in out

    with pytest.raises(CommandError) as info:
        run("demo-hh", str(broken), "--format", "hh-rlhf")
    message = str(info.value)
    assert (
        "nothing imported" in message
        and f"{broken}, line 256" in message
        and "invalid JSON" in message
    )
    assert Comparison.objects.count() == 512


def test_command_imports_both_judges_with_judgments() -> None:
    files = sorted(ALPACA_DIR.glob("Mixtral-8x7B-Instruct-v0.1.*.annotations.json.gz"))
    first = run("ae", str(files[0]), "--with-judgments")
    assert "805 new comparisons (0 already present)" in first and "805 new judgments" in first
    second = run("ae", str(files[1]), "--with-judgments")
    assert "0 new comparisons (805 already present)" in second and "805 new judgments" in second
    assert (
        "by 1 AI annotator: " in second and "(1 new)" in second and Judgment.objects.count() == 1610
    )


def test_command_rejects_an_unknown_format_listing_the_valid_ones(hh_files) -> None:
    with pytest.raises(
        CommandError, match="unknown format 'xml'; valid formats: auto, jsonl, csv, hh-rlhf"
    ):
        run("p", str(hh_files[0]), "--format", "xml")
    assert not Project.objects.exists()


def test_real_process_exit_status_and_messages(tmp_path: Path, hh_files) -> None:
    """The issue's own check, as a user runs it: a fresh SQLite file, three runs."""
    good, broken = hh_files
    db = tmp_path / "x.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "DEBUG": "1"}

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    migrate = manage("migrate", "-v0")
    assert migrate.returncode == 0, migrate.stderr
    first = manage("import_comparisons", "demo-hh", str(good), "--format", "hh-rlhf")
    assert first.returncode == 0 and "512 new comparisons (0 already present)" in first.stdout, (
        first.stderr
    )
    again = manage("import_comparisons", "demo-hh", str(good), "--format", "hh-rlhf")
    assert again.returncode == 0 and "0 new comparisons (512 already present)" in again.stdout
    bad = manage("import_comparisons", "demo-hh", str(broken), "--format", "hh-rlhf")
    assert bad.returncode != 0 and "line 256" in bad.stderr and "Traceback" not in bad.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from annotate_comparison").fetchone() == (512,)
