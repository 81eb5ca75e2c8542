"""PPO with the real shipped models on CPU: SmolLM2-135M-Instruct policy, a MiniLM reward model
trained by the reward trainer (a few steps here), prompts from the HH-RLHF sample.

Slow (a few minutes on 2 CPU cores). Checks what tiny models cannot: the chat
template's end-of-turn token stops generation, the update's log-probs equal
the sampler's on the real architecture, the KL is exactly 0 before the first
update, and the saved policy loads with plain transformers and still answers.
Figures go to <test output>/ppo_real.json.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import HH_RLHF

pytestmark = pytest.mark.slow


def test_smollm2_ppo_against_a_trained_minilm_reward_model(tmp_path: Path, test_output: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from training.config import PPOConfig, RewardConfig
    from training.data import load_pairs
    from training.ops import logprobs_from_logits
    from training.policy import load_policy, load_tokenizer
    from training.prompts import load_prompts
    from training.trainers import reward
    from training.trainers.ppo import run
    from training.trainers.ppo_rollout import PolicyWithValueHead, episode_tensors

    rm_dir = tmp_path / "rm"
    rm_config = RewardConfig.from_dict({"max_steps": 3, "batch_size": 4, "max_length": 128, "eval_fraction": 0.0})
    reward.run(rm_config, train_pairs=load_pairs(HH_RLHF)[:12], eval_pairs=load_pairs(HH_RLHF)[12:16],
               out_dir=rm_dir)

    tokenizer = load_tokenizer(None)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = PPOConfig.from_dict({
        "reward_model": str(rm_dir), "steps": 2, "rollout_batch_size": 4, "batch_size": 2, "ppo_epochs": 1,
        "max_new_tokens": 12, "eval_prompts": 4, "lr": 1e-5, "kl_coef": 0.05, "temperature": 0.7,
        "max_prompt_length": 64,
    })
    out = tmp_path / "ppo"
    result = run(config, prompts=load_prompts(HH_RLHF)[:40], out_dir=out)
    assert result.status == "completed" and result.step == 2 * 1 * 2
    run_config = json.loads((out / "run_config.json").read_text())
    assert im_end in run_config["stop_token_ids"]
    report = json.loads((out / "ppo_report.json").read_text())
    rollouts = [h for h in report["history"] if "iteration" in h]
    assert rollouts[0]["objective/kl"] == 0.0  # before any update the policy is the reference
    assert all(h["alarm/negative_kl"] == 0.0 for h in rollouts)
    ev = result.eval_metrics
    assert 0 < ev["len_mean"] <= 12 and "nrg_ratio" in ev

    # The saved policy is a plain transformers model that still answers in the chat format.
    saved = AutoModelForCausalLM.from_pretrained(out)
    saved_tok = AutoTokenizer.from_pretrained(out)
    chat = saved_tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                         add_generation_prompt=True, tokenize=False)
    ids = saved_tok(chat, return_tensors="pt", add_special_tokens=False)
    answer = saved.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in saved_tok.decode(answer[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)

    # The update's log-probs equal the sampler's on the real architecture (padding, positions, temperature).
    policy = load_policy(None).eval()
    prompts = [tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                                       tokenize=False), add_special_tokens=False)["input_ids"]
               for q in ("Hi!", "Name three colours of the rainbow, please.")]
    width = max(map(len, prompts))
    input_ids = torch.full((2, width), tokenizer.pad_token_id)
    attention = torch.zeros_like(input_ids)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p):], attention[i, width - len(p):] = torch.tensor(p), 1
    torch.manual_seed(0)
    gen = GenerationConfig(do_sample=True, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=8,
                           eos_token_id=[im_end], pad_token_id=tokenizer.pad_token_id, output_scores=True,
                           return_dict_in_generate=True)
    sampled = policy.generate(input_ids=input_ids, attention_mask=attention, generation_config=gen)
    new = sampled.sequences[:, width:]
    sampler = torch.log_softmax(torch.stack(sampled.scores, 1), -1).gather(2, new.unsqueeze(-1)).squeeze(-1)
    completions = [row[:row.index(im_end) + 1] if im_end in row else row for row in new.tolist()]
    batch = episode_tensors(prompts, completions, pad_id=tokenizer.pad_token_id)
    n = batch["mask"].shape[1]
    with torch.no_grad():
        logits, _ = PolicyWithValueHead(policy)(batch["input_ids"], batch["attention_mask"],
                                                batch["position_ids"], n_completion=n, temperature=0.7)
    ours = logprobs_from_logits(logits, batch["input_ids"][:, -n:])
    keep = batch["mask"].bool()
    gap = (ours[keep] - sampler[:, :n][keep]).abs().max().item()
    assert gap < 1e-3, gap

    figures = {"eval": ev, "rollouts": rollouts, "logprob_gap_vs_sampler": gap, "wall_s": result.wall_time_s}
    (test_output / "ppo_real.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
    print(json.dumps(figures, default=str)[:2000])
