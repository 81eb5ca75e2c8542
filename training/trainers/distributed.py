"""Data parallelism for the shared loop: which process this is and what the processes share.

`accelerate launch --multi_gpu --num_processes N -m training.launch <run id>`
(or `torchrun --nproc_per_node N`) starts N processes and sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. `DataParallel.from_env()`
reads them; without them (or with WORLD_SIZE=1) every method below is the
identity, so the loop in `trainers/base.py` has no single/multi-process
branches. With N > 1:

- the process group is gloo on CPU and NCCL on CUDA, and LOCAL_RANK picks
  the GPU (`cuda:<LOCAL_RANK>`);
- `shard` gives each rank the strided slice ``indices[rank::N]`` of every
  micro-batch of the SAME global plan (every rank builds it from the same
  seed), so the ranks together see exactly the examples one process would;
- the model is wrapped in `DistributedDataParallel`, which averages the
  gradients over ranks during the backward pass; the loop scales each rank's
  loss by N x (its examples / the step's examples), so the average is the
  gradient of the mean loss over all of the step's examples, as in one process;
- `reduce_sums` all-reduces the loop's example-weighted metric sums, so every
  rank (and rank 0, which logs) holds the figures of the global batch (means
  over examples are exact; `pad_fraction` is per-rank padding, averaged);
- `any` agrees on the cooperative cancel flag (an all-reduce MAX), so every
  rank stops after the same step;
- rank 0 alone evaluates, on the whole eval set, while the others wait at
  their next collective: the diagnostics (AUC, Spearman, length fits,
  nrg_ratio) are not means over examples and need every eval example in one
  place, and eval sets are small next to training; sharding them would only
  pay off for large eval sets;
- rank r seeds its RNGs with seed + r (dropout masks, PPO sampling differ per
  rank; rank 0 draws as one process would) and checkpoints keep every rank's
  RNG state, so a resume on the same number of ranks is exact; the plan does
  not depend on N, so a checkpoint also resumes on another number of ranks.

Why plain DDP and not accelerate's `Accelerator`: the loop already owns what
`Accelerator.prepare` would take over (device placement, bf16 autocast,
example-weighted gradient accumulation, the LR schedule stepped once per
optimizer step, plain-dict checkpoints with every RNG state), and house
rules keep that one loop visible; `Accelerator` would wrap the optimizer and
scheduler and shard a DataLoader the loop does not use. accelerate stays the
LAUNCHER (DESIGN.md: no home-made launcher); this module is the small part of
torch.distributed the loop needs, and DDP still overlaps the gradient
all-reduce with the backward pass.
"""

from __future__ import annotations

import gc
import inspect
import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

T = TypeVar("T")

