"""Training runs end to end with a REAL Celery worker process.

The worker is `python -m celery -A config worker --pool=solo -Q celery,gpu`
on the embedded broker (kombu's SQLAlchemy transport on a SQLite file) and,
when TEST_REDIS_URL is set (CI), on Redis; it shares this test's database
(see worker_helpers.shared_database) and ARTIFACTS_ROOT. Runs are created
through the REST API like a client would, and train a tiny random BERT.
"""
from __future__ import annotations

import json
import os
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from annotate.models import Membership
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.training.runs_helpers import export_of, tiny_config, tiny_model_dir
from tests.training.worker_helpers import (
    Urls,
    embedded_urls,
    log_tail,
    producer_broker,
    redis_urls,
    shared_database,
    start_worker,
    stop_worker,
    wait_for,
)
from training.models import MetricPoint, TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)
Status = TrainingRun.Status
FINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def world(tmp_path: Path, settings) -> Any:
    """The shared database, an ML user with a project and an export, and the artifacts folder."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    artifacts = tmp_path / "artifacts"
    settings.ARTIFACTS_ROOT = artifacts
    with shared_database(tmp_path) as database_url:
        project = ProjectFactory(slug="demo", name="Demo")
        mia = UserFactory(username="mia")
        MembershipFactory(project=project, user=mia, role=Membership.Role.ML)
        export = export_of(project, mia, n=24)
        api = APIClient()
        api.force_authenticate(mia)

        class World:
            pass

        w = World()
        w.database_url, w.artifacts, w.project, w.mia, w.export, w.api = (
            database_url, artifacts, project, mia, export, api)
        yield w


def launch(world: Any, config: dict[str, Any]) -> int:
    response = world.api.post("/api/v1/runs/", {"kind": "reward", "export": world.export.pk, "config": config,
                                                "name": "e2e"}, format="json")
    assert response.status_code == 201, response.data
    return response.data["id"]


def api_run(world: Any, run_id: int) -> dict[str, Any]:
    return world.api.get(f"/api/v1/runs/{run_id}/").data


@pytest.mark.parametrize("make_urls", [embedded_urls, pytest.param(redis_urls, marks=pytest.mark.redis)],
                         ids=["embedded-sqla", "redis"])
def test_a_run_created_through_the_api_trains_on_a_real_worker(make_urls, world, model_dir, tmp_path) -> None:
    urls: Urls = make_urls(tmp_path)
    log = tmp_path / "worker.log"
    worker = start_worker(urls, database_url=world.database_url, artifacts=world.artifacts, log_path=log)
    started = time.monotonic()
    try:
        with producer_broker(urls):
            run_id = launch(world, tiny_config(model_dir, max_steps=8))
        data = wait_for(lambda: (d := api_run(world, run_id))["status"] in FINAL and d, timeout=120,
                        describe=lambda: f"run: {api_run(world, run_id)}\nworker log:\n{log_tail(log)}")
    finally:
        stop_worker(worker)
    elapsed = time.monotonic() - started
    assert data["status"] == Status.SUCCEEDED, f"{data['error']}\n{log_tail(log)}"
    assert (data["step"], data["total_steps"], data["progress"]) == (8, 8, 1.0)
    assert data["worker_host"] and data["started_at"] and data["finished_at"] and data["error"] == ""
    run = TrainingRun.objects.get(pk=run_id)
    assert run.celery_task_id and run.config["max_steps"] == 8
    series = world.api.get(f"/api/v1/runs/{run_id}/metrics/").data["series"]
    assert [s for s, _ in series["train/loss"]] == list(range(1, 9))
    assert len(series["eval/accuracy"]) == 1 and 0.0 <= series["eval/accuracy"][0][1] <= 1.0
    assert data["summary"]["eval"]["accuracy"] == series["eval/accuracy"][0][1]
    assert data["summary"]["report"]["n_pairs"] == world.export.n_eval

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = world.artifacts / data["artifacts_dir"]
    model = AutoModelForSequenceClassification.from_pretrained(out, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    scores = model(**tokenizer(["Prompt 1?", "Prompt 2?"], ["Yes.", "No."], return_tensors="pt", padding=True))
    assert scores.logits.shape == (2, 1)
    assert json.loads((out / "run_config.json").read_text())["data"]["export_id"] == world.export.pk
    assert f"Task training.tasks.run_training[{run.celery_task_id}] received" in log_tail(log, 100_000)
    print(f"worker start to recorded success: {elapsed:.1f} s")  # ~30-40 s on an idle 2-core machine


def test_cancel_stops_a_running_run_within_one_step(world, model_dir, tmp_path) -> None:
    urls = embedded_urls(tmp_path)
    log = tmp_path / "worker.log"
    worker = start_worker(urls, database_url=world.database_url, artifacts=world.artifacts, log_path=log)
    try:
        with producer_broker(urls):
            run_id = launch(world, tiny_config(model_dir, max_steps=5000))
        wait_for(lambda: api_run(world, run_id)["step"] >= 3, timeout=90,
                 describe=lambda: f"run: {api_run(world, run_id)}\nworker log:\n{log_tail(log)}")
        response = world.api.post(f"/api/v1/runs/{run_id}/cancel/")
        cancelled_at = time.time()  # the flag is committed by now
        assert response.status_code == 200 and response.data["cancel_requested"] is True
        data = wait_for(lambda: (d := api_run(world, run_id))["status"] in FINAL and d, timeout=60,
                        describe=lambda: log_tail(log))
        took = time.time() - cancelled_at
    finally:
        stop_worker(worker)
    assert data["status"] == Status.CANCELLED, data["error"]
    assert data["step"] < 5000 and data["finished_at"]
    out = world.artifacts / data["artifacts_dir"]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    after = [r["step"] for r in lines if "train/loss" in r and r["time"] > cancelled_at]
    # At most the step that was running when the flag was raised finishes; then the loop stops.
    assert len(after) <= 1, (after, took)
    last_step = lines[-1]["step"]
    assert data["step"] == last_step
    assert (out / data["summary"]["checkpoint"]).is_file() and data["summary"]["checkpoint"].endswith(
        f"step-{last_step:07d}.pt")
    assert max(MetricPoint.objects.filter(run_id=run_id).values_list("step", flat=True)) == last_step
    assert took < 15


def test_a_killed_worker_leaves_a_failed_run_with_the_reason(world, model_dir, tmp_path, settings) -> None:
    settings.TRAINING_STALE_AFTER_S = 3  # the API list reaps runs without a heartbeat for 3 s
    urls = embedded_urls(tmp_path)
    log = tmp_path / "worker.log"
    worker = start_worker(urls, database_url=world.database_url, artifacts=world.artifacts, log_path=log)
    try:
        with producer_broker(urls):
            run_id = launch(world, tiny_config(model_dir, max_steps=100_000))
        wait_for(lambda: api_run(world, run_id)["step"] >= 2, timeout=90,
                 describe=lambda: f"run: {api_run(world, run_id)}\nworker log:\n{log_tail(log)}")
        # Alive and training: the heartbeat keeps the reaper away for longer than the limit.
        time.sleep(4)
        assert api_run(world, run_id)["status"] == Status.RUNNING
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        killed_at = time.monotonic()

        def failed() -> dict[str, Any] | None:
            runs = world.api.get("/api/v1/runs/").data["results"]
            row = next(r for r in runs if r["id"] == run_id)
            return row if row["status"] != Status.RUNNING else None

        data = wait_for(failed, timeout=30, interval=0.5)
        bound = time.monotonic() - killed_at
    finally:
        stop_worker(worker)
    assert data["status"] == Status.FAILED
    assert data["error"].startswith("worker lost (no heartbeat since ")
    assert "limit 3 s" in data["error"] and data["worker_host"] in data["error"]
    assert bound < 3 + 1 + 2, f"took {bound:.1f} s to notice"  # limit + heartbeat interval + polling slack


def test_the_accelerate_subprocess_path_trains_and_records(world, model_dir, tmp_path) -> None:
    """TRAINING_LAUNCH=accelerate: the task runs `accelerate launch ... -m training.launch <id>` (one CPU process)."""
    urls = embedded_urls(tmp_path)
    log = tmp_path / "worker.log"
    worker = start_worker(urls, database_url=world.database_url, artifacts=world.artifacts, log_path=log,
                          extra_env={"TRAINING_LAUNCH": "accelerate"})
    try:
        with producer_broker(urls):
            run_id = launch(world, tiny_config(model_dir, max_steps=4))
        data = wait_for(lambda: (d := api_run(world, run_id))["status"] in FINAL and d, timeout=120,
                        describe=lambda: log_tail(log))
    finally:
        stop_worker(worker)
    out = world.artifacts / data["artifacts_dir"]
    launch_log = (out / "launch.log").read_text(errors="replace") if (out / "launch.log").exists() else ""
    assert data["status"] == Status.SUCCEEDED, f"{data['error']}\n{launch_log[-3000:]}\n{log_tail(log)}"
    assert "accelerate" in log_tail(log, 100_000) and "-m training.launch" in log_tail(log, 100_000)
    assert (data["step"], data["progress"]) == (4, 1.0) and (out / "model.safetensors").is_file()
    assert MetricPoint.objects.filter(run_id=run_id, name="train/loss").count() == 4


def test_the_heartbeat_thread_beats_and_reaps_other_lost_runs(world, tmp_path) -> None:
    from training.run_job import Heartbeat
    from training.services_runs import run_start

    mine = TrainingRun.objects.create(project=world.project, kind="reward", export=world.export,
                                      created_by=world.mia)
    lost = TrainingRun.objects.create(project=world.project, kind="reward", export=world.export,
                                      created_by=world.mia)
    for r in (mine, lost):
        run_start(run_id=r.pk, worker_host="w:1")
    long_ago = timezone.now() - timedelta(seconds=120)
    TrainingRun.objects.filter(pk__in=[mine.pk, lost.pk]).update(heartbeat_at=long_ago)
    beat = Heartbeat(mine.pk, interval_s=0.2, stale_after=60)
    beat.start()
    try:
        wait_for(lambda: TrainingRun.objects.get(pk=lost.pk).status == Status.FAILED, timeout=10)
    finally:
        beat.stop()
    mine.refresh_from_db()
    assert mine.status == Status.RUNNING and mine.heartbeat_at > long_ago + timedelta(seconds=100)
    assert not beat.is_alive()
