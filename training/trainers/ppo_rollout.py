"""PPO's experience side: prompts in, scored completions out, plus the
length diagnostics computed on them (prompt files: ``training/prompts.py``).

- Scorers turn (prompt, completion) into one scalar per episode.
  ``RewardModelScorer`` reads the folder the reward trainer wrote, with ITS
  tokenizer and ITS text format (the policy's tokenizer may differ: the
  completion crosses over as decoded text). ``TokenScorer`` is the synthetic
  task of the tests: it pays for one token id.
- ``nrg_ratio``: Singhal et al. 2023's share of reward gain not explained by
  length (formula in its docstring).

- ``sample_completions`` / ``episode_tensors``: generation and the padded
  [B, P + T] layout the update reuses; ``PolicyWithValueHead`` computes
  log-prob logits and values from that layout in one forward. The update
  itself is in ``ppo.py``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn


class Scorer(Protocol):
    """One scalar reward per episode: (B,) float32 on the CPU."""

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], completion_ids: Sequence[Sequence[int]]
    ) -> Tensor: ...


@dataclass(frozen=True)
class TokenScorer:
    """Synthetic reward: the share of completion tokens equal to ``token_id``.

    A policy that learns to emit only that token gets 1; a uniform random
    policy over V tokens gets about 1/V. Used by the unit tests, where a tiny
    random policy must learn it in seconds.
    """

    token_id: int

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], completion_ids: Sequence[Sequence[int]]
    ) -> Tensor:
        scores = [sum(1 for t in ids if t == self.token_id) / max(len(ids), 1) for ids in completion_ids]
        return torch.tensor(scores, dtype=torch.float32)


class RewardModelScorer:
    """Scores decoded text with a reward model folder written by the reward trainer.

    The folder holds an ``AutoModelForSequenceClassification`` (num_labels=1)
    and its tokenizer (``save_pretrained``). Text is encoded with the reward
    trainer's own ``encode_pairs`` (its pair or chat template, its truncation
    rule, its ``max_length`` from ``run_config.json`` unless overridden), so a
    score means what it meant in the reward model's evaluation.
    """

    def __init__(self, folder: str | Path, *, device: torch.device, max_length: int | None = None,
                 batch_size: int = 16) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from training.trainers.reward import PairTemplate

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"reward model {folder}: no config.json (train one with `train reward`)")
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True)
        self.model.to(device).eval().requires_grad_(False)
        self.device = device
        self.max_length = max_length or _trained_max_length(folder) or 512
        self.batch_size = batch_size
        self.use_types = PairTemplate.from_tokenizer(self.tokenizer).uses_types

    @torch.no_grad()
    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], completion_ids: Sequence[Sequence[int]]
    ) -> Tensor:
        from torch.nn.utils.rnn import pad_sequence

        from training.data import PreferencePair
        from training.trainers.reward import encode_pairs

        pairs = [PreferencePair(prompt=p, chosen=c, rejected="") for p, c in zip(prompts, completions, strict=True)]
        encoded = encode_pairs(pairs, self.tokenizer, max_length=self.max_length)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        scores: list[Tensor] = []
        for start in range(0, len(pairs), self.batch_size):
            seqs = encoded.chosen[start:start + self.batch_size]
            input_ids = pad_sequence(seqs, batch_first=True, padding_value=pad_id)  # [b, L]
            lengths = torch.tensor([len(s) for s in seqs])
            inputs = {"input_ids": input_ids,
                      "attention_mask": (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()}
            if self.use_types:
                inputs["token_type_ids"] = pad_sequence(encoded.chosen_types[start:start + self.batch_size],
                                                        batch_first=True, padding_value=0)
            logits = self.model(**{k: v.to(self.device) for k, v in inputs.items()}).logits  # [b, 1]
            scores.append(logits[:, 0].float().cpu())
        return torch.cat(scores) if scores else torch.zeros(0)


def _trained_max_length(folder: Path) -> int | None:
    """The max_length the reward model was trained with, from the reward trainer's run_config.json."""
    import json

    try:
        return int(json.loads((folder / "run_config.json").read_text())["config"]["max_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant (undefined, not 0)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def nrg_ratio(
    init_scores: Sequence[float],
    init_lengths: Sequence[int],
    scores: Sequence[float],
    lengths: Sequence[int],
    *,
    bucket_tokens: int = 20,
) -> dict[str, float]:
    """Non-length reward gain (Singhal et al. 2023, "A Long Way to Go", sec. 3).

    Completions of the initial policy (``init_*``) and of the current policy on
    the SAME fixed eval prompts are put in length buckets
    ``k = floor(length / bucket_tokens)``. With n0_k, n_k the counts and
    R0_k, R_k the mean scores per bucket, over the buckets K that both sides
    populate:

        total_gain  = mean(scores) - mean(init_scores)
        w_k         = (n0_k + n_k) / sum_{j in K} (n0_j + n_j)
        within_gain = sum_{k in K} w_k * (R_k - R0_k)
        nrg_ratio   = within_gain / total_gain

    The within-bucket gain is what the policy gained at a FIXED length; the
    rest of ``total_gain`` came from moving mass between lengths. A ratio near
    1 means the gain is not about length; near 0 (or negative) it is all
    length. Undefined (NaN) when the total gain is ~0 or no bucket is shared.
    Also returned: ``nrg/total_gain``, ``nrg/within_gain`` and
    ``nrg/coverage`` (share of both sides' samples inside shared buckets; a
    low coverage means the lengths moved so far that the ratio rests on few
    samples).
    """
    s0, s1 = np.asarray(init_scores, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    b0 = np.asarray(init_lengths, dtype=np.int64) // bucket_tokens
    b1 = np.asarray(lengths, dtype=np.int64) // bucket_tokens
    total = float(s1.mean() - s0.mean()) if len(s0) and len(s1) else math.nan
    shared = np.intersect1d(b0, b1)
    weights = np.array([(b0 == k).sum() + (b1 == k).sum() for k in shared], dtype=np.float64)
    gains = np.array([s1[b1 == k].mean() - s0[b0 == k].mean() for k in shared], dtype=np.float64)
    within = float((weights * gains).sum() / weights.sum()) if len(shared) else math.nan
    coverage = float(weights.sum() / (len(s0) + len(s1))) if len(s0) + len(s1) else 0.0
    ratio = within / total if math.isfinite(within) and math.isfinite(total) and abs(total) > 1e-6 else math.nan
    return {"nrg_ratio": ratio, "nrg/total_gain": total, "nrg/within_gain": within, "nrg/coverage": coverage}


@dataclass
class Generated:
    """Sampled completions; each ends at its first stop token (kept) or at max_new_tokens."""

    completion_ids: list[list[int]]
    finished: list[bool]  # ended with a stop token (False: clipped at max_new_tokens)


@torch.no_grad()
def sample_completions(
    policy: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    pad_id: int,
    stop_ids: Sequence[int],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    batch_size: int,
    device: torch.device,
) -> Generated:
    """Sample one completion per prompt with ``policy.generate`` (left-padded batches).

    ``top_k=0`` and no repetition penalty: the samples come from
    softmax(logits / temperature) (nucleus-truncated when top_p < 1), the
    distribution whose log-probs PPO's ratio and KL use. Rows that stop
    early are cut after their first stop token.
    """
    from transformers import GenerationConfig

    gen_config = GenerationConfig(
        do_sample=True, temperature=temperature, top_p=top_p, top_k=0, max_new_tokens=max_new_tokens,
        min_new_tokens=0, eos_token_id=list(stop_ids), pad_token_id=pad_id, repetition_penalty=1.0,
    )
    stops = set(stop_ids)
    out = Generated([], [])
    for start in range(0, len(prompt_ids), batch_size):
        chunk = prompt_ids[start:start + batch_size]
        width = max(len(p) for p in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # [b, P]
        attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, p in enumerate(chunk):
            input_ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            attention_mask[i, width - len(p):] = 1
        sequences = policy.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                    generation_config=gen_config)
        for row in sequences[:, width:].tolist():  # [b, T'] new tokens
            cut = next((k for k, t in enumerate(row) if t in stops), None)
            out.completion_ids.append(row if cut is None else row[:cut + 1])
            out.finished.append(cut is not None)
    return out


def episode_tensors(
    prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], *, pad_id: int
) -> dict[str, Tensor]:
    """Prompts left-padded to P, completions right-padded to T, in one [B, P + T] row each.

    The completion always occupies the last T columns, so the logits that
    predict it are the last T + 1 positions minus one (``logits_to_keep``),
    whatever the prompt lengths. ``position_ids`` count real tokens only, as
    generation did.
    """
    width_p = max(len(p) for p in prompt_ids)
    width_c = max(max(len(c) for c in completion_ids), 1)
    batch = len(prompt_ids)
    input_ids = torch.full((batch, width_p + width_c), pad_id, dtype=torch.long)  # [B, P+T]
    attention_mask = torch.zeros_like(input_ids)
    mask = torch.zeros((batch, width_c), dtype=torch.float32)  # [B, T]: 1 on completion tokens
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids, strict=True)):
        input_ids[i, width_p - len(p):width_p] = torch.tensor(p, dtype=torch.long)
        input_ids[i, width_p:width_p + len(c)] = torch.tensor(c, dtype=torch.long)
        attention_mask[i, width_p - len(p):width_p + len(c)] = 1
        mask[i, :len(c)] = 1.0
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, "mask": mask}


