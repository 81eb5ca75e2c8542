"""PPO fine-tuning of a causal LM against a learned reward model (the InstructGPT stage).

Objective (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022):
maximise E_{x~D, y~pi}[R(x, y)] - beta * KL(pi || pi_ref), with the KL paid
per token inside the reward (k1 estimator), GAE advantages (whitened), and
several minibatch epochs of PPO's clipped policy and value losses
(Schulman et al. 2017) per rollout.

How PPO sits on the shared loop (``trainers/base.py``)
------------------------------------------------------
The base loop walks "epochs" of micro-batches that ``epoch_plan(epoch)``
returns, and does the rest itself: collate, ``compute_loss``, accumulation,
clipping, AdamW, schedule, metrics, progress, cancellation, checkpoints. PPO
overrides ``epoch_plan``: one loop epoch is one PPO iteration. It samples a
rollout with the current policy, scores it, builds the KL-penalised rewards,
GAE and advantages, and returns ``ppo_epochs`` shuffled passes over the
rollout's episodes as the plan. So there is still ONE visible loop, not a
fork: PPO only supplies a data source that depends on the model. Base got
one additive pair of hooks, ``extra_state`` / ``load_extra_state``, so a
checkpoint also holds the rollout buffer, the KL coefficient and the eval
baseline, and a run resumes exactly even in the middle of an iteration.

The value model is a value head on the policy (one linear layer on the last
hidden state, trunk shared), not a copy of the reward model (InstructGPT's
choice). The reward model reads its own tokenizer's tokens (MiniLM
WordPiece) while PPO needs one value per POLICY token (SmolLM2 BPE): a value
model initialised from it would need an alignment between two vocabularies,
a third transformer in memory and a third forward pass per update on CPU.
The head gets its values from the same forward as the log-probs. Its cost is
that value gradients also move the trunk; ``vf_coef`` (0.1, as in TRL's
original shared-trunk PPO) keeps that small. The head starts at zero.

The frozen reference is a copy of the initial policy, or with LoRA the same
weights with the adapters disabled (peft ``disable_adapter``): no model copy.
Dropout is switched off in the policy: rollout and update must evaluate the
same function, else the ratio is not 1 on the first minibatch.

Metrics (DESIGN.md names, logged with the loop's ``train/`` prefix; the
rollout ones are constant over an iteration's optimizer steps):
``completions/{mean,p90,max}_length`` (completion tokens without the stop
token), ``completions/clipped_ratio`` (no EOS within max_new_tokens),
``objective/scores`` (raw reward-model scores), ``objective/kl`` (sequence
k1 sum), ``objective/kl_k3``, ``objective/rlhf_reward`` (score after the EOS
penalty minus beta * KL), ``objective/score_len_corr``, ``objective/kl_coef``,
``alarm/negative_kl`` (1 when the batch's mean k1 KL is negative: a
sampling/log-prob mismatch, or noise when it is tiny),
``val/explained_variance``, ``rollout/tokens_per_s``; per update
``policy/{approxkl,clipfrac,entropy}``, ``val/{clipfrac,ratio,error}``,
``loss/{policy,value}``. Evaluation (``eval/``): the fixed eval prompts are
sampled with a fixed seed; ``nrg_ratio`` compares them with the initial
policy's completions (formula in ``ppo_rollout.nrg_ratio``).
"""
from __future__ import annotations

import copy
import json
import logging
import math
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from training.callbacks import RunHooks
from training.config import PPOConfig
from training.losses import ppo_policy_loss, ppo_value_loss
from training.ops import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    explained_variance,
    gae_advantages,
    kl_estimate,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
)
from training.trainers.base import RunResult, Trainer, prepare_model, seed_everything
from training.trainers.ppo_rollout import (
    PolicyWithValueHead,
    Scorer,
    disable_dropout,
    episode_tensors,
    nrg_ratio,
    pearson,
    sample_completions,
    stop_token_ids,
    trim_batch,
)

log = logging.getLogger(__name__)


