"""The training task in-process: claim, train a tiny model, batch metrics, cancel, failures, reaping.

The real worker process, the Redis broker, kill -9 and the accelerate
subprocess are in test_worker_e2e.py.
"""
from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.factories import UserFactory
from tests.training.runs_helpers import tiny_config, tiny_model_dir, write_pairs
from training.callbacks import RunHooks
from training.config import RewardConfig
from training.models import MetricPoint, TrainingRun
from training.registry import KINDS, Kind
from training.run_job import DbHooks, accelerate_command, execute_run, num_processes
from training.services import run_cancel
from training.services_runs import (
    run_fail_stale,
    run_finish,
    run_launch,
    run_record_progress,
    run_start,
    run_validate_config,
)

pytestmark = pytest.mark.django_db

Status = TrainingRun.Status


@pytest.fixture(autouse=True)
def run_settings(settings, tmp_path: Path) -> None:
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # The heartbeat thread would open its own connection to the in-memory test
    # database, which cannot see this test's uncommitted rows; it is exercised
    # by the worker tests. Here it must simply not fire.
    settings.TRAINING_HEARTBEAT_S = 3600


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def staff(db):
    return UserFactory(username="sam", is_staff=True)


def make_run(staff, tmp_path: Path, config: dict[str, Any], kind: str = "reward") -> TrainingRun:
    data = write_pairs(tmp_path / "pairs.jsonl", 24)
    return TrainingRun.objects.create(kind=kind, data_path=str(data), config=config, created_by=staff)


def test_task_goes_to_the_training_queue_and_is_never_retried(settings) -> None:
    from config.celery import app
    from training.tasks import run_training

    route = app.amqp.router.route({}, run_training.name, args=(1,), kwargs={})
    assert route["queue"].name == settings.TRAINING_QUEUE == "gpu"
    assert run_training.max_retries == 0 and not run_training.acks_late
    assert not getattr(run_training, "autoretry_for", ())


