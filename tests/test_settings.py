"""Settings come from the environment and fail loudly on bad values."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROBE = "import django; django.setup(); from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'], s.DEBUG)"


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DEBUG", "SECRET_KEY", "CELERY_BROKER_URL"}}
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env={**base, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True, text=True, timeout=60,
    )


def test_defaults_in_debug_use_sqlite() -> None:
    out = _run({"DEBUG": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["django.db.backends.sqlite3", "True"]


def test_postgres_url_selects_postgresql() -> None:
    out = _run({"DEBUG": "1", "DATABASE_URL": "postgres://u:p@127.0.0.1:5432/db"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "django.db.backends.postgresql"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SECRET_KEY must be set"),
        ({"DEBUG": "ture"}, "DEBUG='ture' is not a boolean"),
        ({"DEBUG": "1", "DATABASE_URL": "mysql://u@h/db"}, "use sqlite:/// or postgres://"),
        ({"DEBUG": "1", "DATABASE_URL": "postgress://x"}, "DATABASE_URL='postgress://x'"),
        ({"DEBUG": "1", "CELERY_BROKER_URL": "kafka://x"}, "CELERY_BROKER_URL='kafka://x'"),
        ({"DEBUG": "1", "MAX_UPLOAD_MB": "lots"}, "MAX_UPLOAD_MB='lots' is not an integer"),
    ],
)
def test_bad_values_fail_loudly(env: dict[str, str], message: str) -> None:
    out = _run(env)
    assert out.returncode != 0
    assert "ImproperlyConfigured" in out.stderr and message in out.stderr, out.stderr[-1500:]


def test_file_database_is_wal(tmp_path: Path) -> None:
    db_path = tmp_path / "x.sqlite3"
    code = PROBE.replace("print(", "from django.db import connection; c=connection.cursor(); c.execute('PRAGMA journal_mode'); print(c.fetchone()[0], ")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "DEBUG": "1", "DATABASE_URL": f"sqlite:///{db_path}"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "wal"
