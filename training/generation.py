"""Sampling from a causal-LM policy for diagnostics: the DPO generation probe.

DPO drifts toward longer answers (Park et al. 2024; Singhal et al. 2023), and
the training loss cannot show it: the pairs are fixed text. The probe samples
the policy on a fixed set of eval prompts (fixed seed, fixed max_new_tokens)
and compares with what the reference policy produced on the same prompts
(generated once and cached):

- ``gen/len_mean``, ``gen/len_p90``: completion length in tokens (up to and
  including the stop token);
- ``gen/len_ratio_vs_ref``: len_mean / the reference's len_mean;
- ``gen/truncated_rate``: share that hit max_new_tokens without a stop token;
- ``gen/kl_seq``: mean over prompts of log pi(y|x) - log pi_ref(y|x) for
  y ~ pi, a Monte-Carlo estimate of the sequence-level KL(pi || pi_ref)
  (unbiased at temperature 1; the sampling temperature is recorded).

Sampling runs inside `torch.random.fork_rng`, so a probe never changes the
training loop's random stream (exact resume stays exact).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from training.packing import pack, sequence_logps


@dataclass(frozen=True)
class Generations:
    completions: list[list[int]]  # generated ids per prompt, up to and including the stop token
    truncated: list[bool]  # no stop token within max_new_tokens

    @property
    def lengths(self) -> list[int]:
        return [len(c) for c in self.completions]

    def stats(self) -> dict[str, float]:
        lens = np.asarray(self.lengths, dtype=np.float64)
        return {
            "len_mean": float(lens.mean()) if len(lens) else 0.0,
            "len_p90": float(np.percentile(lens, 90)) if len(lens) else 0.0,
            "truncated_rate": float(np.mean(self.truncated)) if self.truncated else 0.0,
        }

    def to_dict(self) -> dict[str, list]:
        return {"completions": self.completions, "truncated": self.truncated}

    @classmethod
    def from_dict(cls, data: dict[str, list]) -> Generations:
        return cls(
            [list(map(int, c)) for c in data["completions"]], [bool(t) for t in data["truncated"]]
        )


@torch.no_grad()
def generate(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    stop_ids: Sequence[int],
    pad_id: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    batch_size: int = 8,
) -> Generations:
    """Sample one completion per prompt (left-padded batches, fixed seed, RNG state restored after).

    temperature 0 means greedy decoding.
    """
    device = next(model.parameters()).device
    completions: list[list[int]] = []
    truncated: list[bool] = []
    stops = set(stop_ids)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            chunk = [list(p) for p in prompts[start : start + batch_size]]
            width = max(len(p) for p in chunk)
            input_ids = torch.full(
                (len(chunk), width), pad_id, dtype=torch.long
            )  # [b, W] left-padded
            attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, p in enumerate(chunk):
                input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
                attention_mask[i, width - len(p) :] = 1
            sampling = (
                {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
                if temperature > 0
                else {"do_sample": False}
            )
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens,
                eos_token_id=list(stops),
                pad_token_id=pad_id,
                **sampling,
            )  # [b, W + new]
            for row in out[:, width:].tolist():
                ids: list[int] = []
                for tok in row:
                    ids.append(tok)
                    if tok in stops:
                        break
                truncated.append(not ids or ids[-1] not in stops)
                completions.append(ids)
    return Generations(completions, truncated)


@torch.no_grad()
def score(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
) -> list[float]:
    """Summed log pi(y|x) of each completion (packed forward passes)."""
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(prompts), batch_size):
        p = prompts[start : start + batch_size]
        c = completions[start : start + batch_size]
        keep = [i for i, ids in enumerate(c) if ids]  # an empty completion has log-prob 0
        values = [0.0] * len(p)
        if keep:
            logps = sequence_logps(
                model, pack([p[i] for i in keep], [c[i] for i in keep]).to(device)
            )
            for i, v in zip(keep, logps.tolist(), strict=True):
                values[i] = v
        out.extend(values)
    return out


class GenerationProbe:
    """Fixed prompts, cached reference generations, and the ``gen/*`` metrics of a policy.

    `reference_scorer(prompts, completions) -> log pi_ref` is supplied by the
    trainer: a live reference model, the LoRA base with adapters disabled,
    or the reference loaded from disk for the duration of the call.
    """

    def __init__(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        stop_ids: Sequence[int],
        pad_id: int,
        max_new_tokens: int,
        temperature: float,
        seed: int,
        batch_size: int = 8,
    ) -> None:
        self.prompts = [list(p) for p in prompts]
        self.kwargs = {
            "stop_ids": list(stop_ids),
            "pad_id": pad_id,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "seed": seed,
            "batch_size": batch_size,
        }
        self.reference: Generations | None = None

    def cache_reference(self, reference_model: nn.Module) -> Generations:
        """Sample the reference once; later probes compare against these lengths."""
        self.reference = generate(reference_model, self.prompts, **self.kwargs)
        return self.reference

    def run(
        self,
        policy: nn.Module,
        reference_scorer: Callable[[list[list[int]], list[list[int]]], list[float]],
    ) -> dict[str, float]:
        if self.reference is None:
            raise RuntimeError("cache_reference() must run before the first probe")
        gens = generate(policy, self.prompts, **self.kwargs)
        stats = gens.stats()
        ref_mean = self.reference.stats()["len_mean"]
        logp = score(policy, self.prompts, gens.completions, batch_size=self.kwargs["batch_size"])
        ref_logp = reference_scorer(self.prompts, gens.completions)
        return {
            "gen/len_mean": stats["len_mean"],
            "gen/len_p90": stats["len_p90"],
            "gen/len_ratio_vs_ref": stats["len_mean"] / ref_mean if ref_mean > 0 else float("nan"),
            "gen/truncated_rate": stats["truncated_rate"],
            "gen/kl_seq": float(np.mean(np.asarray(logp) - np.asarray(ref_logp))) if logp else 0.0,
            "gen/ref_len_mean": ref_mean,
        }
