"""Bradley-Terry reward model on the shared loop.

A sequence classifier with one output (``AutoModelForSequenceClassification``,
``num_labels=1``) scores prompt + response; the loss is
`training.losses.bradley_terry_loss`. Design points:

- Chosen and rejected go through ONE forward pass: the micro-batch is the B
  chosen sequences followed by the B rejected ones ([2B, T]).
- Length bucketing (`plan_batches`) keeps pairs of similar length together,
  so little compute goes to padding (encoders such as MiniLM have no
  padding-free attention path).
- Tokenisation never relies on an EOS token (MiniLM has none): a pair is
  encoded with the tokenizer's own pair template ([CLS] prompt [SEP] response
  [SEP] for BERT) or, when the tokenizer has a chat template, as a chat.
  Over-long inputs lose the START of the prompt first; the response keeps at
  least half of the budget.
- Lengths in diagnostics are completion tokens before truncation.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from training.callbacks import RunHooks
from training.config import RewardConfig
from training.data import PreferencePair, hh_to_messages, split_by_prompt
from training.diagnostics import reward_length_report, scalar_metrics
from training.losses import bradley_terry_loss
from training.models_hub import resolve_model
from training.trainers.base import (
    RunResult,
    Trainer,
    iter_chunks,
    param_groups,
    prepare_model,
    seed_everything,
)

# Module names of the freshly initialised reward head (BERT-like: classifier; decoders: score).
_HEAD_NAMES = frozenset({"classifier", "score"})
# Config attributes that hold dropout probabilities, across common architectures.
_DROPOUT_ATTRS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout",
    "dropout",
    "attention_dropout",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "summary_first_dropout",
)


@dataclass(frozen=True)
class PairTemplate:
    """Special tokens around (prompt, response): prefix + prompt + middle + response + suffix."""

    prefix: list[int]
    middle: list[int]
    suffix: list[int]
    prompt_type: int  # token_type_id of prefix + prompt + middle
    response_type: int  # token_type_id of response + suffix
    uses_types: bool  # the tokenizer produces token_type_ids (BERT) -> pass them to the model

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> PairTemplate:
        """Learn the template by encoding two known texts and finding them again."""
        if getattr(tokenizer, "chat_template", None):
            return cls([], [], [], 0, 0, False)  # the chat template writes every special token
        a = tokenizer("a", add_special_tokens=False)["input_ids"]
        b = tokenizer("b", add_special_tokens=False)["input_ids"]
        enc = tokenizer("a", "b")
        ids = list(enc["input_ids"])
        i = _find(ids, a, 0)
        j = _find(ids, b, i + len(a)) if i >= 0 else -1
        if j < 0:  # no pair template: encode one sequence, the response right after the prompt
            enc = tokenizer("a")
            ids = list(enc["input_ids"])
            i = max(0, _find(ids, a, 0))
            return cls(ids[:i], [], ids[i + len(a) :], 0, 0, False)
        types = list(enc.get("token_type_ids") or [0] * len(ids))
        return cls(
            ids[:i],
            ids[i + len(a) : j],
            ids[j + len(b) :],
            types[i],
            types[j],
            "token_type_ids" in enc,
        )

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def _find(haystack: list[int], needle: list[int], start: int) -> int:
    for k in range(start, len(haystack) - len(needle) + 1):
        if haystack[k : k + len(needle)] == needle:
            return k
    return -1


@dataclass
class EncodedPairs:
    """Token ids per pair; sequences are int64 tensors, ready to pad."""

    chosen: list[Tensor]  # [len_i]
    rejected: list[Tensor]
    chosen_types: list[Tensor]
    rejected_types: list[Tensor]
    chosen_lens: list[int]  # completion tokens before truncation
    rejected_lens: list[int]
    margins: list[float | None]
    agreement: list[float | None]

    def __len__(self) -> int:
        return len(self.chosen)

    def seq_lengths(self) -> list[int]:
        """Longer of the two sequences per pair: what a micro-batch pads to."""
        return [max(len(c), len(r)) for c, r in zip(self.chosen, self.rejected, strict=True)]


def encode_pairs(
    pairs: Sequence[PreferencePair], tokenizer: Any, *, max_length: int
) -> EncodedPairs:
    """Tokenize prompt and responses separately (the prompt once per pair), then assemble."""
    if not pairs:  # fast tokenizers reject an empty batch
        return EncodedPairs([], [], [], [], [], [], [], [])
    template = PairTemplate.from_tokenizer(tokenizer)
    if not getattr(tokenizer, "chat_template", None):
        prompts = [p.prompt for p in pairs]
        chosen_texts = [p.chosen for p in pairs]
        rejected_texts = [p.rejected for p in pairs]
    else:
        prompts, chosen_texts, rejected_texts = [], [], []
        for p in pairs:
            messages = (
                [{"role": r, "content": c} for r, c in p.messages]
                if p.messages
                else hh_to_messages(p.prompt)
            )
            head = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            prompts.append(head)
            for response, out in ((p.chosen, chosen_texts), (p.rejected, rejected_texts)):
                full = tokenizer.apply_chat_template(
                    messages + [{"role": "assistant", "content": response}], tokenize=False
                )
                out.append(full[len(head) :] if full.startswith(head) else full)
    budget = max_length - template.n_special
    if budget < 2:
        raise ValueError(
            f"max_length={max_length} leaves no room next to {template.n_special} special tokens"
        )
    # verbose=False: over-long texts are expected here, they are cut below, in token space.
    tok = lambda texts: tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]  # noqa: E731
    prompt_ids, chosen_ids, rejected_ids = tok(prompts), tok(chosen_texts), tok(rejected_texts)
    out = EncodedPairs(
        [], [], [], [], [], [], [p.margin for p in pairs], [p.agreement for p in pairs]
    )
    for p_ids, c_ids, r_ids in zip(prompt_ids, chosen_ids, rejected_ids, strict=True):
        for response, ids_out, types_out, lens_out in (
            (c_ids, out.chosen, out.chosen_types, out.chosen_lens),
            (r_ids, out.rejected, out.rejected_types, out.rejected_lens),
        ):
            kept = response[: max(budget - len(p_ids), budget // 2)]
            room = budget - len(kept)
            head = (
                p_ids[max(0, len(p_ids) - room) :] if room > 0 else []
            )  # drop the prompt's start first
            first = template.prefix + head + template.middle
            second = kept + template.suffix
            ids_out.append(torch.tensor(first + second, dtype=torch.long))
            types_out.append(
                torch.tensor(
                    [template.prompt_type] * len(first) + [template.response_type] * len(second),
                    dtype=torch.long,
                )
            )
            lens_out.append(len(response))
    return out


def load_backbone(config: RewardConfig) -> tuple[Any, Any]:
    """(model, tokenizer) from a packaged alias, a folder or the local cache; never downloads."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    source = resolve_model(config.model)
    tokenizer = AutoTokenizer.from_pretrained(**source.kwargs())
    model_config = AutoConfig.from_pretrained(**source.kwargs(), num_labels=1)
    if config.dropout is not None:
        for attr in _DROPOUT_ATTRS:
            if getattr(model_config, attr, None) is not None:
                setattr(model_config, attr, config.dropout)
    if tokenizer.pad_token is None:  # decoder tokenizers: pad with EOS (masked out anyway)
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model_config.pad_token_id = tokenizer.pad_token_id
    model = AutoModelForSequenceClassification.from_pretrained(
        **source.kwargs(), config=model_config, dtype=torch.float32
    )
    return model, tokenizer