def test_a_tiny_reward_run_succeeds_with_batched_metrics_and_loadable_artifacts(staff, tmp_path, model_dir,
                                                                               settings) -> None:
    settings.TRAINING_FLUSH_S = 1000  # only the forced flushes: last step and the final evaluation
    run = make_run(staff, tmp_path, tiny_config(model_dir, max_steps=5, log_every=1))
    with CaptureQueriesContext(connection) as queries:
        assert execute_run(run.pk, task_id="t-1") == Status.SUCCEEDED
    run.refresh_from_db()
    assert (run.status, run.step, run.total_steps, run.progress) == (Status.SUCCEEDED, 5, 5, 1.0)
    assert run.celery_task_id == "t-1" and run.worker_host and run.started_at <= run.finished_at
    assert run.error == "" and run.artifacts_dir == f"runs/{run.pk}"
    losses = list(MetricPoint.objects.filter(run=run, name="train/loss").order_by("step").values_list("step", flat=True))
    assert losses == [1, 2, 3, 4, 5]
    assert MetricPoint.objects.filter(run=run, name="eval/accuracy", step=5).count() == 1
    n_points = MetricPoint.objects.filter(run=run).count()
    inserts = [q for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "training_metricpoint"')]
    assert n_points > 30 and len(inserts) <= 2, (n_points, len(inserts))  # batches, not a query per metric
    assert 0.0 <= run.summary["eval"]["accuracy"] <= 1.0
    assert run.summary["report"]["lengths_unit"] == "completion tokens"
    assert run.summary["result"] == "completed" and run.summary["step"] == 5

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = Path(settings.ARTIFACTS_ROOT) / run.artifacts_dir
    model = AutoModelForSequenceClassification.from_pretrained(out, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert model.config.num_labels == 1
    assert model(**tokenizer(["a question", "an answer"], return_tensors="pt", padding=True)).logits.shape == (2, 1)


def test_cancel_during_a_step_stops_the_real_loop_after_that_step(staff, tmp_path, model_dir) -> None:
    run = make_run(staff, tmp_path, tiny_config(model_dir, max_steps=500))
    real = KINDS["reward"]

    def runner(config: RewardConfig, *, hooks: RunHooks, **kwargs: Any) -> Any:
        def progress(step: int, total: int) -> None:
            hooks.on_progress(step, total)
            if step == 3:  # a person presses Cancel while step 3 is being logged
                run_cancel(run=TrainingRun.objects.get(pk=run.pk), user=staff)

        watched = RunHooks(on_metrics=hooks.on_metrics, on_progress=progress, should_stop=hooks.should_stop)
        return real.runner()(config, hooks=watched, **kwargs)

    kinds = {"reward": Kind(RewardConfig, lambda: runner, real.help)}
    assert execute_run(run.pk, kinds=kinds) == Status.CANCELLED
    run.refresh_from_db()
    assert run.status == Status.CANCELLED and run.cancel_requested and run.finished_at
    assert run.step == 3 and run.total_steps == 500
    assert max(MetricPoint.objects.filter(run=run, name="train/loss").values_list("step", flat=True)) == 3
    assert run.summary["checkpoint"] == "checkpoints/step-0000003.pt"
    assert (run_root(run) / run.summary["checkpoint"]).is_file()  # resumable from where it stopped


def run_root(run: TrainingRun) -> Path:
    from django.conf import settings

    return Path(settings.ARTIFACTS_ROOT) / run.artifacts_dir


def test_bad_hyperparameters_fail_the_run_naming_every_field(staff, tmp_path, model_dir) -> None:
    run = make_run(staff, tmp_path, tiny_config(model_dir, lr=-1, learning_rate=0.1))
    assert execute_run(run.pk) == Status.FAILED
    run.refresh_from_db()
    first_line = run.error.splitlines()[0]
    assert first_line.startswith("ConfigError: invalid RewardConfig")
    assert "lr: must be > 0.0" in first_line and "learning_rate: unknown field" in first_line
    assert "Traceback" in run.error and run.finished_at is not None


def test_an_unregistered_kind_or_missing_data_fails_with_the_reason(staff, tmp_path, model_dir) -> None:
    run = make_run(staff, tmp_path, tiny_config(model_dir))
    assert execute_run(run.pk, kinds={}) == Status.FAILED
    run.refresh_from_db()
    assert "no trainer is registered for kind 'reward'" in run.error.splitlines()[0]

    gone = TrainingRun.objects.create(kind="reward", data_path=str(tmp_path / "nope.jsonl"),
                                      config=tiny_config(model_dir), created_by=staff)
    assert execute_run(gone.pk) == Status.FAILED
    gone.refresh_from_db()
    assert "nope.jsonl" in gone.error.splitlines()[0]


def test_a_run_cancelled_while_queued_or_already_claimed_is_not_trained(staff, tmp_path, model_dir) -> None:
    run = make_run(staff, tmp_path, tiny_config(model_dir))
    run_cancel(run=run, user=staff)
    assert execute_run(run.pk) == Status.CANCELLED
    run.refresh_from_db()
    assert run.started_at is None and run.artifacts_dir == ""

    again = make_run(staff, tmp_path, tiny_config(model_dir))
    assert run_start(run_id=again.pk, worker_host="w1:1") is not None
    # A redelivered message for a run another worker holds does nothing.
    assert execute_run(again.pk) == Status.RUNNING
    again.refresh_from_db()
    assert again.worker_host == "w1:1" and again.step == 0
    assert execute_run(999_999) == "missing"


def test_run_finish_does_not_overwrite_a_reaped_run(staff, tmp_path, model_dir) -> None:
    run = make_run(staff, tmp_path, tiny_config(model_dir))
    run_start(run_id=run.pk, worker_host="w:1")
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=600))
    assert run_fail_stale(older_than_s=60) == [run.pk]
    assert run_finish(run_id=run.pk, status=Status.SUCCEEDED, summary={"x": float("nan")}) is None
    run.refresh_from_db()
    assert run.status == Status.FAILED and run.summary == {}


def test_stale_detection_fails_only_runs_without_a_recent_heartbeat(staff, tmp_path, model_dir) -> None:
    now = timezone.now()
    lost = make_run(staff, tmp_path, {})
    alive = make_run(staff, tmp_path, {})
    queued = make_run(staff, tmp_path, {})
    for r in (lost, alive):
        run_start(run_id=r.pk, worker_host=f"gpu-node:{r.pk}")
    TrainingRun.objects.filter(pk=lost.pk).update(heartbeat_at=now - timedelta(seconds=30))
    TrainingRun.objects.filter(pk=queued.pk).update(created_at=now - timedelta(days=3))
    assert run_fail_stale(older_than_s=10) == [lost.pk]
    lost.refresh_from_db()
    alive.refresh_from_db()
    queued.refresh_from_db()
    assert lost.status == Status.FAILED and lost.finished_at is not None
    assert lost.error.startswith("worker lost (no heartbeat since ")
    assert f"gpu-node:{lost.pk}" in lost.error
    assert (alive.status, queued.status) == (Status.RUNNING, Status.QUEUED)

    # The command does the same, with the limit from settings or --older-than.
    TrainingRun.objects.filter(pk=alive.pk).update(heartbeat_at=now - timedelta(seconds=5))
    out = io.StringIO()
    call_command("runs_reap", "--older-than", "2", stdout=out)
    assert f"failed 1 run(s) with no heartbeat for 2 s: {alive.pk}" in out.getvalue()


