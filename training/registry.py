"""Trainer kinds and training-data resolution, shared by `manage.py train` and the Celery task.

A kind is a config dataclass (validated with `from_dict`) and a loader that
imports the trainer's `run()` lazily (torch is only imported when a run
starts; web pages import this module to build forms). Both callers invoke a
kind the same way::

    KINDS[name].runner()(config, train_pairs=..., eval_pairs=..., out_dir=..., hooks=...,
                         resume_from=..., data_info=...)

Adding a trainer kind (DPO, PPO): write `training/trainers/<kind>.py` with
`run(config, *, train_pairs, out_dir, eval_pairs, hooks, resume_from,
data_info) -> RunResult`, its config class in `training/config.py`, then add
a loader function and one `KINDS` entry below. A trainer that needs other
inputs (PPO: prompts and a reward-model folder from its config) adapts them
in its runner; the command, the Celery task and the web form pick the new
kind up from `KINDS` with no other change.

No torch here, and nothing runs at import time.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import DPOConfig, LoopConfig, PPOConfig, RewardConfig


class DataSpecError(ValueError):
    """A data spec that names nothing usable (e.g. an export id that does not exist)."""


def _reward_runner() -> Callable[..., Any]:
    from training.trainers.reward import run  # lazy: torch is imported only when training

    return run


def _dpo_runner() -> Callable[..., Any]:
    from training.trainers.dpo import run  # lazy: torch is imported only when training

    return run


def _ppo_runner() -> Callable[..., Any]:
    from training.trainers.ppo import run_registry  # lazy; maps train_pairs/eval_pairs to prompts

    return run_registry


DataResolver = Callable[[str], tuple[list[Any], list[Any] | None, dict[str, Any]]]


@dataclass(frozen=True)
class Kind:
    config: type[LoopConfig]
    runner: Callable[[], Callable[..., Any]]  # returns the trainer's run(); imports it lazily
    help: str
    # How the kind's data spec is read: None means `resolve_data` (preference pairs). PPO reads
    # prompts (`resolve_prompts`) and names its flag `--prompts`.
    resolver: DataResolver | None = None
    data_flag: str = "data"
    unit: str = "pairs"

    def resolve(self, spec: str) -> tuple[list[Any], list[Any] | None, dict[str, Any]]:
        """(train items, held-out items or None, provenance) for a data spec of this kind."""
        return (self.resolver or resolve_data)(spec)


KINDS: dict[str, Kind] = {
    "reward": Kind(RewardConfig, _reward_runner, "Bradley-Terry reward model"),
    "dpo": Kind(DPOConfig, _dpo_runner, "DPO policy fine-tuning (and IPO, hinge, R-DPO, SimPO) with length "
                "diagnostics and a generation probe"),
    "ppo": Kind(PPOConfig, _ppo_runner, "PPO policy fine-tuning against a trained reward model",
                resolver=lambda spec: resolve_prompts(spec), data_flag="prompts", unit="prompts"),
}


def resolve_data(spec: str) -> tuple[list[Any], list[Any] | None, dict[str, Any]]:
    """(train pairs, eval pairs or None, provenance) for a data spec.

    `spec` is a JSONL / JSONL.gz / Parquet file, an export folder, or an export
    id (`export:12` or `12`): the `DatasetExport` row's folder under
    ARTIFACTS_ROOT. Raises `DataSpecError` / `DataError` (ValueErrors whose
    message names the problem) or FileNotFoundError.
    """
    from training.data import load_folder, load_pairs
    from training.models import DatasetExport
    from training.services import export_dir

    export_id = spec.removeprefix("export:")
    if export_id.isdigit():
        export = DatasetExport.objects.filter(pk=int(export_id)).first()
        if export is None:
            raise DataSpecError(f"--data {spec}: no dataset export with id {export_id}")
        folder = export_dir(export)
        train, held = load_folder(folder)
        return train, held, {"export_id": export.pk, "path": str(folder)}
    path = Path(spec)
    if path.is_dir():
        train, held = load_folder(path)
        return train, held, {"path": str(path.resolve())}
    return load_pairs(path), None, {"path": str(path.resolve())}


def resolve_prompts(spec: str) -> tuple[list[str], list[str] | None, dict[str, Any]]:
    """(prompts, held-out prompts or None, provenance) for PPO.

    A file is read with `training.prompts.load_prompts` (a JSONL with `prompt`,
    or any preference file: its prompts); an export folder or export id gives
    the prompts of its train split and, held out, of its eval split.
    """
    from training.prompts import load_prompts, unique_prompts

    path = Path(spec)
    if path.is_file():
        return load_prompts(path), None, {"path": str(path.resolve())}
    train, held, info = resolve_data(spec)
    held_prompts = unique_prompts([p.prompt for p in held]) if held else None
    return unique_prompts([p.prompt for p in train]), held_prompts, info