class RewardTrainer(Trainer):
    config: RewardConfig
    data_parallel = True  # compute_loss scores through self.train_model

    def __init__(
        self,
        config: RewardConfig,
        *,
        train_pairs: Sequence[PreferencePair],
        eval_pairs: Sequence[PreferencePair],
        out_dir: str | Path,
        hooks: RunHooks | None = None,
        model: Any = None,
        tokenizer: Any = None,
    ) -> None:
        super().__init__(config, out_dir=out_dir, hooks=hooks)
        seed_everything(config.seed)  # the new reward head's init depends on it
        if model is None or tokenizer is None:
            model, tokenizer = load_backbone(config)
        self.tokenizer = tokenizer
        self.uses_lora = config.lora_r > 0
        self.model = prepare_model(model, config, task_type="SEQ_CLS")
        self.train_data = encode_pairs(train_pairs, tokenizer, max_length=config.max_length)
        self.eval_data = encode_pairs(eval_pairs, tokenizer, max_length=config.max_length)
        self.use_types = PairTemplate.from_tokenizer(tokenizer).uses_types
        self.use_margin = config.use_margin and all(m is not None for m in self.train_data.margins)
        self.pad_multiple = (
            8 if self.device.type == "cuda" else 1
        )  # tensor-core friendly shapes on GPU
        self.last_report: dict[str, Any] = {}

    def param_groups(self) -> list[dict[str, Any]]:
        """Backbone groups at `lr`; the new head (`classifier` / `score`) at lr x head_lr_mult."""
        head, body = [], []
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                (head if _HEAD_NAMES & set(name.split(".")) else body).append(param)
        cfg = self.config
        return param_groups(body, cfg.weight_decay) + param_groups(
            head, 0.0, lr=cfg.lr * cfg.head_lr_mult
        )

    # --- the three methods the loop needs -------------------------------------
    def num_train_examples(self) -> int:
        return len(self.train_data)

    def example_lengths(self) -> Sequence[int] | None:
        return self.train_data.seq_lengths() if self.config.length_bucketing else None

    def collate(
        self, indices: Sequence[int], encoded: EncodedPairs | None = None
    ) -> dict[str, Tensor]:
        """[2B, T] batch: the B chosen sequences, then the B rejected ones, right-padded."""
        data = self.train_data if encoded is None else encoded
        seqs = [data.chosen[i] for i in indices] + [data.rejected[i] for i in indices]
        types = [data.chosen_types[i] for i in indices] + [data.rejected_types[i] for i in indices]
        longest = max(len(s) for s in seqs)
        width = -(-longest // self.pad_multiple) * self.pad_multiple
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # [2B, T]
        input_ids[:, :longest] = pad_sequence(seqs, batch_first=True, padding_value=pad_id)
        attention_mask = (
            torch.arange(width)[None, :] < torch.tensor([len(s) for s in seqs])[:, None]
        ).long()
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.use_types:
            token_types = torch.zeros_like(input_ids)
            token_types[:, :longest] = pad_sequence(types, batch_first=True, padding_value=0)
            batch["token_type_ids"] = token_types
        if self.use_margin and encoded is None:
            batch["margin"] = torch.tensor(
                [data.margins[i] for i in indices], dtype=torch.float32
            )  # [B]
        return batch

    def rewards(
        self, batch: dict[str, Tensor], model: torch.nn.Module | None = None
    ) -> tuple[Tensor, Tensor]:
        """(chosen, rejected) rewards under `model` (default: self.model, for no-grad scoring)."""
        inputs = {k: v for k, v in batch.items() if k != "margin"}
        forward = self.model if model is None else model
        scores = forward(**inputs).logits.squeeze(-1).float()  # [2B]
        return scores.chunk(2)  # ([B], [B])

    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        chosen, rejected = self.rewards(batch, self.train_model)  # DDP wrapper when N > 1
        loss, metrics = bradley_terry_loss(
            chosen, rejected, margin=batch.get("margin"), center_coef=self.config.center_coef
        )
        metrics["pad_fraction"] = 1.0 - batch["attention_mask"].float().mean()
        return loss, metrics

    # --- evaluation and outputs -----------------------------------------------
    def score_pairs(self, encoded: EncodedPairs) -> tuple[list[float], list[float]]:
        """Rewards of every pair (call under no_grad); length-sorted batches avoid padding."""
        lengths = encoded.seq_lengths()
        order = sorted(range(len(encoded)), key=lambda i: -lengths[i])
        chosen, rejected = [0.0] * len(encoded), [0.0] * len(encoded)
        for chunk in iter_chunks(order, self.config.eval_batch_size):
            batch = {k: v.to(self.device) for k, v in self.collate(chunk, encoded).items()}
            c, r = self.rewards(batch)
            for i, vc, vr in zip(chunk, c.tolist(), r.tolist(), strict=True):
                chosen[i], rejected[i] = vc, vr
        return chosen, rejected

    def evaluate(self) -> dict[str, float]:
        if len(self.eval_data) == 0:
            return {}
        chosen, rejected = self.score_pairs(self.eval_data)
        has = lambda values: any(v is not None for v in values)  # noqa: E731
        nan_if_none = lambda values: [float("nan") if v is None else v for v in values]  # noqa: E731
        self.last_report = reward_length_report(
            chosen,
            rejected,
            self.eval_data.chosen_lens,
            self.eval_data.rejected_lens,
            margins=nan_if_none(self.eval_data.margins) if has(self.eval_data.margins) else None,
            agreement=nan_if_none(self.eval_data.agreement)
            if has(self.eval_data.agreement)
            else None,
        )
        return scalar_metrics(self.last_report)

    def save_outputs(self, eval_metrics: dict[str, float]) -> None:
        model = (
            self.model.merge_and_unload() if self.uses_lora else self.model
        )  # plain transformers model
        model.save_pretrained(self.out_dir)
        self.tokenizer.save_pretrained(self.out_dir)
        report = {"lengths_unit": "completion tokens", **self.last_report}
        (self.out_dir / "eval_report.json").write_text(json.dumps(report, indent=2) + "\n")


def run(
    config: RewardConfig,
    *,
    train_pairs: Sequence[PreferencePair],
    out_dir: str | Path,
    eval_pairs: Sequence[PreferencePair] | None = None,
    hooks: RunHooks | None = None,
    resume_from: str | Path | None = None,
    data_info: dict[str, Any] | None = None,
) -> RunResult:
    """Train a reward model: the single entry point of the `train` command and the Celery task.

    Without `eval_pairs`, `config.eval_fraction` of the pairs is held out by
    prompt. Writes run_config.json, metrics.jsonl, eval_report.json and the
    model + tokenizer (`save_pretrained`) into `out_dir`.
    """
    import transformers

    if eval_pairs is None:
        train_pairs, eval_pairs = split_by_prompt(
            train_pairs, eval_fraction=config.eval_fraction, seed=config.seed
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trainer = RewardTrainer(
        config, train_pairs=train_pairs, eval_pairs=eval_pairs, out_dir=out, hooks=hooks
    )
    run_config = {
        "kind": config.kind,
        "config": config.to_dict(),
        "data": data_info or {},
        "n_train": len(trainer.train_data),
        "n_eval": len(trainer.eval_data),
        "total_steps": trainer.total_steps(),
        "device": str(trainer.device),
        "bf16": trainer.use_bf16,
        "world_size": trainer.dist.world_size,
        "resumed_from": str(resume_from or ""),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }
    if trainer.dist.is_main:  # one writer in a multi-process run
        (out / "run_config.json").write_text(json.dumps(run_config, indent=2) + "\n")
    return trainer.fit(resume_from=resume_from)
