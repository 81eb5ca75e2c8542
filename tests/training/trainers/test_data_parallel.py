"""Data parallelism in the shared loop: REAL 2-process runs (torch elastic, gloo) on tiny models.

Each launched test starts `python -m torch.distributed.run --nproc_per_node 2
-m tests.training.trainers.ddp_worker SPEC` (the launcher `accelerate launch
--multi_gpu` uses) and compares what the two ranks did with the same trainer
run in this one process on the same global batches.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from training.callbacks import RunHooks, read_metrics
from training.config import RewardConfig
from training.trainers.base import Trainer
from training.trainers.distributed import DataParallel

from .ddp_worker import build

REPO = Path(__file__).resolve().parents[3]
TOL = 1e-5  # float error of summing two half-batch gradients vs one full batch, after AdamW steps
# Attention key biases have a gradient of 0 in exact arithmetic (softmax ignores a shift shared by
# all keys, so they do not change any output either); AdamW turns the float noise there (~1e-9)
# into updates of +-lr, so they are not compared.
ZERO_GRADIENT = ("attention.self.key.bias",)
# Per-rank padding differs from the padding of the whole micro-batch; timing is timing.
NOT_GLOBAL = ("train/pad_fraction", "train/samples_per_s", "time")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    tmp_path: Path, kind: str, fields: dict[str, Any], **spec: Any
) -> dict[int, dict[str, Any]]:
    """Train `kind` in 2 processes into tmp_path/"two"; returns each rank's report."""
    out, results = tmp_path / "two", tmp_path / "results"
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({"kind": kind, "out": str(out), "results": str(results),
                                     "fields": fields, "stop_rank": 1, **spec}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "tests.training.trainers.ddp_worker", str(spec_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    # Own process group: on a timeout the ranks go too, not only torchrun (no orphans).
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError("2-rank run over 180 s:\n" + stdout[-3000:] + stderr[-5000:]) from None
    assert proc.returncode == 0, stdout[-3000:] + stderr[-5000:]
    return {r: json.loads((results / f"rank-{r}.json").read_text()) for r in (0, 1)}


def rank_weights(tmp_path: Path, rank: int) -> dict[str, torch.Tensor]:
    return torch.load(tmp_path / "results" / f"rank-{rank}.pt", weights_only=True)


def weights_of(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in trainer.model.state_dict().items()}


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def assert_same_weights(two: dict[str, torch.Tensor], one: dict[str, torch.Tensor],
                        skip: tuple[str, ...] = ()) -> int:
    assert two.keys() == one.keys()
    compared = 0
    for name, value in one.items():
        if not name.endswith(skip):
            torch.testing.assert_close(two[name], value, rtol=0, atol=TOL, msg=name)
            compared += value.numel()
    return compared


def assert_same_metrics(two: Path, one: Path) -> None:
    """Every line rank 0 logged equals the one-process line: the all-reduced global figures."""
    lines_two, lines_one = read_metrics(two / "metrics.jsonl"), read_metrics(one / "metrics.jsonl")
    assert [r["step"] for r in lines_two] == [r["step"] for r in lines_one]
    for a, b in zip(lines_two, lines_one, strict=True):
        assert a.keys() == b.keys()
        for name in a.keys() - set(NOT_GLOBAL):
            if a[name] is None or b[name] is None:
                assert a[name] == b[name], name
            else:
                assert a[name] == pytest.approx(b[name], rel=1e-4, abs=TOL), (a["step"], name)


REWARD = {"batch_size": 6, "grad_accum": 2, "max_steps": 4, "eval_every": 2, "save_every": 2,
          "length_bucketing": True}


def test_two_ranks_take_the_steps_one_process_takes_on_the_same_batches(tmp_path: Path) -> None:
    ranks = launch(tmp_path, "reward", REWARD)
    one = build("reward", tmp_path / "one", REWARD)
    one_result = one.fit()
    # The data is sharded, not replicated: each micro-batch of the one-process plan is split
    # between the ranks, rank r taking the examples at positions r, r + 2, ... (8 = 4 steps x 2).
    assert len(one.seen) == len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 8
    for batch, r0, r1 in zip(one.seen, ranks[0]["seen"], ranks[1]["seen"], strict=True):
        assert (r0, r1) == (batch[0::2], batch[1::2])
    # The gradients are averaged: both ranks end with the same weights, those of one process.
    two = load_file(tmp_path / "two" / "model.safetensors")
    r0, r1 = rank_weights(tmp_path, 0), rank_weights(tmp_path, 1)
    assert all(torch.equal(r1[k], v) for k, v in r0.items())
    assert assert_same_weights(two, weights_of(one), ZERO_GRADIENT) > 10_000
    # ...and the tolerance tells batches apart: 3 + 3 pairs per step (one rank's share) is off.
    half = build("reward", tmp_path / "half", {**REWARD, "batch_size": 3})
    half.fit()
    gaps = [float((two[k] - v).abs().max()) for k, v in half.model.state_dict().items()
            if not k.endswith(ZERO_GRADIENT)]
    assert max(gaps) > 100 * TOL
    # One writer: exactly the files one process writes (model, reports, metrics, checkpoints).
    assert files(tmp_path / "two") == files(tmp_path / "one")
    assert "checkpoints/step-0000004.pt" in files(tmp_path / "two")  # the newest is kept
    # Rank 0 logged the global figures (loss, accuracy, grad norm, lr, evaluations at 2 and 4).
    assert_same_metrics(tmp_path / "two", tmp_path / "one")
    shared = ranks[0]["train"].keys() - {"train/samples_per_s"}  # all-reduced: equal on every rank
    assert shared and all(ranks[0]["train"][k] == ranks[1]["train"][k] for k in shared)
    assert ranks[0]["eval"] == pytest.approx(one_result.eval_metrics, rel=1e-4, abs=TOL)
    assert ranks[1]["eval"] == {} and ranks[1]["checkpoint"] == ""  # no evaluation, no checkpoint
    # Checkpoints carry each rank's RNG stream (rank r is seeded with seed + r).
    payload = torch.load(tmp_path / "two" / "checkpoints" / "step-0000004.pt", weights_only=True)
    by_rank = payload["rng_by_rank"]
    assert len(by_rank) == 2 and not torch.equal(by_rank[0]["torch"], by_rank[1]["torch"])
    assert torch.equal(payload["rng"]["torch"], by_rank[0]["torch"])


def test_a_stop_asked_by_one_rank_stops_both_ranks_and_the_run_resumes(tmp_path: Path) -> None:
    fields = {"batch_size": 6, "max_steps": 6, "length_bucketing": True}
    ranks = launch(tmp_path, "reward", fields, stop_at=3, resume=True)  # rank 1 asks at step 3
    for rank, report in ranks.items():
        first = report["before_resume"]
        assert (first["status"], first["step"]) == ("cancelled", 3), rank
        assert (report["status"], report["step"]) == ("completed", 6), rank
    assert ranks[0]["before_resume"]["checkpoint"].endswith("checkpoints/step-0000003.pt")
    assert ranks[1]["before_resume"]["checkpoint"] == ""
    one = build("reward", tmp_path / "one", fields)  # the same run, never interrupted
    one.fit()
    two = load_file(tmp_path / "two" / "model.safetensors")
    assert_same_weights(two, weights_of(one), ZERO_GRADIENT)
    assert_same_metrics(tmp_path / "two", tmp_path / "one")  # steps 1..6 once each, as one process
    # The plan does not depend on the number of processes: the 2-rank checkpoint of step 3 also
    # resumes in one process, to the same weights.
    shutil.copytree(tmp_path / "two" / "checkpoints", tmp_path / "alone" / "checkpoints")
    alone = build("reward", tmp_path / "alone", fields)
    assert alone.fit(resume_from=tmp_path / "alone").step == 6
    assert_same_weights(weights_of(alone), weights_of(one), ZERO_GRADIENT)


def test_dpo_trains_data_parallel_like_one_process(tmp_path: Path) -> None:
    fields = {"max_steps": 3, "probe_prompts": 2}  # batch 4: 2 pairs per rank per step
    ranks = launch(tmp_path, "dpo", fields)
    assert [ranks[r]["status"] for r in (0, 1)] == ["completed", "completed"]
    one = build("dpo", tmp_path / "one", fields)
    one.fit()
    two = load_file(tmp_path / "two" / "model.safetensors")
    assert assert_same_weights(two, weights_of(one)) > 10_000
    assert_same_metrics(tmp_path / "two", tmp_path / "one")
    assert files(tmp_path / "two") == files(tmp_path / "one")  # incl. the reference caches, once


def test_ppo_ranks_share_each_rollout_and_train_in_step(tmp_path: Path) -> None:
    fields = {"steps": 2}  # 2 rollouts of 8 episodes, 4 optimizer steps each
    ranks = launch(tmp_path, "ppo", fields)
    assert [(ranks[r]["status"], ranks[r]["step"]) for r in (0, 1)] == [("completed", 8)] * 2
    r0, r1 = rank_weights(tmp_path, 0), rank_weights(tmp_path, 1)
    assert all(torch.equal(r1[k], v) for k, v in r0.items())  # identical episodes, averaged grads
    # The rollout figures are the gathered rollout's: the same on both ranks.
    rollout = [k for k in ranks[0]["train"] if "completions/" in k or "objective/" in k]
    assert rollout and all(ranks[0]["train"][k] == ranks[1]["train"][k] for k in rollout)
    report = json.loads((tmp_path / "two" / "ppo_report.json").read_text())
    assert report["stats"]["episodes"] == 16  # 2 rollouts x 8 prompts, sampled half per rank
    assert report["stats"]["generated_tokens"] > 0
    steps = [r["step"] for r in read_metrics(tmp_path / "two" / "metrics.jsonl")]
    assert steps == [*range(1, 9), 8]  # each step once, then the final evaluation
    one = build("ppo", tmp_path / "one", fields)
    one.fit()
    assert files(tmp_path / "two") == files(tmp_path / "one")


def test_a_trainer_whose_forward_bypasses_ddp_fails_at_its_first_step(tmp_path: Path) -> None:
    ranks = launch(tmp_path, "bypass", {"batch_size": 6, "max_steps": 2})
    for report in ranks.values():
        assert "gradients differ across ranks" in report["error"]
        assert "self.train_model" in report["error"]
    assert not (tmp_path / "two" / "model.safetensors").exists()


class OneProcessOnly(Trainer):
    """A trainer that never opted in to data parallelism (no `data_parallel = True`)."""

    def num_train_examples(self) -> int:
        return 1

    def collate(self, indices: Any) -> dict[str, Any]:
        return {}

    def compute_loss(self, batch: dict[str, Any]) -> Any:
        raise AssertionError("never trained")


def test_a_trainer_that_has_not_opted_in_refuses_a_multi_process_launch(tmp_path: Path,
                                                                         monkeypatch) -> None:
    config = RewardConfig.from_dict({"device": "cpu"})
    assert OneProcessOnly(config, out_dir=tmp_path).dist == DataParallel()  # one process: fine
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(RuntimeError, match="OneProcessOnly does not support data parallelism"):
        OneProcessOnly(config, out_dir=tmp_path, hooks=RunHooks())


def test_shards_are_strided_and_an_empty_one_still_joins_the_step() -> None:
    ranks = [DataParallel(rank=r, world_size=3) for r in range(3)]
    assert [p.shard([7, 8, 9, 10]) for p in ranks] == [([7, 10], 2), ([8], 1), ([9], 1)]
    # A micro-batch shorter than the number of ranks: rank 2 runs example 7 with weight 0.
    assert [p.shard([7, 8]) for p in ranks] == [([7], 1), ([8], 1), ([7], 0)]
    assert [p.split("abcdefg") for p in ranks] == [list("adg"), list("be"), list("cf")]
    assert DataParallel().shard([1, 2, 3]) == ([1, 2, 3], 3) and not DataParallel().enabled
