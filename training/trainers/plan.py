"""The order of the data and the learning-rate schedule of the shared loop (`trainers/base.py`).

Both are pure functions of their arguments (a seeded generator, step
counts), so every rank of a data-parallel run builds the same plan, and a
resumed run the same schedule. Re-exported by `trainers/base.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch


def plan_batches(
    n: int,
    batch_size: int,
    *,
    generator: torch.Generator,
    lengths: Sequence[int] | None = None,
    bucket_batches: int = 50,
) -> list[list[int]]:
    """One epoch of micro-batches (lists of example indices).

    Without lengths: a random permutation cut into batches. With lengths:
    the permutation is cut into chunks of `bucket_batches` batches, each chunk
    sorted by length and cut into batches, and the batches shuffled, so a
    batch holds examples of similar length (little padding) while the epoch
    stays random. Only the epoch's last batch can be short.
    """
    perm = torch.randperm(n, generator=generator).tolist()
    if lengths is not None:
        chunk = batch_size * bucket_batches
        perm = [
            i
            for s in range(0, n, chunk)
            for i in sorted(perm[s : s + chunk], key=lambda j: -lengths[j])
        ]
    batches = [perm[s : s + batch_size] for s in range(0, n, batch_size)]
    if lengths is not None:
        order = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[k] for k in order]
    return batches


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak lr at step s: linear warmup, then linear/cosine decay or constant."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)

    return factor
