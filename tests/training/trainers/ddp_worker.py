"""One rank of a data-parallel test run, and the builders the single-process references share.

    python -m torch.distributed.run --nproc_per_node 2 [...] \
        -m tests.training.trainers.ddp_worker SPEC

SPEC is a JSON file: ``{"kind": "reward" | "bypass" | "dpo" | "ppo", "out": run folder,
"fields": config fields, "results": folder, "stop_at": null or a step,
"stop_rank": the rank that asks to stop, "resume": bool}``. Each rank trains
with the shared loop (`Trainer.fit`), then writes into ``results`` (never
into the run folder, so the test sees what the TRAINER wrote there):
``rank-<r>.json`` (its RunResult, and for the reward kinds the example
indices of every training micro-batch it collated) and ``rank-<r>.pt`` (its
final weights); a rank whose trainer refused (a RuntimeError) writes the
error instead, and still exits 0: the refusal is that scenario's outcome.
With ``stop_at``, rank ``stop_rank`` alone asks to stop after that many
steps; with ``resume`` the same processes then resume the run from its
checkpoint to the end (the result files then describe the resumed fit).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from training.callbacks import RunHooks
from training.losses import bradley_terry_loss
from training.trainers.base import Trainer
from training.trainers.reward import EncodedPairs, RewardTrainer

from .tiny_policy import tiny_policy, tiny_policy_tokenizer, tiny_prompts
from .tiny_reward import synthetic_pairs, tiny_model, tiny_tokenizer

# center_coef > 0 gives the head's bias a real gradient: without it the Bradley-Terry loss only
# sees reward differences, so the bias gradient is float noise that AdamW turns into +-lr moves.
REWARD = {"lr": 1e-3, "warmup_ratio": 0.0, "max_length": 48, "eval_batch_size": 16,
          "max_grad_norm": 0.0, "device": "cpu", "dropout": 0.0, "center_coef": 0.01}
PPO = {"rollout_batch_size": 8, "batch_size": 4, "ppo_epochs": 2, "max_new_tokens": 6, "lr": 3e-3,
       "temperature": 1.0, "eval_prompts": 4, "schedule": "constant", "device": "cpu"}


class RecordingRewardTrainer(RewardTrainer):
    """The reward trainer, noting which examples each training micro-batch holds on this rank."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[list[int]] = []

    def collate(
        self, indices: Sequence[int], encoded: EncodedPairs | None = None
    ) -> dict[str, Tensor]:
        if encoded is None:  # training batches; evaluation passes its own encoded pairs
            self.seen.append(list(indices))
        return super().collate(indices, encoded)


class BypassingRewardTrainer(RecordingRewardTrainer):
    """A broken trainer: its forward skips `self.train_model`, so DDP never averages anything."""

    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        chosen, rejected = self.rewards(batch)  # self.model, not the DDP wrapper
        return bradley_terry_loss(chosen, rejected)


def build(kind: str, out: Path, fields: dict[str, Any], hooks: RunHooks | None = None) -> Trainer:
    """A trainer on tiny random models; the same call in every process builds the same one."""
    if kind in ("reward", "bypass"):
        from training.config import RewardConfig

        tokenizer = tiny_tokenizer()
        pairs = synthetic_pairs(32, seed=3)
        cls = RecordingRewardTrainer if kind == "reward" else BypassingRewardTrainer
        return cls(RewardConfig.from_dict({**REWARD, **fields}), train_pairs=pairs[:24],
                   eval_pairs=pairs[24:], out_dir=out, hooks=hooks,
                   model=tiny_model(tokenizer, init_range=0.2), tokenizer=tokenizer)
    if kind == "dpo":
        from training.config import DPOConfig
        from training.trainers.dpo import DPOTrainer

        from .test_dpo import BASE, chat_tokenizer, pairs, tiny_llama

        tokenizer, data = chat_tokenizer(), pairs(16)
        return DPOTrainer(DPOConfig.from_dict({**BASE, "device": "cpu", **fields}),
                          train_pairs=data[:12], eval_pairs=data[12:], out_dir=out, hooks=hooks,
                          model=tiny_llama(len(tokenizer)), tokenizer=tokenizer)
    if kind == "ppo":
        from training.config import PPOConfig
        from training.trainers.ppo import PPOTrainer
        from training.trainers.ppo_rollout import TokenScorer

        tokenizer = tiny_policy_tokenizer()
        scorer = TokenScorer(tokenizer.convert_tokens_to_ids("yes"))
        return PPOTrainer(PPOConfig.from_dict({**PPO, **fields}), prompts=tiny_prompts(24),
                          scorer=scorer, out_dir=out, hooks=hooks, policy=tiny_policy(tokenizer),
                          tokenizer=tokenizer)
    raise ValueError(f"unknown kind {kind!r}")


def result_of(result: Any) -> dict[str, Any]:
    return {"status": result.status, "step": result.step, "total_steps": result.total_steps,
            "checkpoint": str(result.checkpoint or ""), "train": result.train_metrics,
            "eval": result.eval_metrics}


def main(spec_path: str) -> int:
    from training.trainers.distributed import shutdown

    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)  # two ranks on a shared 2-core machine
    out, results = Path(spec["out"]), Path(spec["results"])
    calls = 0

    def should_stop() -> bool:  # called once per optimizer step, on every rank
        nonlocal calls
        calls += 1
        stop_at = spec.get("stop_at")
        return stop_at is not None and rank == spec["stop_rank"] and calls >= stop_at

    results.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"rank": rank}
    try:
        trainer = build(spec["kind"], out, spec["fields"], RunHooks(should_stop=should_stop))
        result = trainer.fit()
        if spec.get("resume"):
            report["before_resume"] = result_of(result)
            trainer = build(spec["kind"], out, spec["fields"])
            result = trainer.fit(resume_from=out)
    except RuntimeError as exc:  # the loud refusals the tests look for
        report["error"] = str(exc)
    if "error" in report:  # (outside the except block: the traceback no longer holds the trainer)
        (results / f"rank-{rank}.json").write_text(json.dumps(report))
        shutdown()
        return 0
    report |= {"world_size": trainer.dist.world_size, **result_of(result),
               "seen": trainer.seen if isinstance(trainer, RecordingRewardTrainer) else None}
    (results / f"rank-{rank}.json").write_text(json.dumps(report))
    weights = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
    torch.save(weights, results / f"rank-{rank}.pt")
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
