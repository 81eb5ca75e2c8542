"""Direct preference optimisation (and IPO, SLiC hinge, R-DPO, SimPO) on the shared loop.

The policy is a causal LM (default: the packaged SmolLM2-135M-Instruct, see
`training/policy.py`); the loss is `training.losses.dpo_loss`. Design points:

- Reference log-probs are PRECOMPUTED in one pass over the data before
  training (default), with the initial weights: no second model is kept in
  memory and each step does one forward pass. `reference="live"` keeps a
  frozen copy instead (or, with LoRA, the base with adapters disabled).
- Chosen and rejected completions of a micro-batch go through ONE forward
  pass, padding-free: the 2B sequences are packed into one row with
  restarted position ids (`training/packing.py`); only the logits that
  predict completion tokens are computed. A model whose attention does not
  keep packed sequences apart is detected at start and padded instead.
- The prompt goes through the tokenizer's chat template; completions end
  with the end-of-turn token.
- Diagnostics (DESIGN.md names): `logps/*`, `logps_per_token/*` and
  `rewards/*` every step; at each evaluation the eval pairs' accuracy split
  by chosen-longer / chosen-shorter, `margin_len_corr` (Pearson correlation
  of the implicit-reward margin with the length gap, in completion tokens as
  scored), and the generation probe `gen/*` (`training/generation.py`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from training.callbacks import RunHooks
from training.config import DPOConfig
from training.data import PreferencePair, split_by_prompt
from training.diagnostics import reward_length_report, scalar_metrics
from training.generation import GenerationProbe, Generations, score
from training.losses import dpo_loss
from training.packing import (
    TokenBatch,
    enable_packed_attention,
    pack,
    packing_supported,
    pad,
    sequence_logps,
)
from training.policy import (
    EncodedPair,
    PairEncoder,
    disable_dropout,
    load_policy,
    load_tokenizer,
    pair_prompt,
    stop_token_ids,
)
from training.trainers.base import RunResult, Trainer, iter_chunks, prepare_model, seed_everything

_TOKEN_FIELDS = ("input_ids", "position_ids", "attention_mask", "target_pos", "target_ids",
                 "target_seq", "seq_lens", "completion_lens")
Scorer = Callable[[list[list[int]], list[list[int]]], list[float]]


def _flat(pairs: Tensor) -> Tensor:
    """[N, 2] (chosen, rejected) -> [2N]: the N chosen, then the N rejected (the batch layout)."""
    return torch.cat([pairs[:, 0], pairs[:, 1]])


class DPOTrainer(Trainer):
    config: DPOConfig
    data_parallel = True  # compute_loss runs the policy through self.train_model

    def __init__(
        self, config: DPOConfig, *, train_pairs: Sequence[PreferencePair],
        eval_pairs: Sequence[PreferencePair], out_dir: str | Path, hooks: RunHooks | None = None,
        model: Any = None, tokenizer: Any = None,
    ) -> None:
        super().__init__(config, out_dir=out_dir, hooks=hooks)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(config.seed)  # LoRA init depends on it
        injected = model is not None
        if model is None or tokenizer is None:
            model, tokenizer = load_policy(config.model), load_tokenizer(config.model)
        disable_dropout(model)  # dropout would make policy != reference at step 0
        model.to(self.device)
        self.tokenizer = tokenizer
        self.encoder = PairEncoder(tokenizer, max_length=config.max_length)
        encode = lambda p: self.encoder.encode(pair_prompt(p), p.chosen, p.rejected)  # noqa: E731
        self.train_data = [encode(p) for p in train_pairs]
        self.eval_data = [encode(p) for p in eval_pairs]
        pad_id = tokenizer.pad_token_id
        self.pad_id = tokenizer.eos_token_id if pad_id is None else pad_id
        if config.packing:
            enable_packed_attention(model)
        vocab = model.config.vocab_size
        self.packed = config.packing and packing_supported(model, vocab_size=vocab)
        self.uses_lora = config.lora_r > 0
        self.reference_free = config.variant == "simpo"
        self.use_live = config.reference == "live" and not self.reference_free
        # Live reference: a frozen copy; with LoRA the base model with adapters off (no copy).
        self.live_ref = None
        if self.use_live and not self.uses_lora:
            self.live_ref = copy.deepcopy(model).eval().requires_grad_(False)
        self.ref_logps: dict[str, Tensor] = {}  # split -> [N, 2] (chosen, rejected)
        started = time.perf_counter()
        if not self.use_live and not self.reference_free:
            self.ref_logps = self._cached("reference_logps.pt", lambda: {
                "train": self._score_pairs(model, self.train_data),
                "eval": self._score_pairs(model, self.eval_data)})
        self.timings = {"reference_s": time.perf_counter() - started}  # the one reference pass
        # Evaluation runs on rank 0 only (see trainers/base.py), so only rank 0 needs the probe.
        self.probe = self._make_probe(model) if self.dist.is_main else None
        # Where the probe finds the reference for gen/kl_seq when none is in memory (precomputed,
        # no LoRA): the model's source; an injected model's initial weights are saved here once.
        self._ref_source: str | None = None
        if self.probe is not None and not self.use_live and not self.uses_lora:
            self._ref_source = str(self.out_dir / ".reference") if injected else config.model
            if injected:
                model.save_pretrained(self._ref_source)
        self.model = prepare_model(model, config, task_type="CAUSAL_LM")
        self.last_report: dict[str, Any] = {}

    # --- data -----------------------------------------------------------------------------
    def _fingerprint(self) -> str:
        """What the cached reference values depend on: the model, the settings, the token ids."""
        cfg = self.config
        h = hashlib.sha256(json.dumps([cfg.model, cfg.max_length, cfg.probe_prompts,
                                       cfg.probe_max_new_tokens, cfg.probe_temperature,
                                       cfg.probe_seed, self.packed]).encode())
        for d in (*self.train_data, *self.eval_data):
            h.update(json.dumps([d.prompt, d.chosen, d.rejected]).encode())
        return h.hexdigest()

    def _cached(self, name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Values of the initial weights, kept in the run folder: a resumed run reuses them.

        Rank 0 writes the file (to a temporary name, then renamed, so another rank never reads
        half a file); the other ranks of a multi-process run read it or compute their own.
        """
        path, key = self.out_dir / name, self._fingerprint()
        if path.is_file():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("fingerprint") == key:
                return saved["values"]
        values = compute()
        if self.dist.is_main:
            tmp = path.with_name(f".{name}.tmp")
            torch.save({"fingerprint": key, "values": values}, tmp)
            tmp.replace(path)
        return values

    def _token_batch(self, pairs: Sequence[EncodedPair]) -> TokenBatch:
        """2B sequences: the B chosen, then the B rejected, sharing their prompts."""
        prompts = [p.prompt for p in pairs] * 2
        completions = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        if self.packed:
            return pack(prompts, completions)
        return pad(prompts, completions, pad_id=self.pad_id)

    def num_train_examples(self) -> int:
        return len(self.train_data)

    def example_lengths(self) -> Sequence[int] | None:
        # Packed batches have no padding to save; padded ones gain from length bucketing.
        if self.packed:
            return None
        return [len(d.prompt) + max(len(d.chosen), len(d.rejected)) for d in self.train_data]

    def collate(self, indices: Sequence[int]) -> dict[str, Any]:
        batch = self._token_batch([self.train_data[i] for i in indices])
        out = {k: getattr(batch, k) for k in _TOKEN_FIELDS if getattr(batch, k) is not None}
        if self.ref_logps:
            out["ref_logps"] = _flat(self.ref_logps["train"][list(indices)])  # [2B]
        return out

    # --- log-probs and the loss -----------------------------------------------------------
    def _reference_logps(self, batch: TokenBatch) -> Tensor:
        """Live reference log-probs [2B] (no grad)."""
        with torch.no_grad():
            if self.live_ref is not None:
                return sequence_logps(self.live_ref, batch)
            with self.model.disable_adapter():  # LoRA: the base weights are the reference
                return sequence_logps(self.model, batch)

    @torch.no_grad()
    def _score_pairs(self, model: nn.Module, data: Sequence[EncodedPair]) -> Tensor:
        """Log-probs of every pair under `model`, [N, 2], in one pass (length-sorted batches)."""
        out = torch.zeros(len(data), 2)
        was_training = model.training
        model.eval()
        order = sorted(range(len(data)), key=lambda i: -len(data[i].prompt) - len(data[i].chosen))
        for chunk in iter_chunks(order, self.config.eval_batch_size):
            batch = self._token_batch([data[i] for i in chunk]).to(self.device)
            with self.autocast():
                logps = sequence_logps(model, batch).float().cpu()  # [2b]
            out[list(chunk)] = torch.stack(logps.chunk(2), dim=1)
        model.train(was_training)
        return out

    def compute_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        tokens = TokenBatch(**{k: batch.get(k) for k in _TOKEN_FIELDS})
        logps = sequence_logps(self.train_model, tokens)  # [2B]; the DDP wrapper when N > 1
        if self.reference_free:
            ref = None
        elif self.use_live:
            ref = self._reference_logps(tokens)
        else:
            ref = batch["ref_logps"]
        return self._loss(logps, ref, tokens.completion_lens)

    def _loss(self, logps: Tensor, ref: Tensor | None,
              lens: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """dpo_loss on [2B] log-probs (chosen then rejected), plus the logps diagnostics."""
        cfg = self.config
        pc, pr = logps.chunk(2)  # [B], [B]
        rc, rr = ref.chunk(2) if ref is not None else (None, None)
        lc, lr = lens.chunk(2)
        loss, metrics = dpo_loss(pc, pr, rc, rr, beta=cfg.beta, variant=cfg.variant,
                                 label_smoothing=cfg.label_smoothing, alpha=cfg.alpha,
                                 chosen_lengths=lc, rejected_lengths=lr, gamma=cfg.gamma)
        with torch.no_grad():
            metrics |= {
                "logps/chosen": pc.mean(), "logps/rejected": pr.mean(),
                "logps_per_token/chosen": (pc / lc.clamp(min=1)).mean(),
                "logps_per_token/rejected": (pr / lr.clamp(min=1)).mean(),
                "len/chosen": lc.float().mean(), "len/rejected": lr.float().mean(),
            }
        return loss, {k: v.detach() for k, v in metrics.items()}

    # --- evaluation -----------------------------------------------------------------------
    def _make_probe(self, model: nn.Module) -> GenerationProbe | None:
        """Fixed prompts (distinct, eval prompts first) and the reference's cached samples."""
        cfg = self.config
        if cfg.probe_prompts == 0:
            return None
        prompts: list[list[int]] = []
        for d in (*self.eval_data, *self.train_data):
            if d.prompt not in prompts and len(prompts) < cfg.probe_prompts:
                prompts.append(d.prompt)
        stops = stop_token_ids(self.tokenizer, model, self.encoder)
        probe = GenerationProbe(prompts, stop_ids=stops, pad_id=self.pad_id,
                                max_new_tokens=cfg.probe_max_new_tokens,
                                temperature=cfg.probe_temperature, seed=cfg.probe_seed,
                                batch_size=cfg.eval_batch_size)

        def sample_reference() -> dict[str, Any]:
            model.eval()
            with self.autocast():
                generations = probe.cache_reference(model)
            model.train()
            return generations.to_dict()

        cached = self._cached("probe_reference.pt", sample_reference)
        probe.reference = Generations.from_dict(cached)
        return probe

    def _probe_reference(self) -> tuple[Scorer, Any]:
        """(scorer, context) giving log pi_ref of the probe's samples, no reference kept around."""
        if self.live_ref is not None:
            return (lambda p, c: score(self.live_ref, p, c)), nullcontext()
        if self.uses_lora:
            return (lambda p, c: score(self.model, p, c)), self.model.disable_adapter()
        ref = load_policy(self._ref_source).to(self.device).eval()  # freed after the probe
        if self.packed:
            enable_packed_attention(ref)
        return (lambda p, c: score(ref, p, c)), nullcontext()

    def evaluate(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.eval_data:
            metrics |= self._evaluate_pairs()
        if self.probe is not None:
            scorer, context = self._probe_reference()

            def reference_scores(p: list[list[int]], c: list[list[int]]) -> list[float]:
                with context:
                    return scorer(p, c)

            metrics |= self.probe.run(self.model, reference_scores)
            after = {k: v for k, v in metrics.items() if k.startswith("gen/")}
            self.last_report["probe"] = {"before": self.probe.reference.stats(), "after": after}
        return metrics

    def _evaluate_pairs(self) -> dict[str, float]:
        data = self.eval_data
        policy = self._score_pairs(self.model, data)  # [N, 2]
        ref: Tensor | None = None
        if self.ref_logps:
            ref = self.ref_logps["eval"]
        elif not self.reference_free:
            ref = torch.zeros(len(data), 2)
            for chunk in iter_chunks(list(range(len(data))), self.config.eval_batch_size):
                batch = self._token_batch([data[i] for i in chunk]).to(self.device)
                ref[list(chunk)] = torch.stack(self._reference_logps(batch).cpu().chunk(2), dim=1)
        lens = torch.tensor([[len(d.chosen), len(d.rejected)] for d in data])  # [N, 2]
        _, values = self._loss(_flat(policy), None if ref is None else _flat(ref), _flat(lens))
        out = {k: float(v) for k, v in values.items()}
        beta = self.config.beta
        # Implicit rewards: beta * log-ratio; simpo's is the length-normalised log-prob.
        rewards = beta * policy / lens.clamp(min=1) if ref is None else beta * (policy - ref)
        report = reward_length_report(rewards[:, 0].tolist(), rewards[:, 1].tolist(),
                                      lens[:, 0].tolist(), lens[:, 1].tolist())
        self.last_report |= {"lengths_unit": "completion tokens (as scored)", "pairs": report}
        # accuracy, acc_chosen_longer/shorter, length_flip_gap, acc_over_length_heuristic, ...
        # of the implicit reward; its pair_len_corr IS DPO's margin_len_corr.
        out |= scalar_metrics(report)
        if report.get("pair_len_corr") is not None:
            out["margin_len_corr"] = float(report["pair_len_corr"])
        return out

    # --- outputs --------------------------------------------------------------------------
    def save_outputs(self, eval_metrics: dict[str, float]) -> None:
        # A plain transformers model either way (LoRA adapters merged into the base weights).
        model = self.model.merge_and_unload() if self.uses_lora else self.model
        model.save_pretrained(self.out_dir)
        self.tokenizer.save_pretrained(self.out_dir)
        report = {"variant": self.config.variant, "beta": self.config.beta,
                  "packed": self.packed, "eval": eval_metrics, **self.last_report}
        (self.out_dir / "eval_report.json").write_text(json.dumps(report, indent=2) + "\n")
        shutil.rmtree(self.out_dir / ".reference", ignore_errors=True)


def run(
    config: DPOConfig, *, train_pairs: Sequence[PreferencePair], out_dir: str | Path,
    eval_pairs: Sequence[PreferencePair] | None = None, hooks: RunHooks | None = None,
    resume_from: str | Path | None = None, data_info: dict[str, Any] | None = None,
    model: Any = None, tokenizer: Any = None,
) -> RunResult:
    """Train a DPO policy: the single entry point of the `train` command and the Celery task.

    Without `eval_pairs`, `config.eval_fraction` of the pairs is held out by
    prompt. Writes run_config.json, metrics.jsonl, eval_report.json and the
    policy + tokenizer (`save_pretrained`; loads with AutoModelForCausalLM).
    """
    import transformers

    if eval_pairs is None:
        train_pairs, eval_pairs = split_by_prompt(train_pairs, eval_fraction=config.eval_fraction,
                                                  seed=config.seed)
    out = Path(out_dir)
    started = time.perf_counter()
    trainer = DPOTrainer(config, train_pairs=train_pairs, eval_pairs=eval_pairs, out_dir=out,
                         hooks=hooks, model=model, tokenizer=tokenizer)
    run_config = {
        "kind": config.kind, "config": config.to_dict(), "data": data_info or {},
        "n_train": len(trainer.train_data), "n_eval": len(trainer.eval_data),
        "total_steps": trainer.total_steps(), "device": str(trainer.device),
        "bf16": trainer.use_bf16, "packed": trainer.packed, "world_size": trainer.dist.world_size,
        "setup_s": round(time.perf_counter() - started, 3), **trainer.timings,
        "resumed_from": str(resume_from or ""),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
    }
    if trainer.dist.is_main:  # one writer in a multi-process run
        (out / "run_config.json").write_text(json.dumps(run_config, indent=2) + "\n")
    return trainer.fit(resume_from=resume_from)
