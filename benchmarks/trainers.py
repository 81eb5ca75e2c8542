"""Our trainers against TRL's on the same model, data, batch size, max length and steps.

    .venv/bin/python benchmarks/trainers.py reward --vs trl [--steps 25] [--batch-size 8]
        [--max-length 256] [--rounds 2] [--device cpu|cuda|auto] [--bf16] [--json OUT]

`reward`: all-MiniLM-L6-v2 (the packaged copy) as a Bradley-Terry reward model
on the first steps x batch-size pairs of the HH-RLHF harmless sample. Both
sides get the SAME token ids (ours: `training.trainers.reward.encode_pairs`;
TRL gets them as pre-tokenized `chosen_ids` / `rejected_ids`, because its raw
text path appends an EOS token that MiniLM does not have), the same initial
weights (seeded head), lr 5e-5 with 10% linear warmup, AdamW, clipping at 1.0,
dropout off (TRL's RewardConfig default `disable_dropout=True`; ours via
`RewardConfig.dropout=0`) and no gradient checkpointing (TRL's RewardConfig
turns it on by default; pass --trl-defaults to keep that). TRL needs `trl` (the `bench` extra):
`pip install -c constraints.txt -e '.[bench]'`.

Each side runs in a fresh process (`--worker`), so the peak RSS (and CUDA peak
memory on GPU) is that side's alone; sides alternate over --rounds and the
median is reported. samples/s = optimizer steps x batch size / the training
loop's wall time (TRL: `train_runtime`; ours: the loop in `Trainer.fit`).
Shared CPUs make single runs noisy: use --rounds >= 2 and compare medians.

Adding a benchmark (dpo, ppo): write its `add_args` and one worker function
per side (`params dict -> {"samples", "seconds", ...}`), then add one
`BENCHES` entry; the driver, the process isolation and the report are shared.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
HH = REPO.parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl.gz"
RESULT = "RESULT "


# --- the reward benchmark ------------------------------------------------------
def _reward_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=str(HH), help="preference file (default: HH sample)")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--trl-defaults", action="store_true", help="keep TRL's gradient checkpointing")


def _reward_setup(params: dict[str, Any]) -> tuple[Any, Any, list[Any], Any]:
    """(config, model, pairs, tokenizer): identical on both sides."""
    from training.config import RewardConfig
    from training.data import load_pairs
    from training.trainers.base import seed_everything
    from training.trainers.reward import load_backbone

    config = RewardConfig.from_dict({
        "model": params["model"], "max_steps": params["steps"], "batch_size": params["batch_size"],
        "max_length": params["max_length"], "lr": params["lr"], "warmup_ratio": 0.1,
        "device": params["device"], "precision": "bf16" if params["bf16"] else "fp32",
        "eval_fraction": 0.0, "head_lr_mult": 1.0,  # one lr for every weight, as TRL
        "dropout": 0.0,  # TRL's RewardConfig disables dropout by default
    })
    pairs = load_pairs(params["data"])[: params["steps"] * params["batch_size"]]
    seed_everything(0)  # the same initial reward head on both sides
    model, tokenizer = load_backbone(config)
    return config, model, pairs, tokenizer


def reward_ours(params: dict[str, Any]) -> dict[str, Any]:
    from training.trainers.reward import RewardTrainer

    config, model, pairs, tokenizer = _reward_setup(params)
    with tempfile.TemporaryDirectory() as out:
        trainer = RewardTrainer(config, train_pairs=pairs, eval_pairs=[], out_dir=out,
                                model=model, tokenizer=tokenizer)
        result = trainer.fit()
        steps = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in steps if "train/loss" in m]
    return {"samples": result.step * config.batch_size, "seconds": result.wall_time_s,
            "steps": result.step, "mean_loss": statistics.fmean(m["train/loss"] for m in steps),
            "pad_fraction": statistics.fmean(m["train/pad_fraction"] for m in steps)}


def reward_trl(params: dict[str, Any]) -> dict[str, Any]:
    import datasets
    import trl

    from training.trainers.reward import encode_pairs

    config, model, pairs, tokenizer = _reward_setup(params)
    enc = encode_pairs(pairs, tokenizer, max_length=config.max_length)
    dataset = datasets.Dataset.from_dict({"chosen_ids": [t.tolist() for t in enc.chosen],
                                          "rejected_ids": [t.tolist() for t in enc.rejected]})
    with tempfile.TemporaryDirectory() as out:
        args = trl.RewardConfig(
            output_dir=out, per_device_train_batch_size=config.batch_size, max_steps=config.max_steps,
            learning_rate=config.lr, lr_scheduler_type="linear",
            warmup_steps=math.ceil(0.1 * config.max_steps), weight_decay=0.0, max_grad_norm=1.0,
            max_length=config.max_length, bf16=params["bf16"], use_cpu=params["device"] == "cpu",
            gradient_checkpointing=params["trl_defaults"], seed=0, dataloader_num_workers=0,
            save_strategy="no", eval_strategy="no", report_to="none", logging_steps=config.max_steps,
            disable_tqdm=True,
        )
        trainer = trl.RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
        output = trainer.train()
    # One log entry at the last step: TRL's "loss" there is the mean over all the steps.
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"samples": output.global_step * config.batch_size, "seconds": output.metrics["train_runtime"],
            "steps": output.global_step, "mean_loss": losses[-1] if losses else None}


@dataclass(frozen=True)
class Bench:
    help: str
    add_args: Callable[[argparse.ArgumentParser], None]
    sides: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]  # "ours" first, then peers
    unit: str


BENCHES: dict[str, Bench] = {
    "reward": Bench("Bradley-Terry reward model: ours vs TRL RewardTrainer", _reward_args,
                    {"ours": reward_ours, "trl": reward_trl}, "pairs"),
}

# DPO lives in its own module (benchmarks/dpo_bench.py); the figure is tokens/s.
from benchmarks import dpo_bench  # noqa: E402 - after the shared definitions it plugs into

BENCHES["dpo"] = Bench("DPO: ours vs TRL DPOTrainer (SmolLM2-135M, HH-RLHF)", dpo_bench.add_args,
                       {"ours": dpo_bench.ours, "trl": dpo_bench.trl}, "tokens")

# PPO lives in benchmarks/ppo_bench.py; TRL's side runs trl==1.12.0 from its own venv in a subprocess.
from benchmarks import ppo_bench  # noqa: E402

BENCHES["ppo"] = Bench("PPO: ours vs TRL 1.12 experimental PPOTrainer (own venv; HH prompts)", ppo_bench.add_args,
                       {"ours": ppo_bench.ours, "trl": ppo_bench.trl}, "episodes")


# --- driver ---------------------------------------------------------------------
def _worker(bench: str, side: str, params: dict[str, Any]) -> None:
    """Run one side in this (fresh) process and print its figures as the last line."""
    import torch

    if params["device"] == "auto":
        params["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    figures = BENCHES[bench].sides[side](params)
    figures["process_s"] = time.perf_counter() - started
    # Linux: KiB. CHILDREN counts a side that runs its trainer in a subprocess (PPO's TRL side).
    figures["peak_rss_mib"] = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    figures["cuda_peak_mib"] = (torch.cuda.max_memory_allocated() / 2**20
                                if torch.cuda.is_available() else None)
    figures["device"] = params["device"]
    figures["torch_threads"] = torch.get_num_threads()
    print(RESULT + json.dumps(figures), flush=True)


def _run_side(bench: str, side: str, params: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", bench, side, json.dumps(params)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{side} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    figures = json.loads(lines[-1][len(RESULT):])
    figures["samples_per_s"] = figures["samples"] / figures["seconds"]
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        _worker(argv[1], argv[2], json.loads(argv[3]))
        return {}
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    subparsers = parser.add_subparsers(dest="bench", required=True)
    for name, bench in BENCHES.items():
        sub = subparsers.add_parser(name, help=bench.help)
        sub.add_argument("--vs", choices=[s for s in bench.sides if s != "ours"], required=True)
        sub.add_argument("--rounds", type=int, default=2, help="alternating runs per side (median)")
        sub.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
        sub.add_argument("--bf16", action="store_true", help="bf16 autocast on both sides (GPU)")
        sub.add_argument("--json", type=Path, help="also write the figures here")
        bench.add_args(sub)
    args = parser.parse_args(argv)
    bench = BENCHES[args.bench]
    params = {k: v for k, v in vars(args).items() if k not in ("bench", "vs", "rounds", "json")}
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], args.vs: []}
    for r in range(args.rounds):
        order = ["ours", args.vs] if r % 2 == 0 else [args.vs, "ours"]  # alternate: fair under load drift
        for side in order:
            figures = _run_side(args.bench, side, params)
            runs[side].append(figures)
            print(f"round {r + 1} {side:>5}: {figures['samples_per_s']:.2f} {bench.unit}/s "
                  f"({figures['steps']} steps in {figures['seconds']:.1f} s), peak RSS "
                  f"{figures['peak_rss_mib']:.0f} MiB", flush=True)
    summary: dict[str, Any] = {"bench": args.bench, "params": params, "runs": runs}
    for side, side_runs in runs.items():
        summary[side] = {
            "samples_per_s": statistics.median(f["samples_per_s"] for f in side_runs),
            "peak_rss_mib": max(f["peak_rss_mib"] for f in side_runs),
            "cuda_peak_mib": max((f["cuda_peak_mib"] or 0) for f in side_runs) or None,
            "mean_loss": side_runs[-1]["mean_loss"],
        }
    ours, peer = summary["ours"], summary[args.vs]
    summary["ratio_ours_over_peer"] = ours["samples_per_s"] / peer["samples_per_s"]
    device = runs["ours"][0]["device"]
    print(f"\n{args.bench} on {device} ({'bf16' if args.bf16 else 'fp32'}), {args.rounds} round(s), "
          f"median {bench.unit}/s:")
    for side in ("ours", args.vs):
        s = summary[side]
        cuda = f", CUDA peak {s['cuda_peak_mib']:.0f} MiB" if s["cuda_peak_mib"] else ""
        print(f"  {side:>5}: {s['samples_per_s']:.2f} {bench.unit}/s, peak RSS {s['peak_rss_mib']:.0f} MiB"
              f"{cuda}, mean train loss {s['mean_loss']:.4f}")
    print(f"  ratio ours/{args.vs}: {summary['ratio_ours_over_peer']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