class PPOTrainer(Trainer):
    config: PPOConfig
    data_parallel = True  # the update runs through self.train_model; rollouts: see epoch_plan

    def __init__(
        self, config: PPOConfig, *, prompts: Sequence[str], scorer: Scorer, out_dir: str | Path,
        hooks: RunHooks | None = None, eval_prompts: Sequence[str] | None = None, policy: Any = None,
        tokenizer: Any = None,
    ) -> None:
        from training.policy import PairEncoder, load_policy, load_tokenizer

        super().__init__(config, out_dir=out_dir, hooks=hooks)
        seed_everything(config.seed)  # the value head and LoRA init depend on it
        if policy is None or tokenizer is None:
            policy, tokenizer = load_policy(config.model), load_tokenizer(config.model)
        self.tokenizer, self.scorer = tokenizer, scorer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.encoder = PairEncoder(tokenizer, max_length=config.max_prompt_length)
        self.stop_ids = stop_token_ids(tokenizer, policy, self.encoder)
        self.uses_lora = config.lora_r > 0
        # Without LoRA the reference is a frozen copy; with LoRA it is the base with adapters off.
        self.ref = None if self.uses_lora else copy.deepcopy(policy).to(self.device).eval().requires_grad_(False)
        # (the copy keeps its dropout modules; eval() turns them off)
        self.model = PolicyWithValueHead(prepare_model(policy, config, task_type="CAUSAL_LM"))
        disable_dropout(self.model)  # after prepare_model: LoRA brings its own dropout modules
        self.train_prompts, self.eval_prompts = self._split_prompts(list(prompts), eval_prompts)
        self.train_ids = [self._encode_prompt(p) for p in self.train_prompts]
        self.eval_ids = [self._encode_prompt(p) for p in self.eval_prompts]
        self.kl_ctl: FixedKLController | AdaptiveKLController = (
            AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon) if config.adaptive_kl
            else FixedKLController(config.kl_coef))
        self.buffer: dict[str, Tensor] = {}
        self.rollout_metrics: dict[str, float] = {}
        self.baseline: dict[str, list[float]] | None = None  # the initial policy on the eval prompts
        self.history: list[dict[str, float]] = []  # rollout and eval summaries, for ppo_report.json
        self.stats = {"episodes": 0.0, "generated_tokens": 0.0, "generate_s": 0.0, "rollout_s": 0.0}

    # --- prompts ------------------------------------------------------------------------------------
    def _split_prompts(self, prompts: list[str], eval_prompts: Sequence[str] | None) -> tuple[list[str], list[str]]:
        if eval_prompts is not None:
            return prompts, list(eval_prompts)[: self.config.eval_prompts]
        n_eval = min(self.config.eval_prompts, len(prompts) // 2)  # never starve training
        order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(self.config.seed)).tolist()
        held = set(order[:n_eval])
        return [p for i, p in enumerate(prompts) if i not in held], [prompts[i] for i in order[:n_eval]]

    def _encode_prompt(self, prompt: str) -> list[int]:
        ids = self.tokenizer(self.encoder.prompt_text(prompt), add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"prompt {prompt[:60]!r} encodes to no tokens")
        return list(ids)[-self.config.max_prompt_length:]  # keep the turn being answered

    def _prompt_indices(self, iteration: int) -> list[int]:
        """Episodes of an iteration: consecutive slices of seeded permutations of the train prompts
        (a function of the iteration only, so a resumed run samples the same prompts)."""
        n, size = len(self.train_prompts), self.config.rollout_batch_size
        out = []
        for q in range(iteration * size, (iteration + 1) * size):
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed * 7919 + q // n))
            out.append(int(perm[q % n]))
        return out

    # --- what the loop calls ----------------------------------------------------------------------
    def num_train_examples(self) -> int:
        return self.config.rollout_batch_size

    def total_steps(self) -> int:
        return self.config.optimizer_steps()

    def epoch_plan(self, epoch: int) -> list[list[int]]:
        """One PPO iteration: roll out with the current policy, then plan ppo_epochs shuffled passes.

        N processes: each rank samples its strided share of the prompts, every rank scores the gathered
        rollout, and rank 0's buffer is broadcast (identical episodes everywhere); rank 0 alone evaluates,
        so it alone samples the baseline."""
        self.model.eval()
        with torch.no_grad(), self.autocast():
            if self.baseline is None and self.eval_ids and self.dist.is_main:
                self.baseline = self._sample_eval()
            rollout = self._rollout(epoch)
            self.buffer, self.rollout_metrics, self.kl_ctl.value = self.dist.broadcast(
                (*rollout, self.kl_ctl.value))
        self.model.train()
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        size, bs = self.config.rollout_batch_size, self.config.batch_size
        plan = []
        for _ in range(self.config.ppo_epochs):
            perm = torch.randperm(size, generator=generator).tolist()
            plan += [perm[s:s + bs] for s in range(0, size, bs)]
        return plan

    def collate(self, indices: Sequence[int]) -> dict[str, Any]:
        index = torch.tensor(list(indices), dtype=torch.long)
        return trim_batch({k: v[index] for k, v in self.buffer.items()})

    def compute_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.config
        mask = batch["mask"]  # [b, T]
        logits, values = self.train_model(batch["input_ids"], batch["attention_mask"], batch["position_ids"],
                                          n_completion=mask.shape[1], temperature=cfg.temperature)
        logprobs = logprobs_from_logits(logits, batch["input_ids"][:, -mask.shape[1]:])  # [b, T]
        pg_loss, pg_metrics = ppo_policy_loss(logprobs, batch["old_logprobs"], batch["advantages"], mask,
                                              clip_range=cfg.clip_range)
        vf_loss, vf_metrics = ppo_value_loss(values, batch["old_values"], batch["returns"], mask,
                                             clip_range_value=cfg.clip_range_value)
        loss = pg_loss + cfg.vf_coef * vf_loss
        with torch.no_grad():
            entropy = masked_mean(entropy_from_logits(logits), mask)
        rollout = {k: torch.tensor(v, dtype=torch.float32) for k, v in self.rollout_metrics.items()}
        return loss, {"loss": loss.detach(), **pg_metrics, **vf_metrics, "policy/entropy": entropy, **rollout}

    # --- rollout ----------------------------------------------------------------------------------
    def _forward_no_grad(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(logprobs, ref_logprobs, values), each [B, T], in micro-batches of batch_size."""
        cfg, width = self.config, batch["mask"].shape[1]
        logps, ref_logps, values = [], [], []
        for start in range(0, batch["input_ids"].shape[0], cfg.batch_size):
            part = {k: v[start:start + cfg.batch_size].to(self.device) for k, v in batch.items()}
            args = (part["input_ids"], part["attention_mask"], part["position_ids"])
            tokens = part["input_ids"][:, -width:]
            logits, value = self.model(*args, n_completion=width, temperature=cfg.temperature)
            logps.append(logprobs_from_logits(logits, tokens))
            values.append(value)
            ref_logits = self._ref_logits(*args, n_completion=width)
            ref_logps.append(logprobs_from_logits(ref_logits / cfg.temperature, tokens))
        return torch.cat(logps), torch.cat(ref_logps), torch.cat(values)

    def _ref_logits(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, *,
                    n_completion: int) -> Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
                  "logits_to_keep": n_completion + 1, "use_cache": False}
        if self.ref is not None:
            return self.ref(**kwargs).logits[:, :-1].float()
        with self.model.policy.disable_adapter():  # LoRA: the base weights are the reference
            return self.model.policy(**kwargs).logits[:, :-1].float()

    def _generate(self, prompt_ids: Sequence[Sequence[int]], *,
                  spread: bool = False) -> tuple[list[list[int]], list[bool], list[str]]:
        """(completion ids incl. the stop token, finished flags, decoded text without the stop token).
        spread=True (rollouts): each rank samples its strided share and every rank gets all of them."""
        cfg = self.config
        started = time.perf_counter()
        gen = sample_completions(
            self.model.policy, self.dist.split(prompt_ids) if spread else prompt_ids, pad_id=self.pad_id,
            stop_ids=self.stop_ids, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
            top_p=cfg.top_p, batch_size=cfg.generation_batch_size, device=self.device)
        rows = list(zip(gen.completion_ids, gen.finished, strict=True))
        if spread:
            rows = self.dist.unsplit(rows)  # every rank's share, back in prompt order
        completion_ids, finished = [c for c, _ in rows], [done for _, done in rows]
        self.stats["generate_s"] += time.perf_counter() - started
        self.stats["generated_tokens"] += sum(len(c) for c in completion_ids)
        content = [c[:-1] if done else c for c, done in zip(completion_ids, finished, strict=True)]
        texts = self.tokenizer.batch_decode(content, skip_special_tokens=True)
        return completion_ids, finished, texts

    def _rollout(self, iteration: int) -> tuple[dict[str, Tensor], dict[str, float]]:
        cfg = self.config
        started = time.perf_counter()
        indices = self._prompt_indices(iteration)
        prompts = [self.train_prompts[i] for i in indices]
        prompt_ids = [self.train_ids[i] for i in indices]
        completion_ids, finished, texts = self._generate(prompt_ids, spread=True)
        lengths = [len(c) - int(done) for c, done in zip(completion_ids, finished, strict=True)]
        raw_scores = self.scorer(prompts, texts, [c[:len(c) - int(d)] for c, d in zip(completion_ids, finished,
                                                                                         strict=True)]).float()
        done = torch.tensor(finished)
        scores = raw_scores.clone()
        if cfg.missing_eos_penalty is not None:
            scores[~done] -= cfg.missing_eos_penalty
        batch = episode_tensors(prompt_ids, completion_ids, pad_id=self.pad_id)
        logprobs, ref_logprobs, values = (t.float().cpu() for t in self._forward_no_grad(batch))
        mask = batch["mask"]  # [B, T]
        k1 = kl_estimate(logprobs, ref_logprobs, kind="k1") * mask
        k3 = kl_estimate(logprobs, ref_logprobs, kind="k3") * mask
        beta = self.kl_ctl.value
        rewards = -beta * k1  # [B, T]: the KL penalty on every token...
        last = mask.sum(1).long() - 1
        rewards[torch.arange(len(last)), last] += scores  # ...and the score on the last one
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        values = values * mask
        advantages, returns = gae_advantages(rewards, values, mask, gamma=cfg.gamma, lam=cfg.lam)
        advantages = masked_whiten(advantages, mask)
        kl_seq, k3_seq = k1.sum(1), k3.sum(1)  # [B]
        mean_kl = float(kl_seq.mean())
        if mean_kl < 0:
            log.warning("PPO iteration %d: mean KL(pi||ref) estimate %.4f < 0: samples and log-probs disagree "
                        "(top_p < 1? a generation bug?) or the KL is ~0 and noisy", iteration, mean_kl)
        self.kl_ctl.update(mean_kl, n_steps=len(prompts))
        lens = np.asarray(lengths, dtype=np.float64)
        metrics = {
            "completions/mean_length": float(lens.mean()),
            "completions/p90_length": float(np.percentile(lens, 90)),
            "completions/max_length": float(lens.max()),
            "completions/clipped_ratio": 1.0 - float(done.float().mean()),
            "objective/scores": float(raw_scores.mean()),
            "objective/kl": mean_kl,
            "objective/kl_k3": float(k3_seq.mean()),
            "objective/rlhf_reward": float((scores - beta * kl_seq).mean()),
            "objective/score_len_corr": pearson(raw_scores.tolist(), lengths),
            "objective/kl_coef": beta,
            "alarm/negative_kl": float(mean_kl < 0),
            "val/explained_variance": float(explained_variance(values, returns, mask)),
            "rollout/tokens_per_s": float(mask.sum()) / max(time.perf_counter() - started, 1e-9),
        }
        self.stats["episodes"] += len(prompts)
        self.stats["rollout_s"] += time.perf_counter() - started
        self.history.append({"iteration": iteration, **metrics})
        buffer = {**batch, "old_logprobs": logprobs, "old_values": values, "advantages": advantages,
                  "returns": returns}
        return buffer, metrics

    # --- evaluation, checkpoints, outputs ---------------------------------------------------------
    def _sample_eval(self) -> dict[str, list[float]]:
        """Completions of the eval prompts with a fixed seed, their scores and lengths."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the training RNG stream is untouched
            torch.manual_seed(self.config.eval_seed)
            completion_ids, finished, texts = self._generate(self.eval_ids)
        lengths = [len(c) - int(d) for c, d in zip(completion_ids, finished, strict=True)]
        content = [c[:n] for c, n in zip(completion_ids, lengths, strict=True)]
        scores = self.scorer(self.eval_prompts, texts, content).float().tolist()
        return {"scores": scores, "lengths": [float(n) for n in lengths], "finished": [float(d) for d in finished]}

    def evaluate(self) -> dict[str, float]:
        if not self.eval_ids:
            return {}
        now = self._sample_eval()
        base = self.baseline or now
        lens = np.asarray(now["lengths"])
        metrics = {
            "score_mean": float(np.mean(now["scores"])), "len_mean": float(lens.mean()),
            "len_p90": float(np.percentile(lens, 90)), "clipped_ratio": 1.0 - float(np.mean(now["finished"])),
            "init_score_mean": float(np.mean(base["scores"])), "init_len_mean": float(np.mean(base["lengths"])),
            "score_len_corr": pearson(now["scores"], now["lengths"]),
            **nrg_ratio(base["scores"], [int(n) for n in base["lengths"]], now["scores"],
                        [int(n) for n in now["lengths"]], bucket_tokens=self.config.nrg_bucket_tokens),
        }
        self.history.append({"eval_after_iterations": sum("iteration" in h for h in self.history), **metrics})
        return metrics

    def extra_state(self) -> dict[str, Any]:
        return {"buffer": self.buffer, "rollout_metrics": self.rollout_metrics, "kl_coef": self.kl_ctl.value,
                "baseline": self.baseline, "history": self.history, "stats": self.stats}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.buffer, self.rollout_metrics = state["buffer"], state["rollout_metrics"]
        self.kl_ctl.value, self.baseline = state["kl_coef"], state["baseline"]
        self.history, self.stats = state["history"], state["stats"]

    def save_outputs(self, eval_metrics: dict[str, float]) -> None:
        from safetensors.torch import save_file

        policy = self.model.policy.merge_and_unload() if self.uses_lora else self.model.policy
        policy.save_pretrained(self.out_dir)  # loads with AutoModelForCausalLM
        self.tokenizer.save_pretrained(self.out_dir)
        head = self.model.value_head
        save_file({"weight": head.weight.detach().cpu().contiguous(), "bias": head.bias.detach().cpu()},
                  str(self.out_dir / "value_head.safetensors"))
        clean = lambda d: {k: (v if isinstance(v, float) and math.isfinite(v) else None)  # noqa: E731
                           if isinstance(v, float) else v for k, v in d.items()}
        report = {"eval": clean(eval_metrics), "history": [clean(h) for h in self.history],
                  "final_kl_coef": self.kl_ctl.value, "stats": self.stats,
                  "lengths_unit": "completion tokens of the policy, stop token excluded"}
        (self.out_dir / "ppo_report.json").write_text(json.dumps(report, indent=2) + "\n")


def run(
    config: PPOConfig, *, prompts: Sequence[str], out_dir: str | Path, eval_prompts: Sequence[str] | None = None,
    hooks: RunHooks | None = None, resume_from: str | Path | None = None, data_info: dict[str, Any] | None = None,
    scorer: Scorer | None = None, policy: Any = None, tokenizer: Any = None,
) -> RunResult:
    """Train a policy with PPO: the single entry point of the `train ppo` command and the Celery task.

    ``scorer`` defaults to the reward model in ``config.reward_model``. Writes
    run_config.json, metrics.jsonl, ppo_report.json, value_head.safetensors
    and the policy + tokenizer (``save_pretrained``) into ``out_dir``.
    """
    import transformers

    from training.trainers.base import resolve_device
    from training.trainers.ppo_rollout import RewardModelScorer

    if scorer is None:
        if not config.reward_model:
            raise ValueError("PPO needs a reward model: set reward_model (--reward-model DIR)")
        scorer = RewardModelScorer(config.reward_model, device=resolve_device(config.device),
                                   max_length=config.reward_max_length, batch_size=config.reward_batch_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trainer = PPOTrainer(config, prompts=prompts, scorer=scorer, out_dir=out, hooks=hooks,
                         eval_prompts=eval_prompts, policy=policy, tokenizer=tokenizer)
    run_config = {
        "kind": config.kind, "config": config.to_dict(), "data": data_info or {},
        "n_train_prompts": len(trainer.train_prompts), "n_eval_prompts": len(trainer.eval_prompts),
        "total_steps": trainer.total_steps(), "device": str(trainer.device), "bf16": trainer.use_bf16,
        "world_size": trainer.dist.world_size, "resumed_from": str(resume_from or ""),
        "stop_token_ids": trainer.stop_ids,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
    }
    if trainer.dist.is_main:  # one writer in a multi-process run
        (out / "run_config.json").write_text(json.dumps(run_config, indent=2) + "\n")
    return trainer.fit(resume_from=resume_from)


def run_registry(
    config: PPOConfig, *, train_pairs: Sequence[str], out_dir: str | Path, eval_pairs: Sequence[str] | None = None,
    hooks: RunHooks | None = None, resume_from: str | Path | None = None, data_info: dict[str, Any] | None = None,
) -> RunResult:
    """`run` under `training.registry`'s calling convention, where PPO's kind resolves its data
    spec to prompts (`resolve_prompts`): ``train_pairs`` / ``eval_pairs`` are prompt strings."""
    return run(config, prompts=train_pairs, eval_prompts=eval_pairs, out_dir=out_dir, hooks=hooks,
               resume_from=resume_from, data_info=data_info)
