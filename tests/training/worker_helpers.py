"""A real Celery worker process sharing the test's database, broker and artifacts folder.

pytest-django's SQLite test database lives in memory, where another process
cannot see it. `shared_database` copies its schema to a file (sqlite3's backup
API) and points this process's default connection at that file for the
duration of a test, so the web side (test client or live_server, which shares
the connection) and the worker read and write the same rows. On PostgreSQL
the test database is already shared: its URL is handed to the worker as is.
Use with `@pytest.mark.django_db(transaction=True)`: the worker must see
committed rows.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connections

REPO = Path(__file__).resolve().parents[2]
Urls = tuple[str, str]  # (broker, result backend)


def embedded_urls(tmp_path: Path) -> Urls:
    return f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}", f"db+sqlite:///{tmp_path / 'results.sqlite'}"


def redis_urls(tmp_path: Path) -> Urls:
    url = os.environ.get("TEST_REDIS_URL")
    if not url:  # conftest deselects `redis` tests outside CI when it is unset
        pytest.fail("TEST_REDIS_URL must be set in CI (.ci/run starts Redis on 127.0.0.1:56379)")
    return url, url


@contextmanager
def shared_database(tmp_path: Path) -> Iterator[str]:
    """Yield a DATABASE_URL naming the database this process uses now, reachable from other processes."""
    conn = connections["default"]
    if conn.vendor == "postgresql":
        s = conn.settings_dict
        auth = quote(s["USER"] or "", safe="") + (":" + quote(s["PASSWORD"], safe="") if s["PASSWORD"] else "")
        yield f"postgres://{auth}@{s['HOST'] or 'localhost'}:{s['PORT'] or 5432}/{s['NAME']}"
        return
    conn.ensure_connection()
    path = tmp_path / "shared-test-db.sqlite3"
    target = sqlite3.connect(path)
    conn.connection.backup(target)  # the migrated, empty test database
    target.close()
    saved_raw, saved_name = conn.connection, conn.settings_dict["NAME"]
    conn.connection = None
    conn.settings_dict["NAME"] = str(path)
    try:
        conn.ensure_connection()
        yield f"sqlite:///{path}"
    finally:
        conn.close()
        conn.settings_dict["NAME"] = saved_name
        conn.connection = saved_raw


@contextmanager
def producer_broker(urls: Urls) -> Iterator[None]:
    """Make this process's Celery app (what `run_enqueue` uses) send to `urls` for a while."""
    from config.celery import app

    def drop_pools() -> None:
        # What Celery itself does after a fork (Celery._after_fork): the next send builds a
        # connection and a producer pool from the current conf. The pools are not closed:
        # kombu shares them process-wide between apps that use the same broker URL.
        app._pool = None
        app.amqp._producer_pool = None

    old = (app.conf.broker_url, app.conf.result_backend)
    drop_pools()
    app.conf.broker_url, app.conf.result_backend = urls
    try:
        yield
    finally:
        drop_pools()
        app.conf.broker_url, app.conf.result_backend = old


def start_worker(urls: Urls, *, database_url: str, artifacts: Path, log_path: Path,
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    broker, backend = urls
    env = {**os.environ, "CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": backend, "DEBUG": "1",
           "DATABASE_URL": database_url, "ARTIFACTS_ROOT": str(artifacts), "TRAINING_HEARTBEAT_S": "1",
           "TRAINING_FLUSH_S": "0.2", "TOKENIZERS_PARALLELISM": "false", **(extra_env or {})}
    log = open(log_path, "wb")  # noqa: SIM115 - owned by the child process
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "-Q", "celery,gpu",
         "--without-gossip", "--without-mingle", "--loglevel=INFO", "-n", f"test-{os.getpid()}@%h"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def wait_for(check: Callable[[], object], *, timeout: float, interval: float = 0.2,
             describe: Callable[[], str] = lambda: "") -> object:
    """Poll `check` until it returns something truthy; fail with `describe()` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s. {describe()}")
        time.sleep(interval)


def log_tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no worker log)"
