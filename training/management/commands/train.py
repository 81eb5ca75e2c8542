"""`python manage.py train <kind> --data PATH --out DIR [flags]`: train a model from preference data.

A thin adapter, the same path the Celery task takes: flags -> a validated
config (`training.config`), `--data` -> preference pairs, then the trainer's
`run()` (imported lazily), with a progress bar and a summary.

`--data` is a JSONL / JSONL.gz / Parquet file, an export folder (train + eval
files or a saved DatasetDict), or an export id (`export:12` or `12`): the
`DatasetExport` row's folder under ARTIFACTS_ROOT.

Every field of the kind's config is also a flag (`lr` -> `--lr`,
`max_length` -> `--max-length`, booleans as `--x/--no-x`); `--config FILE`
reads a JSON object of fields first, flags override it.

Adding a trainer kind (DPO, PPO): write `training/trainers/<kind>.py` with
`run(config, *, train_pairs, out_dir, eval_pairs, hooks, resume_from,
data_info) -> RunResult`, its config class in `training/config.py`, then add
a loader function and one `KINDS` entry in `training/registry.py`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import threading
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from training.config import ConfigError, LoopConfig
from training.registry import KINDS, Kind, resolve_data  # noqa: F401 - Kind re-exported

# The kind registry and data resolution live in `training.registry` (the Celery
# task uses them too); these names stay importable from here.
COMMON = ("data", "eval_data", "out", "config", "resume", "no_progress")


def _add_config_flags(parser: CommandParser, config_cls: type[LoopConfig]) -> None:
    """One flag per config field; values stay strings/lists here and are validated by from_dict."""
    hints = typing.get_type_hints(config_cls)
    group = parser.add_argument_group(f"{config_cls.__name__} fields")
    for fld in dataclasses.fields(config_cls):
        flag = "--" + fld.name.replace("_", "-")
        help_text = f"{fld.metadata.get('help', '')} (default: {fld.default})"
        if hints[fld.name] is bool:
            group.add_argument(flag, dest=fld.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        elif typing.get_origin(hints[fld.name]) is tuple:
            group.add_argument(flag, dest=fld.name, nargs="+", default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(flag, dest=fld.name, default=argparse.SUPPRESS, help=help_text)


class Command(BaseCommand):
    help = "Train a model (reward, ...) on preference data; prints progress and a summary."

    def add_arguments(self, parser: CommandParser) -> None:
        subparsers = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
        for name, kind in KINDS.items():
            sub = subparsers.add_parser(name, help=kind.help, description=kind.help)
            data_help = ("prompt JSONL (`prompt` field), preference file, export folder or export id"
                         if kind.data_flag == "prompts" else "JSONL/Parquet file, export folder, or export id")
            sub.add_argument(f"--{kind.data_flag}", dest="data", metavar="PATH", required=True, help=data_help)
            sub.add_argument("--eval-data", help="held-out pairs (default: the export's eval split, else a "
                             "split by prompt of --data)")
            sub.add_argument("--out", required=True, help="run folder: model, metrics.jsonl, eval_report.json")
            sub.add_argument("--config", help="JSON file with config fields (flags override it)")
            sub.add_argument("--resume", nargs="?", const="latest", default=None,
                             help="resume from a checkpoint file, or the latest one in --out")
            sub.add_argument("--no-progress", action="store_true", help="no progress bar")
            _add_config_flags(sub, kind.config)

    def handle(self, *args: Any, **options: Any) -> None:
        kind = KINDS[options["kind"]]
        config = self._config(kind.config, options)
        try:
            train, held, info = kind.resolve(options["data"])
            if options.get("eval_data"):
                _, held, eval_info = kind.resolve(options["eval_data"])
                info["eval"] = eval_info
        except ValueError as exc:  # DataError and friends: the message names file, line and field
            raise CommandError(str(exc)) from None
        out = Path(options["out"])
        resume = options.get("resume")
        resume_from = out if resume == "latest" else (Path(resume) if resume else None)
        self.stdout.write(f"{config.kind}: {len(train)} {kind.unit}" + (f", {len(held)} held out" if held else "")
                          + f" -> {out}")
        stop = threading.Event()
        previous = signal.signal(signal.SIGINT, lambda *_: stop.set()) if _main_thread() else None
        bar = None if options.get("no_progress") else ProgressBar()
        try:
            from training.callbacks import RunHooks
            from training.models_hub import ModelNotFound

            hooks = RunHooks(on_progress=bar.update if bar else None, on_metrics=bar.metrics if bar else None,
                             should_stop=stop.is_set)
            result = kind.runner()(config, train_pairs=train, eval_pairs=held, out_dir=out, hooks=hooks,
                                   resume_from=resume_from, data_info=info)
        except (ModelNotFound, ValueError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from None
        finally:
            if bar:
                bar.close()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        self._summary(result)

    def _config(self, config_cls: type[LoopConfig], options: Mapping[str, Any]) -> LoopConfig:
        values: dict[str, Any] = {}
        if options.get("config"):
            try:
                values = json.loads(Path(options["config"]).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise CommandError(f"--config {options['config']}: {exc}") from None
            if not isinstance(values, dict):
                raise CommandError(f"--config {options['config']}: expected a JSON object")
        names = {f.name for f in dataclasses.fields(config_cls)}
        values |= {k: v for k, v in options.items() if k in names and k not in COMMON}
        try:
            return config_cls.from_dict(values)
        except ConfigError as exc:
            raise CommandError(str(exc)) from None

    def _summary(self, result: Any) -> None:
        ev = result.eval_metrics
        self.stdout.write(f"{result.status}: {result.step}/{result.total_steps} steps in {result.wall_time_s:.1f} s "
                          f"({result.samples_per_s:.2f} pairs/s)")
        if result.status == "cancelled":
            self.stdout.write(f"checkpoint: {result.checkpoint} (continue with --resume)")
        if "accuracy" in ev:
            self.stdout.write(
                f"eval accuracy {ev['accuracy']:.4f} on {int(ev.get('n_pairs', 0))} pairs; best length-only rule "
                f"{ev.get('length_rule_best', float('nan')):.4f}; acc_over_length_heuristic "
                f"{ev.get('acc_over_length_heuristic', float('nan')):+.4f}; length_flip_gap "
                f"{ev.get('length_flip_gap', float('nan')):+.4f}")
        if "nrg_ratio" in ev:  # PPO: the eval prompts, initial policy vs now
            nan = float("nan")
            self.stdout.write(
                f"eval score {ev.get('init_score_mean', nan):.4f} -> {ev.get('score_mean', nan):.4f}; mean length "
                f"{ev.get('init_len_mean', nan):.1f} -> {ev.get('len_mean', nan):.1f} tokens; "
                f"nrg_ratio {ev['nrg_ratio']:.3f}")
        if "gen/len_mean" in ev:  # DPO: the generation probe, reference generations vs now
            nan = float("nan")
            self.stdout.write(
                f"probe: mean length {ev.get('gen/ref_len_mean', nan):.1f} -> {ev['gen/len_mean']:.1f} tokens "
                f"(x{ev.get('gen/len_ratio_vs_ref', nan):.2f}), p90 {ev.get('gen/len_p90', nan):.0f}, truncated "
                f"{ev.get('gen/truncated_rate', nan):.2f}, kl_seq {ev.get('gen/kl_seq', nan):.3f}; "
                f"margin_len_corr {ev.get('margin_len_corr', nan):+.3f}")
        self.stdout.write(f"outputs in {result.out_dir}")


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class ProgressBar:
    """tqdm bar driven by the loop's progress and metrics callbacks."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=0, unit="step", dynamic_ncols=True)

    def update(self, step: int, total: int) -> None:
        self._bar.total = total
        self._bar.n = step
        self._bar.refresh()

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        shown = {k.split("/", 1)[1]: f"{v:.3g}" for k, v in values.items()
                 if k in ("train/loss", "train/accuracy", "eval/accuracy")}
        if shown:
            self._bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        self._bar.close()
