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

Keeping the sequences apart. transformers (checked in 5.24) turns packed
`position_ids` into a block-diagonal causal mask when no `attention_mask` is
passed (`masking_utils.find_packed_sequence_indices`; sdpa, eager, flex) and
into `cu_seqlens` for the flash-attention varlen kernels; RoPE reads the
restarted positions. Correct, but on CPU (no flash-attention) the
block-diagonal path is SLOWER than padding: sdpa gets a dense [T, T] mask and
computes T^2 scores where sum(len_s^2) are needed (measured on SmolLM2-135M,
batch 4 pairs x 256 tokens: packed-with-mask 1.0-1.6x the time of padded).
So `enable_packed_attention` registers one more attention implementation
through transformers' public `AttentionInterface.register`: given the
`cu_seq_lens_q` boundaries that `token_logps` passes (the same kwarg the
flash-attention path reads), it runs causal sdpa per sequence; every other
call (padded batches, generation with a cache) is plain sdpa with
transformers' own masks. Flash-attention models are left alone (their varlen
kernel already does this). `packing_supported` compares packed and padded
log-probs once on the real model, so a model whose attention ignores packed
positions falls back to padding instead of silently mixing sequences; the
tests check packed == padded to 1e-5 in fp32.

Only the logits of positions that predict a completion token are computed
(`logits_to_keep` with an index tensor): the vocab projection is the largest
single matmul of a small model and the prompt's logits are never needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PACKED_ATTENTION = "pairwise_packed_sdpa"


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


def _targets(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], starts: Sequence[int]
):
    """Flat target positions: token t of completion s is predicted by the logit one before it."""
    pos, ids, seq = [], [], []
    for s, (p, c, start) in enumerate(zip(prompts, completions, starts, strict=True)):
        if not p:
            raise ValueError(
                f"sequence {s}: empty prompt (the first completion token needs a context)"
            )
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


def pad(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *, pad_id: int
) -> TokenBatch:
    """The classic layout: one row per sequence, right-padded to the longest (tests compare)."""
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


def _packed_sdpa(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: object,
) -> tuple[Tensor, None]:
    """Attention for packed rows: causal sdpa inside each sequence; anything else is plain sdpa.

    query [1, H, T, D], key/value [1, H_kv, T, D] (grouped-query heads allowed);
    returns [1, T, H, D] like transformers' sdpa. Naive equivalent: run each
    sequence alone through sdpa(is_causal=True) and concatenate.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.get("cu_seq_lens_q")
    if (
        bounds is None
        or attention_mask is not None
        or query.shape[0] != 1
        or query.shape[2] != key.shape[2]
    ):
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    cuts = bounds.tolist()  # type: ignore[union-attr]
    gqa = query.shape[1] != key.shape[1]
    outs = [
        F.scaled_dot_product_attention(
            query[:, :, a:b],
            key[:, :, a:b],
            value[:, :, a:b],
            dropout_p=dropout,
            is_causal=True,
            scale=scaling,
            enable_gqa=gqa,
        )
        for a, b in zip(cuts[:-1], cuts[1:], strict=True)
    ]  # each [1, H, len_s, D]
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


def _packed_mask(
    *args: object, attention_mask: Tensor | None = None, **kwargs: object
) -> Tensor | None:
    """No mask for a packed row (the attention knows the boundaries); sdpa's mask otherwise."""
    from transformers.masking_utils import sdpa_mask

    return (
        None
        if attention_mask is None
        else sdpa_mask(*args, attention_mask=attention_mask, **kwargs)
    )


def enable_packed_attention(model: nn.Module) -> None:
    """Switch an sdpa/eager model to per-sequence attention for packed rows (idempotent).

    Registered lazily (no work at import time). The choice is not written by
    save_pretrained: a saved model loads with the default attention.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return  # flash-attention reads cu_seq_lens itself; unknown models keep what they have
    AttentionInterface.register(PACKED_ATTENTION, _packed_sdpa)
    AttentionMaskInterface.register(PACKED_ATTENTION, _packed_mask)
    model.set_attn_implementation(PACKED_ATTENTION)


def token_logps(model: torch.nn.Module, batch: TokenBatch) -> Tensor:
    """Log-prob of every completion token, shape [N] (fp32), in `batch.target_pos` order."""
    rows, width = batch.input_ids.shape
    if rows == 1:
        # Packed: one row, so positions index the sequence axis directly. The boundaries go in the
        # kwargs flash-attention's varlen path and `_packed_sdpa` read; others ignore them.
        keep: Tensor = batch.target_pos  # [N]
        zero = torch.zeros(1, dtype=torch.int32, device=batch.seq_lens.device)
        cu = torch.cat([zero, batch.seq_lens.cumsum(0).to(torch.int32)])  # [S + 1]
        longest = int(batch.seq_lens.max())
        out = model(
            input_ids=batch.input_ids,
            position_ids=batch.position_ids,
            logits_to_keep=keep,
            use_cache=False,
            cu_seq_lens_q=cu,
            cu_seq_lens_k=cu,
            max_length_q=longest,
            max_length_k=longest,
        )
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

    Naive equivalent: for each s,
    sum(log_softmax(model(seq_s).logits)[t - 1, seq_s[t]] for t in completion(s)).
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