def test_worker_start_up_and_the_api_list_reap_lost_runs(staff, tmp_path, settings) -> None:
    from rest_framework.test import APIClient

    from training.tasks import reap_stale_runs_on_start

    settings.TRAINING_STALE_AFTER_S = 5
    first, second = make_run(staff, tmp_path, {}), make_run(staff, tmp_path, {})
    for r in (first, second):
        run_start(run_id=r.pk, worker_host="w:1")
    old = timezone.now() - timedelta(seconds=60)
    TrainingRun.objects.filter(pk=first.pk).update(heartbeat_at=old)
    reap_stale_runs_on_start(sender=None)
    assert TrainingRun.objects.get(pk=first.pk).status == Status.FAILED

    TrainingRun.objects.filter(pk=second.pk).update(heartbeat_at=old)
    client = APIClient()
    client.force_authenticate(staff)
    listed = {r["id"]: r for r in client.get("/api/v1/runs/").data["results"]}
    assert listed[second.pk]["status"] == Status.FAILED
    assert listed[second.pk]["error"].startswith("worker lost")


def test_db_hooks_write_batches_and_progress(staff, tmp_path) -> None:
    run = make_run(staff, tmp_path, {})
    run_start(run_id=run.pk, worker_host="w:1")
    hooks = DbHooks(run.pk, flush_every_s=1000)
    with CaptureQueriesContext(connection) as queries:
        for step in range(1, 4):
            hooks.on_metrics(step, {"train/loss": 1.0 / step, "train/accuracy": 0.5})
            hooks.on_progress(step, 10)
    assert queries.captured_queries == []  # nothing written between flushes
    assert not hooks.should_stop()
    hooks.flush()
    run.refresh_from_db()
    assert (run.step, run.total_steps, run.progress) == (3, 10, pytest.approx(0.3))
    assert MetricPoint.objects.filter(run=run).count() == 6
    hooks.on_progress(10, 10)  # the last step is always written at once
    assert TrainingRun.objects.get(pk=run.pk).progress == 1.0
    TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True)
    assert hooks.should_stop()
    # Points that arrive after a run was reaped are still kept (post-mortem).
    run_record_progress(run_id=run.pk, step=11, total=10, points=[(11, "train/loss", 0.1)])
    assert MetricPoint.objects.filter(run=run, step=11).exists()


def test_launch_validates_with_the_config_dataclass_and_stores_defaults(project, mia, tmp_path) -> None:
    from tests.training.runs_helpers import export_of

    export = export_of(project, mia, n=6)
    run = run_launch(user=mia, kind="reward", project=project, export=export, config={"lr": "0.001", "num_gpus": 2})
    assert run.config["lr"] == 0.001 and run.config["batch_size"] == RewardConfig().batch_size
    assert run.config["num_gpus"] == 2 and num_processes(run) == 2
    with pytest.raises(ValidationError) as err:
        run_launch(user=mia, kind="reward", project=project, export=export,
                   config={"batch_size": 0, "warmup_ratio": 2, "nope": 1})
    assert set(err.value.message_dict) == {"batch_size", "warmup_ratio", "nope"}
    with pytest.raises(ValidationError) as err:
        run_validate_config(kind="sft", config={})
    assert "kind" in err.value.message_dict
    for bad in (0, 1.5, "two", True):
        with pytest.raises(ValidationError):
            run_validate_config(kind="reward", config={"num_gpus": bad})
    assert TrainingRun.objects.count() == 1


def test_multi_gpu_runs_go_through_accelerate_launch(settings, staff, tmp_path) -> None:
    cmd = accelerate_command(42, 4)
    assert Path(cmd[0]).name == "accelerate" or cmd[1:3] == ["-m", "accelerate.commands.accelerate_cli"]
    tail = cmd[cmd.index("launch"):]
    assert tail == ["launch", "--num_processes", "4", "--num_machines", "1", "--mixed_precision", "no",
                    "--dynamo_backend", "no", "--multi_gpu", "--main_process_port", "0", "-m", "training.launch", "42"]
    assert "--multi_gpu" not in accelerate_command(1, 1) and accelerate_command(1, 1, cpu=True)[-4] == "--cpu"
    # accelerate refuses --cpu with --multi_gpu (its multi-process --cpu needs MPI): a CPU run of N > 1
    # ranks takes the --multi_gpu (torch elastic) path and trains over gloo.
    assert "--cpu" not in accelerate_command(1, 2, cpu=True) and "--multi_gpu" in accelerate_command(1, 2, cpu=True)
    run = make_run(staff, tmp_path, {"num_gpus": 8})
    assert num_processes(run) == 8
    plain = make_run(staff, tmp_path, {})
    assert num_processes(plain) == 1
    settings.TRAINING_NUM_GPUS = 2  # a node-wide default for runs that do not say
    assert num_processes(plain) == 2 and num_processes(run) == 8


def test_training_dispatch_goes_through_the_registry_shared_with_the_command() -> None:
    from training.management.commands import train

    assert train.KINDS is KINDS and train.resolve_data.__module__ == "training.registry"
    assert KINDS["reward"].config is RewardConfig
