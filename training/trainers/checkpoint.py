"""Plain-dict checkpoints and RNG state for exact resume (used by `training/trainers/base.py`).

A checkpoint is one `torch.save`d dict: format, kind, config, loop position
(step, epoch, the epoch's micro-batch plan and the cursor into it), model,
optimizer and scheduler state dicts, every RNG state, and the trainer's extra
state. Everything in it loads with `torch.load(weights_only=True)`: no pickled
classes, so a checkpoint from an untrusted run folder cannot execute code.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FORMAT = 1
# Fields that may differ when resuming: they change cadence, not the maths.
RESUME_MAY_CHANGE = frozenset(
    {"eval_every", "save_every", "keep_checkpoints", "log_every", "device"}
)


def rng_state() -> dict[str, Any]:
    """Every RNG the loop touches, in types `torch.load(weights_only=True)` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (np_state["kind"], keys, np_state["pos"], np_state["has_gauss"], np_state["cached"])
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(run_dir: Path, step: int, payload: dict[str, Any], *, keep: int) -> Path:
    """Save `payload` as checkpoints/step-<step>.pt (atomic rename); keep the newest `keep`."""
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:07d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated step-*.pt
    for old in sorted(folder.glob("step-*.pt"))[:-keep]:
        old.unlink()
    return path


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / "checkpoints").glob("step-*.pt"))
    return found[-1] if found else None


def read_checkpoint(path: Path, *, kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """Load a checkpoint (a file, or a run folder's latest) and check it matches this config."""
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"{path} holds no checkpoints/step-*.pt")
        path = found
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT or payload.get("kind") != kind:
        raise ValueError(f"{path} is not a {kind} checkpoint of format {CHECKPOINT_FORMAT}")
    changed = sorted(
        k for k, v in payload["config"].items() if config.get(k) != v and k not in RESUME_MAY_CHANGE
    )
    if changed:
        raise ValueError(f"cannot resume {path}: the config differs in {', '.join(changed)}")
    payload["path"] = str(path)
    return payload
