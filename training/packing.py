"""Padding-free batches and completion-only sequence log-probs for causal LMs.

DPO needs, for every sequence s = prompt + completion, the summed log-prob of
the completion tokens only:

    logp(s) = sum_{t in completion(s)} log pi(x_t | x_<t)

A padded batch of S sequences costs S x max_len tokens; on preference data
with long and short dialogues half of that can be padding. Here the S
sequences are concatenated into ONE row of T = sum(len_s) tokens with
`position_ids` restarting at 0 for each sequence:

    input_ids    [p0 p0 c0 c0 c0 | p1 c1 c1 | ...]      shape [1, T]
    position_ids [0  1  2  3  4  | 0  1  2  | ...]      shape [1, T]

transformers (>= 4.53; checked in 5.24) turns packed `position_ids` into a
block-diagonal causal mask in `masking_utils.find_packed_sequence_indices`
when no `attention_mask` is passed (sdpa, eager and flex attention), and into
`cu_seqlens` for flash-attention varlen kernels; RoPE reads the restarted
positions. So a token never attends across sequences, and the result equals
the padded computation (tests/training/trainers/test_dpo.py checks 1e-5 in
fp32). Models whose attention ignores packed positions are caught by
`packing_supported`, which compares both layouts once on the real model.

Only the logits of positions that predict a completion token are computed
(`logits_to_keep` with an index tensor): the vocab projection is the largest
single matmul of a small model and the prompt's logits are never needed.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TokenBatch:
    """A batch of S sequences, packed ([1, T]) or padded ([S, L]), with completion targets.

    `target_pos` indexes the flattened input (row-major); the logit at that
    position predicts `target_ids`, a completion token of sequence `target_seq`.
    """

    input_ids: Tensor  # [1, T] packed, or [S, L] padded
    position_ids: Tensor  # same shape as input_ids
    attention_mask: Tensor | None  # None when packed; [S, L] 0/1 when padded
    target_pos: Tensor  # [N] long, index into input_ids.view(-1)
    target_ids: Tensor  # [N] long
    target_seq: Tensor  # [N] long in 0..S-1
    seq_lens: Tensor  # [S] long: prompt + completion tokens
    completion_lens: Tensor  # [S] long: completion tokens (the ones scored)

    @property
    def num_seqs(self) -> int:
        return int(self.seq_lens.numel())

    @property
    def num_tokens(self) -> int:
        """Real tokens (no padding)."""
        return int(self.seq_lens.sum())

    def to(self, device: torch.device | str) -> TokenBatch:
        move = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()}
        return TokenBatch(**move)


def _targets(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], starts: Sequence[int]):
    """Flat target positions: token t of completion s is predicted by the logit one position before it."""
    pos, ids, seq = [], [], []
    for s, (p, c, start) in enumerate(zip(prompts, completions, starts, strict=True)):
        if not p:
            raise ValueError(f"sequence {s}: empty prompt (the first completion token needs a context)")
        first = start + len(p) - 1  # logit predicting c[0]
        pos.extend(range(first, first + len(c)))
        ids.extend(c)
        seq.extend([s] * len(c))
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return as_long(pos), as_long(ids), as_long(seq)


def pack(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]]) -> TokenBatch:
    """Concatenate S prompt+completion sequences into one row with per-sequence positions."""
    seqs = [list(p) + list(c) for p, c in zip(prompts, completions, strict=True)]
    lens = [len(s) for s in seqs]
    starts = [0]
    for n in lens[:-1]:
        starts.append(starts[-1] + n)
    input_ids = torch.tensor([t for s in seqs for t in s], dtype=torch.long).unsqueeze(0)  # [1, T]
    position_ids = torch.cat([torch.arange(n) for n in lens]).unsqueeze(0)  # [1, T]
    pos, ids, seq = _targets(prompts, completions, starts)
    return TokenBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=None,
        target_pos=pos,
        target_ids=ids,
        target_seq=seq,
        seq_lens=torch.tensor(lens, dtype=torch.long),
        completion_lens=torch.tensor([len(c) for c in completions], dtype=torch.long),
    )


def pad(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *, pad_id: int) -> TokenBatch:
    """The classic layout: one row per sequence, right-padded to the longest (reference for tests)."""
    seqs = [list(p) + list(c) for p, c in zip(prompts, completions, strict=True)]
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # [S, L]
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)  # [S, L]
    for i, s in enumerate(seqs):
        input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        attention_mask[i, : len(s)] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # [S, L]
    pos, ids, seq = _targets(prompts, completions, [i * width for i in range(len(seqs))])
    return TokenBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=attention_mask,
        target_pos=pos,
        target_ids=ids,
        target_seq=seq,
        seq_lens=torch.tensor([len(s) for s in seqs], dtype=torch.long),
        completion_lens=torch.tensor([len(c) for c in completions], dtype=torch.long),
    )


def token_logps(model: torch.nn.Module, batch: TokenBatch) -> Tensor:
    """Log-prob of every completion token, shape [N] (fp32), in `batch.target_pos` order."""
    rows, width = batch.input_ids.shape
    if rows == 1:
        # Packed: one row, so positions index the sequence axis directly.
        keep: Tensor = batch.target_pos  # [N]
        out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, logits_to_keep=keep, use_cache=False)
        logits = out.logits[0]  # [N, V]
    else:
        # Padded: a boolean [S, L] mask selects the same positions (flattened row-major).
        keep = torch.zeros(rows * width, dtype=torch.bool, device=batch.input_ids.device)
        keep[batch.target_pos] = True
        out = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            logits_to_keep=keep.view(rows, width),
            use_cache=False,
        )
        logits = out.logits.reshape(-1, out.logits.shape[-1])  # [N, V]
    logits = logits.float()
    # log softmax gathered at the target, without materialising a second [N, V] tensor:
    # log p(y) = z_y - logsumexp(z)
    picked = logits.gather(-1, batch.target_ids.unsqueeze(-1)).squeeze(-1)  # [N]
    return picked - torch.logsumexp(logits, dim=-1)  # [N]


def sequence_logps(model: torch.nn.Module, batch: TokenBatch) -> Tensor:
    """Summed completion log-prob per sequence, shape [S] (fp32).

    Naive equivalent: for each s, sum(log_softmax(model(seq_s).logits)[t-1, seq_s[t]] for t in completion(s)).
    """
    per_token = token_logps(model, batch)  # [N]
    totals = torch.zeros(batch.num_seqs, dtype=per_token.dtype, device=per_token.device)
    return totals.index_add(0, batch.target_seq, per_token)  # [S]


@torch.no_grad()
def packing_supported(model: torch.nn.Module, *, vocab_size: int, atol: float = 1e-3) -> bool:
    """Does this model's attention keep packed sequences apart? Compares packed vs padded once.

    Two random sequences of different lengths: if the second one's log-probs
    differ between layouts, tokens leaked across the sequence boundary (or
    positions were ignored), and the caller must pad instead.
    """
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, vocab_size, (n,), generator=gen).tolist() for n in (7, 4)]
    comps = [torch.randint(3, vocab_size, (n,), generator=gen).tolist() for n in (5, 9)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        packed = sequence_logps(model, pack(prompts, comps).to(device))
        padded = sequence_logps(model, pad(prompts, comps, pad_id=0).to(device))
    finally:
        model.train(was_training)
    return bool(torch.allclose(packed, padded, atol=atol, rtol=1e-3))
