"""The one visible training loop every trainer shares (reward model, DPO, PPO).

A trainer subclasses `Trainer`, builds `self.model` in its constructor and
implements three methods:

- ``num_train_examples()``: how many training examples there are;
- ``collate(indices) -> batch``: the tensors of those examples (on CPU; the
  loop moves them);
- ``compute_loss(batch) -> (loss, metrics)``: mean loss over the batch and
  detached 0-dim metric tensors (see `training/losses.py`).

Optional hooks: ``example_lengths()`` (enables length bucketing),
``evaluate() -> {name: float}`` (called every `eval_every` steps and at the
end, under no_grad/eval mode/autocast), ``save_outputs(eval_metrics)`` (write
the final model and reports), ``extra_state()`` / ``load_extra_state()``
(trainer state a checkpoint must carry besides the model). A trainer whose
data depends on the model overrides ``epoch_plan(epoch)`` and
``total_steps()``: PPO rolls out at the start of each epoch of the loop and
plans its minibatch passes over that rollout (see `trainers/ppo.py`).

`fit()` is the loop: seeding, an epoch plan of micro-batches (saved in
checkpoints, so a resumed run sees the same data in the same order), gradient
accumulation weighted by example counts (so 4 x 2 equals one batch of 8),
clipping, warmup + decay, evaluation cadence, plain-dict checkpoints with every
RNG state, metrics sink, progress and cooperative cancellation. Device and
precision are chosen once; the loop body has no device branches (autocast is a
no-op context on fp32).

Data parallelism (`trainers/distributed.py`): under `accelerate launch` /
torchrun (WORLD_SIZE > 1) every rank builds the same plan, computes the
strided slice `indices[rank::N]` of each micro-batch, and DDP averages the
gradients, so N processes take the optimizer steps one process would take on
the same global batches (`batch_size` is the global micro-batch, not a
per-GPU one); logged metrics are all-reduced, the cancel flag is agreed, and
rank 0 alone evaluates (on the whole eval set, the others wait) and writes
metrics, checkpoints and outputs. A trainer opts in with `data_parallel = True`
once its compute_loss runs the gradient-carrying forward on `self.train_model`.
"""

from __future__ import annotations

import math
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from training.callbacks import MetricsSink, NullSink, RunHooks
from training.config import LoopConfig
from training.trainers.checkpoint import (  # re-exported: trainers and tests import them from here
    latest_checkpoint,
    read_checkpoint,
    rng_state,
    set_rng_state,
    write_checkpoint,
)
from training.trainers.distributed import DataParallel
from training.trainers.plan import lr_lambda, plan_batches  # re-exported, as the above

__all__ = ["latest_checkpoint", "lr_lambda", "plan_batches", "rng_state", "set_rng_state"]


# --- device, precision, seeding ---------------------------------------------
def resolve_device(name: str) -> torch.device:
    """"auto" (CUDA when present), "cpu" or "cuda"; a launched rank gets cuda:<LOCAL_RANK>."""
    return DataParallel.from_env().device(name)


def resolve_amp(precision: str, device: torch.device) -> bool:
    """True when the forward runs under bf16 autocast (weights and optimizer stay fp32)."""
    if precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return precision == "bf16"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


# --- parameters --------------------------------------------------------------
def param_groups(
    params: Sequence[nn.Parameter], weight_decay: float, *, lr: float | None = None
) -> list[dict[str, Any]]:
    """AdamW groups: no decay on biases and norm weights (1-D tensors), as in BERT and GPT-2.

    `lr` sets the group's own peak learning rate (the schedule scales every group alike).
    """
    extra = {} if lr is None else {"lr": lr}
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay, **extra},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, **extra},
    ]
    return [g for g in groups if g["params"]]


def prepare_model(model: nn.Module, config: LoopConfig, *, task_type: str) -> nn.Module:
    """Apply gradient checkpointing and LoRA as configured (`task_type`: peft's SEQ_CLS, ...)."""
    if config.gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (LoRA) as they are.
        # transformers 5 renamed the method (the old name warns); 4.x only has the old one.
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if config.lora_r > 0:
        import peft  # lazy: only LoRA runs pay for the import

        targets = config.lora_target_modules
        lora = peft.LoraConfig(
            task_type=task_type,
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules="all-linear" if targets == ("all-linear",) else list(targets),
        )
        model = peft.get_peft_model(model, lora)
    return model


def move_to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    return batch


@dataclass
class LoopState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    cursor: int = 0  # next micro-batch in `plan`
    plan: list[list[int]] = field(default_factory=list)  # this epoch's micro-batches


@dataclass
class RunResult:
    status: str  # "completed" or "cancelled"
    step: int
    total_steps: int
    out_dir: Path
    wall_time_s: float  # the loop alone (no model loading, no final evaluation)
    samples_per_s: float  # training examples per second over the loop
    train_metrics: dict[str, float]  # the last logged step
    eval_metrics: dict[str, float]
    checkpoint: Path | None = None