def trim_batch(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop the padding columns a sub-batch does not need (left of the longest prompt,
    right of the longest completion); per-token [B, T] tensors are cut to match."""
    width_c = batch["mask"].shape[1]
    width_p = batch["input_ids"].shape[1] - width_c
    keep_c = max(int(batch["mask"].sum(1).max()), 1)
    first = int(batch["attention_mask"][:, :width_p].argmax(1).min()) if width_p else 0  # left-most prompt token
    out = {}
    for name, value in batch.items():
        if value.dim() == 2 and value.shape[1] == width_p + width_c:
            out[name] = value[:, first:width_p + keep_c]
        elif value.dim() == 2 and value.shape[1] == width_c:
            out[name] = value[:, :keep_c]
        else:
            out[name] = value
    return out


class PolicyWithValueHead(nn.Module):
    """A causal LM plus a scalar value head on its last hidden state (shared trunk)."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(policy.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)  # V = 0 at the start: no arbitrary baseline
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, *,
                n_completion: int, temperature: float) -> tuple[Tensor, Tensor]:
        """(logits / temperature [B, T, V], values [B, T]) at the T positions that predict the
        completion, which fills the last T columns (see ``episode_tensors``)."""
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          output_hidden_states=True, logits_to_keep=n_completion + 1, use_cache=False)
        logits = out.logits[:, :-1].float() / temperature  # [B, T, V]
        hidden = out.hidden_states[-1][:, -(n_completion + 1):-1]  # [B, T, H] (post final norm)
        values = self.value_head(hidden).squeeze(-1).float()  # [B, T]
        return logits, values


def disable_dropout(model: nn.Module) -> None:
    """Zero every dropout: nn.Dropout modules and attention dropout stored as a float attribute."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def stop_token_ids(tokenizer: Any, policy: Any, encoder: Any) -> list[int]:
    """EOS ids of the tokenizer and generation config, plus the chat template's end-of-turn token."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(policy, "generation_config", None), "eos_token_id", None)
    ids |= set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if encoder.chat:  # the last token of a templated reply ends the turn (ChatML: <|im_end|>)
        head = encoder.prompt_text("x")
        tail = tokenizer(encoder.completion_text(head, "x", "y"), add_special_tokens=False)["input_ids"]
        if tail:
            ids.add(tail[-1])
    if not ids:
        raise ValueError("the policy's tokenizer has no EOS token: PPO cannot tell finished completions")
    return sorted(ids)
