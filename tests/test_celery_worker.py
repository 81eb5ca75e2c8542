"""A REAL Celery worker process consumes a task and returns its result.

Runs on the embedded broker (kombu's SQLAlchemy transport on a SQLite file)
and, when TEST_REDIS_URL is set (CI), on a real Redis broker. The producer is a
fresh Celery client per test, so the project's app keeps its own settings.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery import Celery

REPO = Path(__file__).resolve().parent.parent
Urls = tuple[str, str]


def _embedded(tmp_path: Path) -> Urls:
    return f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}", f"db+sqlite:///{tmp_path / 'results.sqlite'}"


def _redis(tmp_path: Path) -> Urls:
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("TEST_REDIS_URL must be set in CI (.ci/run starts Redis)")
        pytest.skip("TEST_REDIS_URL not set: no Redis server to test against")
    return url, url


def start_worker(urls: Urls, log_path: Path, queues: str = "celery") -> subprocess.Popen[bytes]:
    broker, backend = urls
    env = {**os.environ, "CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": backend, "DEBUG": "1"}
    log = open(log_path, "wb")  # noqa: SIM115 - owned by the child process
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "-Q", queues, "--loglevel=INFO"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


@pytest.fixture
def client_app() -> Iterator[Callable[[Urls], Celery]]:
    made: list[Celery] = []

    def make(urls: Urls) -> Celery:
        made.append(Celery("test-client", broker=urls[0], backend=urls[1]))
        return made[-1]

    yield make
    for app in made:
        app.close()


@pytest.mark.parametrize("make_urls", [_embedded, pytest.param(_redis, marks=pytest.mark.redis)],
                         ids=["embedded-sqla", "redis"])
def test_real_worker_returns_task_result(make_urls: Callable[[Path], Urls], client_app, tmp_path: Path) -> None:
    urls = make_urls(tmp_path)
    worker = start_worker(urls, tmp_path / "worker.log")
    try:
        result = client_app(urls).send_task("config.ping", args=[41])
        assert result.get(timeout=90) == 42
    finally:
        stop_worker(worker)
    assert "config.ping" in (tmp_path / "worker.log").read_text(errors="replace")


def test_task_queued_before_worker_starts_is_consumed(client_app, tmp_path: Path) -> None:
    urls = _embedded(tmp_path)
    result = client_app(urls).send_task("config.ping", args=[1])
    time.sleep(0.5)
    assert not result.ready()  # nobody is consuming yet: it waits on the broker
    worker = start_worker(urls, tmp_path / "worker.log")
    try:
        assert result.get(timeout=90) == 2
    finally:
        stop_worker(worker)
