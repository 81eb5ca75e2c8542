"""The `dpo` benchmark of `benchmarks/trainers.py`: our DPO trainer vs TRL's DPOTrainer.

    .venv/bin/python benchmarks/trainers.py dpo --vs trl [--steps 8] [--batch-size 4]
        [--max-length 256] [--rounds 2] [--threads N] [--device cpu|cuda|auto] [--bf16]
        [--trl-defaults] [--json OUT]

Same model (the packaged SmolLM2-135M-Instruct unless --model), same pairs,
batch size, max length, steps, lr schedule (10% linear warmup, linear decay),
AdamW, clipping at 1.0, beta, sigmoid loss, fp32 on CPU (bf16 autocast on
both sides with --bf16 on a GPU), no gradient checkpointing on either side
(TRL's default turns it on; --trl-defaults keeps it), no evaluation.

Identical token ids on both sides: the pairs are the first steps x
batch-size pairs of the HH-RLHF harmless sample whose prompt + longer
completion fit --max-length without truncation (so neither side's
truncation rule matters); the prompt is rendered with the chat template by
our encoder and handed to TRL as text together with completions that end
with the end-of-turn token (TRL adds no EOS then). The worker checks that
TRL's tokenization equals ours and reports it (`same_token_ids`).

Each side uses its own default for the reference: TRL keeps a frozen copy
and runs it on every batch; ours precomputes the reference log-probs in one
pass before training, and that pass IS counted in our time. tokens/s = real
(non-padding) prompt+completion tokens of the chosen and rejected sequences
of every step / seconds (TRL: `train_runtime`; ours: the reference pass +
the training loop).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HH = REPO.parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl.gz"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=str(HH), help="preference file (default: HH sample)")
    parser.add_argument(
        "--model", default="SmolLM2-135M-Instruct", help="policy (default: the packaged SmolLM2)"
    )
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per optimizer step")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads on both sides (0: torch's default)"
    )
    parser.add_argument(
        "--trl-defaults", action="store_true", help="keep TRL's gradient checkpointing"
    )


def _setup(
    params: dict[str, Any],
) -> tuple[Any, list[Any], Any, list[tuple[str, str, str]], list[Any]]:
    """(config, pairs, tokenizer, texts, ids): identical for both sides.

    texts are (prompt, chosen, rejected) strings as TRL receives them; ids the
    token ids our encoder gives them (`EncodedPair`s).
    """
    import torch

    from training.config import DPOConfig
    from training.data import load_pairs
    from training.policy import PairEncoder, load_tokenizer, pair_prompt

    if params["threads"]:
        torch.set_num_threads(params["threads"])
    config = DPOConfig.from_dict(
        {
            "model": params["model"],
            "max_steps": params["steps"],
            "batch_size": params["batch_size"],
            "max_length": params["max_length"],
            "lr": params["lr"],
            "beta": params["beta"],
            "warmup_ratio": 0.1,
            "device": params["device"],
            "precision": "bf16" if params["bf16"] else "fp32",
            "eval_fraction": 0.0,
            "probe_prompts": 0,
            "seed": 0,
        }
    )
    tokenizer = load_tokenizer(params["model"])
    whole = PairEncoder(tokenizer, max_length=10**9)  # no truncation: pick the pairs that fit
    need = params["steps"] * params["batch_size"]
    pairs, texts, ids = [], [], []
    for pair in load_pairs(params["data"]):
        enc = whole.encode(pair_prompt(pair), pair.chosen, pair.rejected)
        if (
            len(enc.prompt) + max(len(enc.chosen), len(enc.rejected)) > params["max_length"]
            or not enc.prompt
        ):
            continue
        prompt_text = whole.prompt_text(pair_prompt(pair))
        texts.append(
            (
                prompt_text,
                whole.completion_text(prompt_text, pair_prompt(pair), pair.chosen),
                whole.completion_text(prompt_text, pair_prompt(pair), pair.rejected),
            )
        )
        pairs.append(pair)
        ids.append(enc)
        if len(pairs) == need:
            break
    if len(pairs) < need:
        raise SystemExit(
            f"only {len(pairs)} pairs fit max_length={params['max_length']}; need {need}"
        )
    return config, pairs, tokenizer, texts, ids


def _tokens(ids: list[Any]) -> int:
    """Real tokens of one pass: the prompt twice (chosen and rejected rows) + both completions."""
    return sum(2 * len(e.prompt) + len(e.chosen) + len(e.rejected) for e in ids)


def ours(params: dict[str, Any]) -> dict[str, Any]:
    from training.callbacks import read_metrics
    from training.trainers.dpo import DPOTrainer

    config, pairs, _, _, ids = _setup(params)
    with tempfile.TemporaryDirectory() as out:
        trainer = DPOTrainer(config, train_pairs=pairs, eval_pairs=[], out_dir=out)
        result = trainer.fit()
        losses = [
            m["train/loss"] for m in read_metrics(Path(out) / "metrics.jsonl") if "train/loss" in m
        ]
    reference_s = trainer.timings["reference_s"]
    return {
        "samples": _tokens(ids),
        "seconds": reference_s + result.wall_time_s,
        "steps": result.step,
        "pairs": len(pairs),
        "reference_s": reference_s,
        "loop_s": result.wall_time_s,
        "packed": trainer.packed,
        "mean_loss": sum(losses) / len(losses),
    }


def trl(params: dict[str, Any]) -> dict[str, Any]:
    import datasets
    import trl as trl_lib

    from training.policy import load_policy

    config, pairs, tokenizer, texts, ids = _setup(params)
    dataset = datasets.Dataset.from_dict(
        {
            "prompt": [t[0] for t in texts],
            "chosen": [t[1] for t in texts],
            "rejected": [t[2] for t in texts],
        }
    )
    model = load_policy(params["model"])
    with tempfile.TemporaryDirectory() as out:
        args = trl_lib.DPOConfig(
            output_dir=out,
            per_device_train_batch_size=config.batch_size,
            max_steps=config.max_steps,
            learning_rate=config.lr,
            lr_scheduler_type="linear",
            warmup_steps=math.ceil(0.1 * config.max_steps),
            weight_decay=0.0,
            max_grad_norm=1.0,
            max_length=config.max_length,
            beta=config.beta,
            loss_type=["sigmoid"],
            bf16=params["bf16"],
            use_cpu=params["device"] == "cpu",
            gradient_checkpointing=params["trl_defaults"],
            seed=0,
            dataloader_num_workers=0,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            logging_steps=1,
            disable_tqdm=True,
        )
        trainer = trl_lib.DPOTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer
        )
        prepared = trainer.train_dataset
        theirs = list(
            zip(
                prepared["prompt_ids"],
                prepared["chosen_ids"],
                prepared["rejected_ids"],
                strict=True,
            )
        )
        same = [tuple(map(list, t)) for t in theirs] == [
            (e.prompt, e.chosen, e.rejected) for e in ids
        ]
        trl_tokens = sum(2 * len(p) + len(c) + len(r) for p, c, r in theirs)
        output = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "samples": trl_tokens,
        "seconds": output.metrics["train_runtime"],
        "steps": output.global_step,
        "pairs": len(prepared),
        "same_token_ids": same,
        "mean_loss": sum(losses) / len(losses) if losses else float("nan"),
    }
