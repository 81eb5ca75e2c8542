"""TRL's PPO (trl==1.12.0, `trl.experimental.ppo`) on a setup written by `benchmarks/ppo_bench.py`.

Runs with the TRL venv's Python (never the project's .venv: TRL 1.13+ dropped
PPOTrainer, and the project does not depend on TRL). Imports nothing from the
project. Prints one JSON line with the wall time and episodes/s.

The setup folder holds `policy/` (causal LM + tokenizer), `reward/` (a
sequence classifier with num_labels=1 on the SAME vocabulary: TRL scores the
policy's token ids directly, it cannot use a reward model with its own
tokenizer) and `prompt_ids.json` (prompts already encoded by our trainer's
encoder, so both trainers see the same token ids).
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--setup", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--rollout-batch-size", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--ppo-epochs", type=int, required=True)
    parser.add_argument("--max-new-tokens", type=int, required=True)
    parser.add_argument("--temperature", type=float, required=True)
    parser.add_argument("--kl-coef", type=float, required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    setup = Path(args.setup)
    tokenizer = AutoTokenizer.from_pretrained(setup / "policy")
    tokenizer.padding_side = "left"  # generation needs left padding
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    policy = AutoModelForCausalLM.from_pretrained(setup / "policy", dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(setup / "policy", dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(setup / "reward", num_labels=1, dtype=torch.float32)
    value = AutoModelForSequenceClassification.from_pretrained(setup / "reward", num_labels=1, dtype=torch.float32)
    ids = json.loads((setup / "prompt_ids.json").read_text())
    dataset = Dataset.from_dict({"input_ids": ids})
    config = PPOConfig(
        output_dir=args.out, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.rollout_batch_size // args.batch_size, num_mini_batches=1,
        num_ppo_epochs=args.ppo_epochs, total_episodes=args.steps * args.rollout_batch_size,
        response_length=args.max_new_tokens, temperature=args.temperature, stop_token="eos",
        kl_coef=args.kl_coef, learning_rate=args.lr, local_rollout_forward_batch_size=args.batch_size,
        num_sample_generations=0, report_to=[], save_strategy="no", use_cpu=True, bf16=False, seed=args.seed,
        logging_steps=1, disable_tqdm=True, lr_scheduler_type="constant",
    )
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=ref, reward_model=reward,
                         train_dataset=dataset, value_model=value)
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    logs = [entry for entry in trainer.state.log_history if "objective/scores" in entry]
    episodes = args.steps * args.rollout_batch_size
    print(json.dumps({
        "trainer": f"trl {trl.__version__} experimental.ppo.PPOTrainer", "episodes": episodes, "wall_s": wall,
        "episodes_per_s": episodes / wall, "torch_threads": torch.get_num_threads(),
        "optimizer_steps": args.steps * args.ppo_epochs,  # num_mini_batches=1: one step per PPO epoch
        "last_loss": logs[-1].get("loss/policy_avg") if logs else None,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "last": {k: logs[-1][k] for k in ("objective/scores", "objective/kl", "policy/approxkl_avg")} if logs else {},
    }))


if __name__ == "__main__":
    main()