# While rank 0 evaluates or writes a checkpoint the other ranks wait at their next collective;
# the default timeouts (10 min NCCL, 30 min gloo) could kill a run during a long evaluation.
# A rank that crashes does not leave the others hanging this long: the launcher
# (torch elastic, under accelerate) stops every rank when one exits with an error.
COLLECTIVE_TIMEOUT = timedelta(minutes=60)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run (world_size 1: one process, every op a no-op)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> DataParallel:
        world = _env_int("WORLD_SIZE", 1)
        if world < 1:
            raise RuntimeError(f"WORLD_SIZE={world}: expected a positive number of processes")
        rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
        if not 0 <= rank < world:
            raise RuntimeError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
        return cls(rank=rank, world_size=world, local_rank=local)

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes metrics, checkpoints, artifacts and evaluation reports."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    # --- setup ------------------------------------------------------------------------------
    def device(self, name: str) -> torch.device:
        """The config's device ("auto", "cpu" or "cuda") here: cuda means cuda:<LOCAL_RANK>."""
        cuda = torch.cuda.is_available()
        if name == "cuda" and not cuda:
            raise RuntimeError("device=cuda was asked for but torch sees no CUDA device")
        if name == "cuda" or (name == "auto" and cuda):
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu" if name == "auto" else name)

    def start(self, device: torch.device) -> None:
        """Join the process group (once per process): NCCL for CUDA, gloo for CPU."""
        if not self.enabled or dist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL and `.to("cuda")` use the current device
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=self.rank, world_size=self.world_size,
                                timeout=COLLECTIVE_TIMEOUT)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module | None:
        """A DistributedDataParallel wrapper of `model` (its forward arms the gradient all-reduce).

        broadcast_buffers=False: the buffers of these models are constants
        (position ids), and a forward that syncs nothing lets rank 0 evaluate
        alone. The constructor broadcasts rank 0's weights to every rank.
        """
        if not self.enabled:
            return None
        ddp = nn.parallel.DistributedDataParallel
        # torch 2.13 renamed broadcast_buffers (the old name now warns) to forward_sync_buffers.
        renamed = "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
        no_buffer_sync = {"forward_sync_buffers" if renamed else "broadcast_buffers": False}
        ids = [device.index] if device.type == "cuda" else None
        return ddp(model, device_ids=ids, **no_buffer_sync)

    # --- the step -----------------------------------------------------------------------------
    def shard(self, indices: Sequence[int]) -> tuple[list[int], int]:
        """(examples this rank computes, how many of the micro-batch's examples they count for).

        Strided, so a length-sorted micro-batch gives every rank similar
        lengths. A rank whose slice is empty (a micro-batch shorter than the
        number of ranks) still runs one example with weight 0: DDP needs
        every rank in every gradient all-reduce.
        """
        mine = list(indices[self.rank :: self.world_size])
        return (mine, len(mine)) if mine else (list(indices[:1]), 0)

    def sync_context(self, wrapped: nn.Module | None, *, last: bool) -> Any:
        """DDP's no_sync() for all but the last micro-batch of a step (one all-reduce per step)."""
        if wrapped is None or last:
            return nullcontext()
        assert isinstance(wrapped, nn.parallel.DistributedDataParallel)
        return wrapped.no_sync()

    def reduce_sums(self, sums: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
        """Sum each metric over ranks in one all-reduce: example-weighted sums -> global means."""
        if not self.enabled or not sums:
            return sums
        names = sorted(sums)  # the same names on every rank: the same compute_loss
        # On `device` (NCCL reduces CUDA tensors only); some metrics come from the CPU (PPO's).
        packed = torch.stack([torch.as_tensor(sums[k], device=device).float().reshape(())
                              for k in names])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        return dict(zip(names, packed.unbind(), strict=True))

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when it is True on at least one (the cancel flag)."""
        if not self.enabled:
            return flag
        value = torch.tensor([float(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def check_gradients_agree(self, params: Sequence[nn.Parameter], device: torch.device) -> None:
        """Fail loudly when the ranks hold different gradients after a step's backward.

        They do when a trainer's compute_loss ran its forward on `self.model`
        instead of `self.train_model` (the DDP wrapper): the all-reduce then
        never fires and each rank would silently train its own replica.
        """
        if not self.enabled:
            return
        probe = torch.zeros(2, dtype=torch.float64, device=device)  # [sum, sum of squares]
        for p in params:
            if p.grad is not None:
                g = p.grad.detach().double()
                probe += torch.stack([g.sum(), g.square().sum()]).to(device)
        low, high = probe.clone(), probe.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if not torch.allclose(low, high, rtol=1e-6, atol=1e-12):
            raise RuntimeError(
                "gradients differ across ranks after the backward pass: the trainer's compute_loss "
                "must run its gradient-carrying forward through self.train_model (the "
                "DistributedDataParallel wrapper), not self.model")

    # --- objects ------------------------------------------------------------------------------
    def gather(self, obj: T) -> list[T]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box: list[Any] = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def split(self, items: Sequence[T]) -> list[T]:
        """This rank's strided share of `items` (all of them in one process)."""
        return list(items[self.rank :: self.world_size])

    def unsplit(self, mine: Sequence[T]) -> list[T]:
        """Inverse of `split`: every rank's share gathered back into the original order."""
        if not self.enabled:
            return list(mine)
        parts = self.gather(list(mine))
        total = sum(len(p) for p in parts)
        return [parts[i % self.world_size][i // self.world_size] for i in range(total)]


def shutdown() -> None:
    """Leave the process group, if this process joined one (the end of `training.launch`)."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()  # a DDP wrapper freed only after its process group is gone hangs the exit
        dist.destroy_process_group()