class Trainer(ABC):
    config: LoopConfig
    model: nn.Module
    # True once compute_loss runs its gradient-carrying forward on `self.train_model`; other
    # trainers refuse to start under a multi-process launch rather than train N replicas.
    data_parallel: ClassVar[bool] = False

    def __init__(
        self, config: LoopConfig, *, out_dir: str | Path, hooks: RunHooks | None = None
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.hooks = hooks or RunHooks()
        self.dist = DataParallel.from_env()
        if self.dist.enabled and not self.data_parallel:
            raise RuntimeError(f"{type(self).__name__} does not support data parallelism "
                               f"(WORLD_SIZE={self.dist.world_size}): launch it as one process")
        self.device = self.dist.device(config.device)
        self.dist.start(self.device)  # before trainers place models: it selects this rank's GPU
        self.use_bf16 = resolve_amp(config.precision, self.device)
        self._ddp: nn.Module | None = None  # the DDP wrapper while fit() runs with N > 1

    # --- what a trainer implements ------------------------------------------
    @abstractmethod
    def num_train_examples(self) -> int: ...

    @abstractmethod
    def collate(self, indices: Sequence[int]) -> dict[str, Any]: ...

    @abstractmethod
    def compute_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]: ...

    def example_lengths(self) -> Sequence[int] | None:
        return None

    def evaluate(self) -> dict[str, float]:
        return {}

    def save_outputs(self, eval_metrics: dict[str, float]) -> None:
        return None

    def extra_state(self) -> dict[str, Any]:
        """Trainer state outside the model that a checkpoint must hold (PPO: its rollout buffer).

        Tensors, numbers, strings, lists and dicts only (loaded with weights_only=True).
        """
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` returned; called when resuming, after the model is loaded."""
        return None

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups over the trainable parameters (override for per-group rates)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return param_groups(params, self.config.weight_decay)

    # --- shared machinery ----------------------------------------------------
    @property
    def train_model(self) -> nn.Module:
        """What compute_loss calls for its gradient-carrying forward: the model, or during a
        multi-process fit() its DistributedDataParallel wrapper (whose forward arms the
        gradient all-reduce). Evaluation and no-grad passes use `self.model`."""
        return self.model if self._ddp is None else self._ddp

    def autocast(self) -> torch.autocast:
        """bf16 autocast when configured; a disabled autocast is a no-op context."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def epoch_plan(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        lengths = self.example_lengths()
        return plan_batches(
            self.num_train_examples(), self.config.batch_size, generator=generator, lengths=lengths
        )

    def total_steps(self) -> int:
        cfg = self.config
        micro_batches = math.ceil(self.num_train_examples() / cfg.batch_size)
        per_epoch = math.ceil(micro_batches / cfg.grad_accum)
        return cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))

    def run_evaluation(self) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad(), self.autocast():
            metrics = self.evaluate()
        self.model.train()
        return metrics

    # --- the loop -------------------------------------------------------------
    def fit(self, *, resume_from: str | Path | None = None) -> RunResult:
        cfg, model, par = self.config, self.model, self.dist
        main = par.is_main  # rank 0 alone writes files and calls on_metrics / on_progress
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        model.to(self.device)
        optimizer = torch.optim.AdamW(
            self.param_groups(), lr=cfg.lr, fused=self.device.type == "cuda"
        )
        total = self.total_steps()
        warmup = math.ceil(cfg.warmup_ratio * total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(cfg.schedule, warmup, total)
        )
        path = self.out_dir / "metrics.jsonl"
        sink = MetricsSink(path, self.hooks.on_metrics) if main else NullSink()
        state = LoopState()
        if resume_from is not None:
            state = self.load_checkpoint(Path(resume_from), optimizer, scheduler)
            sink.truncate_after(state.step)
        else:
            if main:
                sink.path.unlink(missing_ok=True)
            seed_everything(cfg.seed + par.rank)  # rank 0 draws as one process; others, own streams
        self._ddp = par.wrap(model, self.device)
        should_stop = self.hooks.should_stop or (lambda: False)
        on_progress = (main and self.hooks.on_progress) or (lambda step, total: None)
        params = [p for p in model.parameters() if p.requires_grad]
        status, checkpoint, logged, first_step = "completed", None, {}, state.step
        samples, started = 0, time.perf_counter()
        model.train()
        try:  # the wrapper goes on any exit: a DDP outliving its process group hangs the exit
            while state.step < total:
                if state.cursor >= len(state.plan):  # a new epoch: order seeded and checkpointed
                    state.epoch += bool(state.plan)
                    state.plan, state.cursor = self.epoch_plan(state.epoch), 0
                group = state.plan[state.cursor : state.cursor + cfg.grad_accum]
                n_examples = sum(len(indices) for indices in group)
                step_started = time.perf_counter()
                sums: dict[str, Tensor] = {}
                for k, indices in enumerate(group):
                    mine, share = par.shard(indices)  # this rank's slice (all of it in one process)
                    batch = move_to(self.collate(mine), self.device)
                    # Weight by examples so the step's gradient is the mean over all its
                    # examples, whatever the micro-batch sizes (the last one may be short).
                    weight = share / n_examples
                    with par.sync_context(self._ddp, last=k == len(group) - 1):
                        with self.autocast():
                            loss, metrics = self.compute_loss(batch)
                        # DDP AVERAGES gradients over ranks: x world_size turns that into the sum.
                        (loss * (weight * par.world_size)).backward()
                    for name, value in metrics.items():
                        sums[name] = sums.get(name, 0.0) + value.detach().float() * weight
                if state.step == first_step:  # once per fit: a trainer bypassing DDP fails here
                    par.check_gradients_agree(params, self.device)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or math.inf)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.cursor += len(group)
                samples += n_examples
                if state.step % cfg.log_every == 0 or state.step == total:
                    sums = par.reduce_sums(sums, self.device)  # global figures, on every rank
                    logged = {f"train/{k}": float(v) for k, v in sums.items()}
                    logged |= {
                        "train/lr": scheduler.get_last_lr()[0],
                        "train/grad_norm": float(grad_norm),
                        "train/epoch": state.epoch + state.cursor / len(state.plan),
                        "train/samples_per_s": n_examples / (time.perf_counter() - step_started),
                    }
                    sink.log(state.step, logged)
                on_progress(state.step, total)
                due = cfg.eval_every and state.step % cfg.eval_every == 0 and state.step < total
                if due and main:  # rank 0 evaluates; the others wait at their next collective
                    sink.log(state.step, {f"eval/{k}": v for k, v in self.run_evaluation().items()})
                if cfg.save_every and state.step % cfg.save_every == 0:
                    checkpoint = self.save_checkpoint(state, optimizer, scheduler)
                if par.any(should_stop(), self.device):  # any rank asking stops every rank here
                    status = "cancelled"
                    if not (cfg.save_every and state.step % cfg.save_every == 0):  # not just saved
                        checkpoint = self.save_checkpoint(state, optimizer, scheduler)
                    break
        finally:
            self._ddp = None
        wall = time.perf_counter() - started
        eval_metrics: dict[str, float] = {}
        if status == "completed" and main:
            eval_metrics = self.run_evaluation()
            sink.log(state.step, {f"eval/{k}": v for k, v in eval_metrics.items()})
            self.save_outputs(eval_metrics)
        sink.close()
        return RunResult(
            status=status,
            step=state.step,
            total_steps=total,
            out_dir=self.out_dir,
            wall_time_s=wall,
            samples_per_s=samples / wall if wall > 0 else 0.0,
            train_metrics=logged,
            eval_metrics=eval_metrics,
            checkpoint=checkpoint,
        )

    # --- checkpoints ------------------------------------------------------------
    def save_checkpoint(
        self, state: LoopState, optimizer: torch.optim.Optimizer, scheduler: Any
    ) -> Path | None:
        """Write a plain-dict checkpoint of everything a bit-exact resume needs (rank 0 writes;
        every rank calls this, handing over its RNG state; the others return None)."""
        rngs = self.dist.gather(rng_state())
        if not self.dist.is_main:
            return None
        payload = {
            "kind": self.config.kind,
            "config": self.config.to_dict(),
            "step": state.step,
            "epoch": state.epoch,
            "cursor": state.cursor,
            "plan": state.plan,
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rngs[0],
            **({"rng_by_rank": rngs} if len(rngs) > 1 else {}),
            "extra": self.extra_state(),
        }
        keep = self.config.keep_checkpoints
        return write_checkpoint(self.out_dir, state.step, payload, keep=keep)

    def load_checkpoint(
        self, path: Path, optimizer: torch.optim.Optimizer, scheduler: Any
    ) -> LoopState:
        """Restore model, optimizer, scheduler, RNGs and data position from `path` (file or run)."""
        payload = read_checkpoint(path, kind=self.config.kind, config=self.config.to_dict())
        self.model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        by_rank = payload.get("rng_by_rank", [])
        if len(by_rank) == self.dist.world_size:  # as many processes as wrote it
            set_rng_state(by_rank[self.dist.rank])
        else:  # data and steps resume exactly; ranks > 0 start fresh random streams
            set_rng_state(payload["rng"])
            if self.dist.rank:
                seed_everything(self.config.seed + self.dist.rank + 1_000_003 * payload["step"])
        self.load_extra_state(payload.get("extra", {}))
        return LoopState(payload["step"], payload["epoch"], payload["cursor"], payload["plan"])


def iter_chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    """Consecutive slices of `items` of at most `size` (evaluation batches)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
