"""PPO trainer (training/trainers/ppo.py) on tiny random models: rollout maths, the synthetic task,
LoRA reference, reward-model scoring across tokenizers, exact resume, the train command."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from django.core.management import call_command
from transformers import AutoModelForCausalLM, GenerationConfig

from training.callbacks import RunHooks, read_metrics
from training.config import ConfigError, PPOConfig
from training.ops import logprobs_from_logits, masked_mean
from training.prompts import load_prompts
from training.registry import KINDS
from training.trainers.ppo import PPOTrainer, run
from training.trainers.ppo_rollout import (
    PolicyWithValueHead,
    RewardModelScorer,
    TokenScorer,
    episode_tensors,
    nrg_ratio,
)

from .tiny_policy import tiny_policy, tiny_policy_tokenizer, tiny_prompts
from .tiny_reward import save_tiny

SMALL = {"rollout_batch_size": 8, "batch_size": 4, "ppo_epochs": 2, "max_new_tokens": 6, "lr": 3e-3,
         "temperature": 1.0, "eval_prompts": 8, "schedule": "constant"}


def make_trainer(out: Path, *, hooks: RunHooks | None = None, seed: int = 0, **fields: object) -> PPOTrainer:
    tokenizer = tiny_policy_tokenizer()
    config = PPOConfig.from_dict({**SMALL, **fields})
    return PPOTrainer(config, prompts=tiny_prompts(48), scorer=TokenScorer(tokenizer.convert_tokens_to_ids("yes")),
                      out_dir=out, hooks=hooks, policy=tiny_policy(tokenizer, seed=seed), tokenizer=tokenizer)


# --- diagnostics and inputs -----------------------------------------------------------------------
def test_nrg_ratio_hand_computed() -> None:
    init_scores, init_lens = [1.0, 1.0, 2.0, 2.0], [5, 5, 25, 25]  # buckets 0, 0, 1, 1
    # Bucket 0 gains 0.5 (n = 2 + 1), bucket 1 gains 1.0 (n = 2 + 2), bucket 2 has no initial sample.
    out = nrg_ratio(init_scores, init_lens, [1.5, 3.0, 3.0, 3.0], [5, 25, 25, 45], bucket_tokens=20)
    within = (3 * 0.5 + 4 * 1.0) / 7
    assert out["nrg/total_gain"] == pytest.approx(1.125)
    assert out["nrg/within_gain"] == pytest.approx(within)
    assert out["nrg_ratio"] == pytest.approx(within / 1.125)
    assert out["nrg/coverage"] == pytest.approx(7 / 8)
    # All the gain from moving to a longer bucket that already scored higher: ratio 0.
    pure_length = nrg_ratio(init_scores, init_lens, [2.0, 2.0, 2.0, 1.0], [25, 25, 25, 5])
    assert pure_length["nrg/total_gain"] == pytest.approx(0.25) and pure_length["nrg_ratio"] == 0.0
    assert math.isnan(nrg_ratio(init_scores, init_lens, init_scores, init_lens)["nrg_ratio"])  # no gain


def test_load_prompts_from_prompt_and_preference_files(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    lines = [
        {"prompt": "\n\nHuman: hi\n\nAssistant:"},
        {"prompt": [{"role": "user", "content": "capital of France?"}]},
        {"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": "a", "rejected": "b"},  # an export row: same prompt
        {"chosen": "\n\nHuman: why?\n\nAssistant: because", "rejected": "\n\nHuman: why?\n\nAssistant: no"},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    prompts = load_prompts(path)
    assert prompts == ["\n\nHuman: hi\n\nAssistant:", "\n\nHuman: capital of France?\n\nAssistant:",
                       "\n\nHuman: why?\n\nAssistant:"]
    train, held, info = KINDS["ppo"].resolve(str(path))
    assert train == prompts and held is None and info["path"] == str(path.resolve())
    export = tmp_path / "export"  # an export folder: train prompts, and its eval split held out
    export.mkdir()
    for split, prompt in (("train", "\n\nHuman: a\n\nAssistant:"), ("eval", "\n\nHuman: b\n\nAssistant:")):
        rows = [{"prompt": prompt, "chosen": "x", "rejected": "y"}] * 2
        (export / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, held, _ = KINDS["ppo"].resolve(str(export))
    assert train == ["\n\nHuman: a\n\nAssistant:"] and held == ["\n\nHuman: b\n\nAssistant:"]
    path.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"text": "no prompt"}) + "\n")
    with pytest.raises(ValueError, match=r"line 2: field 'prompt' is missing"):
        load_prompts(path)


def test_config_rejects_inconsistent_batches() -> None:
    with pytest.raises(ConfigError) as err:
        PPOConfig.from_dict({"rollout_batch_size": 6, "batch_size": 4, "max_steps": 3})
    assert set(err.value.errors) == {"rollout_batch_size", "max_steps"}
    with pytest.raises(ConfigError, match="temperature"):
        PPOConfig.from_dict({"temperature": 0})
    assert PPOConfig.from_dict({"steps": 3, **SMALL}).optimizer_steps() == 3 * 2 * 2


# --- rollout ----------------------------------------------------------------------------------------
def test_rollout_logprobs_match_the_sampler() -> None:
    """The update's log-probs (padded [B, P+T] layout, logits_to_keep, temperature) equal the
    log-probs of the distribution generate() sampled from, token by token."""
    tokenizer = tiny_policy_tokenizer()
    policy = tiny_policy(tokenizer).eval()
    prompts = [tokenizer(p)["input_ids"] for p in tiny_prompts(6)]
    width, temperature, eos = max(map(len, prompts)), 0.7, tokenizer.eos_token_id
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], attention[i, width - len(p):] = torch.tensor(p), 1
    torch.manual_seed(0)
    gen = GenerationConfig(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=10,
                           eos_token_id=[eos], pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    out = policy.generate(input_ids=ids, attention_mask=attention, generation_config=gen)
    new = out.sequences[:, width:]
    sampler = torch.log_softmax(torch.stack(out.scores, 1), -1).gather(2, new.unsqueeze(-1)).squeeze(-1)
    completions = []
    for row in new.tolist():
        completions.append(row[:row.index(eos) + 1] if eos in row else row)
    batch = episode_tensors(prompts, completions, pad_id=0)
    n = batch["mask"].shape[1]
    logits, values = PolicyWithValueHead(policy)(batch["input_ids"], batch["attention_mask"],
                                                 batch["position_ids"], n_completion=n, temperature=temperature)
    ours = logprobs_from_logits(logits, batch["input_ids"][:, -n:])
    keep = batch["mask"].bool()
    assert keep.sum() > 20
    torch.testing.assert_close(ours[keep], sampler[:, :n][keep], atol=1e-5, rtol=0)
    assert torch.all(values == 0)  # the value head starts at zero


def test_first_rollout_rewards_kl_and_plan(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, missing_eos_penalty=0.5, lam=1.0, gamma=1.0, kl_coef=0.2)
    plan = trainer.epoch_plan(0)
    assert len(plan) == 2 * 8 // 4 and sorted(i for b in plan for i in b) == sorted(list(range(8)) * 2)
    m = trainer.rollout_metrics
    assert m["objective/kl"] == 0.0 and m["objective/kl_k3"] == 0.0  # policy == reference
    buf = trainer.buffer
    mask, width = buf["mask"], buf["mask"].shape[1]
    eos, yes = trainer.tokenizer.eos_token_id, trainer.tokenizer.convert_tokens_to_ids("yes")
    for i in range(8):
        tokens = buf["input_ids"][i, -width:][mask[i] == 1].tolist()
        finished = tokens[-1] == eos
        content = tokens[:-1] if finished else tokens
        score = sum(t == yes for t in content) / max(len(content), 1)
        # gamma = lam = 1 and V = 0 (fresh head): the return at t=0 is the episode's total reward.
        assert buf["returns"][i, 0].item() == pytest.approx(score - 0.5 * (not finished), abs=1e-6)
    assert masked_mean(buf["advantages"], mask).item() == pytest.approx(0.0, abs=1e-5)
    assert m["completions/clipped_ratio"] == pytest.approx(1 - sum(
        buf["input_ids"][i, -width:][mask[i] == 1][-1].item() == eos for i in range(8)) / 8)


def test_negative_kl_raises_the_alarm(tmp_path: Path) -> None:
    """Samples that do not come from the policy (nucleus sampling) scored against a sharper reference
    give a negative k1 mean: the alarm metric fires."""
    trainer = make_trainer(tmp_path, top_p=0.2, temperature=1.0)
    sharper = copy.deepcopy(trainer.ref)
    with torch.no_grad():
        sharper.lm_head.weight.mul_(4.0)
    trainer.ref = sharper
    trainer.epoch_plan(0)
    assert trainer.rollout_metrics["objective/kl"] < 0
    assert trainer.rollout_metrics["alarm/negative_kl"] == 1.0


# --- learning -----------------------------------------------------------------------------------------
def test_synthetic_task_tiny_policy_learns_the_paid_token(tmp_path: Path) -> None:
    # One minibatch per rollout (16 episodes), 4 passes: 40 optimizer steps in all
    # (~30 s on 2 CPU cores; speed is a benchmark's business, not this test's).
    trainer = make_trainer(tmp_path, steps=10, rollout_batch_size=16, batch_size=16, ppo_epochs=4, lr=5e-3,
                           kl_coef=0.01, eval_prompts=16, max_new_tokens=4)
    result = trainer.fit()
    assert result.status == "completed" and result.step == 10 * 4
    scores = [h["objective/scores"] for h in trainer.history if "iteration" in h]
    assert scores[0] < 0.15  # a random policy over 17 tokens rarely says "yes"
    assert sum(scores[-3:]) / 3 > scores[0] + 0.25
    ev = result.eval_metrics
    assert ev["score_mean"] > ev["init_score_mean"] + 0.25  # the same fixed eval prompts and seed


def test_lora_reference_is_the_adapter_disabled_base(tmp_path: Path) -> None:
    probe = torch.tensor([[3, 4, 5, 6]])
    checked: list[tuple[torch.Tensor, torch.Tensor]] = []

    def check_reference(step: int, total: int) -> None:  # after the last step, before saving
        if step == total:
            policy = trainer.model.policy
            with torch.no_grad():
                with policy.disable_adapter():
                    reference = policy(input_ids=probe).logits
                checked.append((reference, policy(input_ids=probe).logits))

    trainer = make_trainer(tmp_path, steps=2, lora_r=4, lora_alpha=8.0, lr=2e-2,
                           hooks=RunHooks(on_progress=check_reference))
    assert trainer.ref is None
    before = trainer.model.policy(input_ids=probe).logits.detach().clone()
    trainer.fit()
    (reference, trained), = checked
    torch.testing.assert_close(reference, before)
    assert not torch.allclose(trained, before, atol=1e-4)
    history = [h for h in trainer.history if "iteration" in h]
    assert history[0]["objective/kl"] == 0.0 and history[1]["objective/kl"] != 0.0
    saved = AutoModelForCausalLM.from_pretrained(tmp_path)  # merged: a plain transformers model
    torch.testing.assert_close(saved(input_ids=probe).logits, trained, atol=1e-4, rtol=0)


def test_reward_model_scorer_scores_like_the_reward_trainer(tmp_path: Path) -> None:
    from training.config import RewardConfig
    from training.data import PreferencePair
    from training.trainers.reward import RewardTrainer, load_backbone

    folder = save_tiny(tmp_path / "rm")
    prompts = ["\n\nHuman: is the sea blue?\n\nAssistant:", "\n\nHuman: name a colour\n\nAssistant:"]
    answers = ["yes it is blue", "red"]
    scorer = RewardModelScorer(folder, device=torch.device("cpu"), max_length=64, batch_size=1)
    config = RewardConfig.from_dict({"model": str(folder), "max_length": 64})
    model, tokenizer = load_backbone(config)
    pairs = [PreferencePair(prompt=p, chosen=a, rejected="no") for p, a in zip(prompts, answers, strict=True)]
    rm = RewardTrainer(config, train_pairs=pairs, eval_pairs=pairs, out_dir=tmp_path / "x", model=model,
                       tokenizer=tokenizer)
    with torch.no_grad():
        chosen, _ = rm.score_pairs(rm.eval_data)
    torch.testing.assert_close(scorer(prompts, answers, [[], []]), torch.tensor(chosen), atol=1e-5, rtol=0)


def test_run_with_a_reward_model_folder_writes_a_loadable_policy(tmp_path: Path) -> None:
    """The reward model (MiniLM tokenizer) and the policy (word-level tokenizer) share only text."""
    rm = save_tiny(tmp_path / "rm")
    tokenizer = tiny_policy_tokenizer()
    config = PPOConfig.from_dict({**SMALL, "steps": 2, "reward_model": str(rm), "adaptive_kl": True,
                                  "eval_every": 4})
    out = tmp_path / "ppo"
    result = run(config, prompts=tiny_prompts(40), out_dir=out, policy=tiny_policy(tokenizer), tokenizer=tokenizer)
    assert result.status == "completed"
    policy = AutoModelForCausalLM.from_pretrained(out)
    assert policy.config.vocab_size == len(tokenizer)
    assert (out / "value_head.safetensors").is_file()
    records = read_metrics(out / "metrics.jsonl")
    names = set().union(*records)
    for name in ("train/completions/mean_length", "train/completions/p90_length", "train/completions/max_length",
                 "train/completions/clipped_ratio", "train/objective/scores", "train/objective/kl",
                 "train/objective/kl_k3", "train/objective/rlhf_reward", "train/objective/score_len_corr",
                 "train/policy/approxkl", "train/policy/clipfrac", "train/policy/entropy", "train/val/clipfrac",
                 "train/val/ratio", "train/val/explained_variance", "train/alarm/negative_kl",
                 "eval/nrg_ratio", "eval/score_mean", "eval/len_mean"):
        assert name in names, name
    assert len([r for r in records if "eval/score_mean" in r]) == 2  # after step 4 and at the end
    report = json.loads((out / "ppo_report.json").read_text())
    assert report["final_kl_coef"] != 0.05  # adaptive: moved from its initial value
    assert json.loads((out / "run_config.json").read_text())["stop_token_ids"] == [tokenizer.eos_token_id]


def test_resume_mid_iteration_reproduces_the_run(tmp_path: Path) -> None:
    fields = {"steps": 2, "save_every": 100}
    full = make_trainer(tmp_path / "full", **fields)
    full.fit()
    expected = {r["step"]: r["train/loss"] for r in read_metrics(tmp_path / "full" / "metrics.jsonl")
                if "train/loss" in r}
    steps_done = []

    def stop_after_three() -> bool:
        steps_done.append(1)
        return len(steps_done) == 3  # iteration 0 has 4 optimizer steps: stop inside it

    cut = make_trainer(tmp_path / "cut", hooks=RunHooks(should_stop=stop_after_three), **fields)
    assert cut.fit().status == "cancelled"
    resumed = make_trainer(tmp_path / "cut", **fields)
    result = resumed.fit(resume_from=tmp_path / "cut")
    assert result.status == "completed" and result.step == 8
    got = {r["step"]: r["train/loss"] for r in read_metrics(tmp_path / "cut" / "metrics.jsonl") if "train/loss" in r}
    assert sorted(got) == list(range(1, 9))
    for step in range(4, 9):
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step


def test_train_command_ppo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tokenizer = tiny_policy_tokenizer()
    policy_dir = tmp_path / "policy"
    tiny_policy(tokenizer).save_pretrained(policy_dir)
    tokenizer.save_pretrained(policy_dir)
    rm = save_tiny(tmp_path / "rm")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in tiny_prompts(30)))
    config = tmp_path / "ppo.json"
    config.write_text(json.dumps({k: v for k, v in SMALL.items()}))
    out = tmp_path / "out"
    call_command("train", "ppo", "--prompts", str(prompts), "--reward-model", str(rm), "--out", str(out),
                 "--model", str(policy_dir), "--kl-coef", "0.1", "--steps", "1", "--config", str(config),
                 "--no-progress")
    printed = capsys.readouterr().out
    assert "ppo: 30 prompts" in printed and "nrg_ratio" in printed
    assert json.loads((out / "run_config.json").read_text())["config"]["kl_coef"] == 0.1
    AutoModelForCausalLM.from_pretrained(out)
