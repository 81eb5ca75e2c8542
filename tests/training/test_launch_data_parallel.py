"""A run with `num_gpus: 2` through the real launcher, data parallel on two CPU ranks.

The Celery task's body (`execute_run`, in this process) starts `accelerate
launch --multi_gpu --num_processes 2 --main_process_port 0 -m training.launch
<id>`; both ranks (gloo) read this test's database, which is shared through a
file (`worker_helpers.shared_database`). The same config trained in this one
process gives the same losses: the launched run is data parallel, not two
replicas.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.factories import UserFactory
from tests.training.runs_helpers import tiny_config, tiny_model_dir, write_pairs
from tests.training.worker_helpers import shared_database
from training.callbacks import read_metrics
from training.models import MetricPoint, TrainingRun
from training.registry import KINDS
from training.run_job import execute_run

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_two_gpu_run_launches_two_data_parallel_ranks_and_records_once(tmp_path: Path, settings,
                                                                         monkeypatch) -> None:
    artifacts = tmp_path / "artifacts"
    settings.ARTIFACTS_ROOT = artifacts
    config = tiny_config(tiny_model_dir(tmp_path / "tiny-bert"), max_steps=4, batch_size=6,
                         center_coef=0.01)
    data = write_pairs(tmp_path / "pairs.jsonl", 24)
    with shared_database(tmp_path) as database_url:
        env = {"DATABASE_URL": database_url, "ARTIFACTS_ROOT": str(artifacts), "DEBUG": "1",
               "TRAINING_FLUSH_S": "0.2", "TOKENIZERS_PARALLELISM": "false"}
        for name, value in env.items():
            monkeypatch.setenv(name, value)  # what the launched ranks read
        user = UserFactory(username="sam", is_staff=True)
        run = TrainingRun.objects.create(kind="reward", data_path=str(data), created_by=user,
                                         config={**config, "num_gpus": 2})
        status = execute_run(run.pk, task_id="t-dp")
        run.refresh_from_db()
        out = artifacts / run.artifacts_dir
        log_path = out / "launch.log"
        log = log_path.read_text(errors="replace") if log_path.exists() else ""
        assert status == TrainingRun.Status.SUCCEEDED, f"{run.error}\n{log[-4000:]}"
        assert (run.step, run.total_steps, run.progress) == (4, 4, 1.0)
        points = MetricPoint.objects.filter(run=run, name="train/loss").order_by("step")
        launched = dict(points.values_list("step", "value"))
        assert list(points.values_list("step", flat=True)) == [1, 2, 3, 4]  # once: rank 0 wrote
        assert MetricPoint.objects.filter(run=run, name="eval/accuracy").count() == 1
    assert run.summary["result"] == "completed" and run.summary["eval"]["n_pairs"] > 0
    assert json.loads((out / "run_config.json").read_text())["world_size"] == 2
    assert not [p for p in out.rglob("*") if ".rank" in p.name]  # no replica folders
    assert (out / "model.safetensors").is_file()
    # The same config in one process: the same global batches, so the same losses.
    kind = KINDS["reward"]
    train, held, info = kind.resolve(str(data))
    kind.runner()(kind.config.from_dict(config), train_pairs=train, eval_pairs=held,
                  out_dir=tmp_path / "one", hooks=None, resume_from=None, data_info=info)
    alone = {r["step"]: r["train/loss"] for r in read_metrics(tmp_path / "one" / "metrics.jsonl")
             if "train/loss" in r}
    assert alone.keys() == launched.keys()
    for step, loss in alone.items():
        assert launched[step] == pytest.approx(loss, rel=1e-5), step
