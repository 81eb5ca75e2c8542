"""The `ppo` benchmark of `benchmarks/trainers.py`: our PPO vs TRL's PPOTrainer (trl==1.12.0).

    .venv/bin/python benchmarks/trainers.py ppo --vs trl [--trl-python PATH] [--policy tiny|smollm2]
        [--steps N] [--rollout-batch-size N] [--batch-size N] [--ppo-epochs N] [--max-new-tokens N]

TRL 1.13 removed PPOTrainer, so TRL runs in its own virtualenv
(`--trl-python`, default `$TRL112_PYTHON` or /work/trl112-venv/bin/python;
create it with `python3 -m venv /work/trl112-venv && /work/trl112-venv/bin/pip
install torch==2.13.0 trl==1.12.0 transformers==<.venv's> datasets`): the
`trl` side spawns `benchmarks/ppo_trl_worker.py` there, a script that imports
nothing from the project, and reports that process's figures.

The setup (written once under --workdir, shared by both sides): the SmolLM2
tokenizer; a policy (`tiny`: a random 2-layer Llama on that vocabulary,
`smollm2`: the real SmolLM2-135M-Instruct); a reward model that is a random
sequence classifier on the SAME vocabulary (TRL's PPOTrainer feeds the
policy's token ids to the reward model, so it cannot use a reward model with
its own tokenizer; ours re-tokenizes the decoded text and is given the same
model); the first prompts of the HH-RLHF sample, encoded once by our
trainer's encoder (chat template) and handed to both as token ids.

Both run the same work: `steps` iterations of `rollout_batch_size` episodes,
sampling at `temperature` with top_k=0/top_p=1 up to `max_new_tokens`,
`ppo_epochs` passes with one optimizer step per pass (micro-batches of
`batch_size`, accumulated), fp32 on CPU, the same torch thread count, no
evaluation, no checkpoints. Design differences that stay: TRL's value model
is a separate copy of the reward model (a fourth transformer, one more
forward per rollout and per update); ours is a head on the policy's trunk.
The figure is episodes/s over the whole training loop (rollout + update).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TRL_PYTHON = os.environ.get("TRL112_PYTHON", "/work/trl112-venv/bin/python")
HH = REPO.parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl.gz"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trl-python", default=DEFAULT_TRL_PYTHON, help="python of the trl==1.12.0 venv")
    parser.add_argument("--policy", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--prompts", default=str(HH), help="prompt or preference file (its first prompts)")
    parser.add_argument("--workdir", default="/tmp/ppo-bench")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rollout-batch-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ppo-epochs", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both (0: torch's default)")


def _setup(args: argparse.Namespace) -> Path:
    """Write policy/, reward/ and prompt_ids.json under the workdir (same files for both trainers)."""
    import torch
    from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForCausalLM

    from training.policy import DEFAULT_POLICY, PairEncoder, load_tokenizer, resolve_policy
    from training.prompts import load_prompts

    folder = Path(args.workdir) / f"setup-{args.policy}-{args.rollout_batch_size * args.steps}"
    if (folder / "prompt_ids.json").is_file():
        return folder
    tokenizer = load_tokenizer(DEFAULT_POLICY)
    torch.manual_seed(0)
    if args.policy == "tiny":
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                             bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
        policy = LlamaForCausalLM(config)
        reward = AutoModelForSequenceClassification.from_config(config.__class__(**{**config.to_dict(),
                                                                                    "num_labels": 1}))
    else:
        source = resolve_policy(DEFAULT_POLICY)
        policy = None  # the packaged weights are copied as they are
        reward = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, local_files_only=True)
        reward.config.pad_token_id = tokenizer.pad_token_id
    for name, model in (("policy", policy), ("reward", reward)):
        if model is None:
            import shutil

            shutil.copytree(resolve_policy(DEFAULT_POLICY), folder / name, dirs_exist_ok=True)
            continue
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
    encoder = PairEncoder(tokenizer, max_length=256)
    prompts = load_prompts(args.prompts)[: args.rollout_batch_size * args.steps]
    ids = [tokenizer(encoder.prompt_text(p), add_special_tokens=False)["input_ids"][-256:] for p in prompts]
    (folder / "prompts.json").write_text(json.dumps(prompts))
    (folder / "prompt_ids.json").write_text(json.dumps(ids))
    return folder


def ours(params: dict[str, Any]) -> dict[str, Any]:
    """Our side, in the driver's worker process (.venv)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.config import PPOConfig
    from training.trainers.ppo import PPOTrainer
    from training.trainers.ppo_rollout import RewardModelScorer

    args = argparse.Namespace(**params)
    setup = _setup(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = PPOConfig.from_dict({
        "steps": args.steps, "rollout_batch_size": args.rollout_batch_size, "batch_size": args.batch_size,
        "grad_accum": args.rollout_batch_size // args.batch_size, "ppo_epochs": args.ppo_epochs,
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "kl_coef": args.kl_coef,
        "lr": args.lr, "schedule": "constant", "warmup_ratio": 0.0, "eval_prompts": 0, "device": "cpu",
        "generation_batch_size": args.batch_size, "max_prompt_length": 256,
    })
    tokenizer = AutoTokenizer.from_pretrained(setup / "policy")
    policy = AutoModelForCausalLM.from_pretrained(setup / "policy", dtype=torch.float32)
    scorer = RewardModelScorer(setup / "reward", device=torch.device("cpu"), max_length=512,
                               batch_size=args.batch_size)
    prompts = json.loads((setup / "prompts.json").read_text())
    with tempfile.TemporaryDirectory() as out:
        trainer = PPOTrainer(config, prompts=prompts, scorer=scorer, out_dir=out, policy=policy,
                             tokenizer=tokenizer)
        result = trainer.fit()
    episodes = trainer.stats["episodes"]
    rollouts = [h for h in trainer.history if "iteration" in h]
    return {"samples": int(episodes), "seconds": result.wall_time_s, "steps": result.step,
            "mean_loss": float(result.train_metrics.get("train/loss", float("nan"))),
            "generated_tokens_per_s": trainer.stats["generated_tokens"] / trainer.stats["generate_s"],
            "mean_completion_tokens": trainer.stats["generated_tokens"] / episodes,
            "last_scores": rollouts[-1]["objective/scores"], "last_kl": rollouts[-1]["objective/kl"]}


def trl(params: dict[str, Any]) -> dict[str, Any]:
    """TRL's side: the worker process (.venv) runs `ppo_trl_worker.py` under the TRL 1.12 venv's python."""
    args = argparse.Namespace(**params)
    setup = _setup(args)
    if not Path(args.trl_python).is_file():
        raise SystemExit(f"{args.trl_python} does not exist: create the trl==1.12.0 venv (see ppo_bench.py)")
    with tempfile.TemporaryDirectory() as out:
        cmd = [args.trl_python, str(REPO / "benchmarks" / "ppo_trl_worker.py"), "--setup", str(setup),
               "--out", out, "--steps", str(args.steps), "--rollout-batch-size", str(args.rollout_batch_size),
               "--batch-size", str(args.batch_size), "--ppo-epochs", str(args.ppo_epochs),
               "--max-new-tokens", str(args.max_new_tokens), "--temperature", str(args.temperature),
               "--kl-coef", str(args.kl_coef), "--lr", str(args.lr), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "WANDB_DISABLED": "true"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"TRL worker exited {proc.returncode}: {proc.stderr.strip()[-3000:]}")
    figures = json.loads(lines[-1])
    last = figures.get("last", {})
    return {"samples": figures["episodes"], "seconds": figures["wall_s"], "steps": figures["optimizer_steps"],
            "mean_loss": figures.get("last_loss"), "trl_version": figures["trainer"],
            "trl_peak_rss_mib": figures["peak_rss_mib"], "last_scores": last.get("objective/scores"),
            "last_kl": last.get("objective/kl")}
