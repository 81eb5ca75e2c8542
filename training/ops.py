"""Pure tensor helpers for policy-gradient training (PPO): masked statistics,
GAE, KL estimators, entropy, explained variance, KL-coefficient controllers.

Conventions: ``B`` is the batch (episodes), ``T`` the completion length in
tokens. ``mask`` is a float or bool tensor of shape (B, T), 1 on completion
tokens that exist (up to and including EOS) and 0 on padding after them; every
helper ignores masked-out positions. Nothing here knows about models.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over positions where ``mask`` is 1.

    x, mask: same shape. ``dim=None`` reduces everything to a scalar; otherwise
    reduces along ``dim``. Empty masks give 0 (not NaN) so a batch of empty
    completions never poisons the metrics.
    """
    mask = mask.to(x.dtype)
    total = (x * mask).sum() if dim is None else (x * mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1.0)


def masked_var(x: Tensor, mask: Tensor, *, unbiased: bool = True) -> Tensor:
    """Variance of ``x`` over masked positions (scalar).

    With ``unbiased`` the Bessel correction n / (n - 1) is applied, as in the
    OpenAI lm-human-preferences code our whitening follows.
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.to(x.dtype).sum()
        if n > 1:
            var = var * n / (n - 1)
    return var


def masked_whiten(x: Tensor, mask: Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over masked positions; masked-out positions become 0.

    ``shift_mean=False`` only rescales (used for rewards, where the sign of the
    mean carries information). Shape is preserved.
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(x.dtype)


def gae_advantages(
    rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, arXiv:1506.02438).

        delta_t = r_t + gamma * V_{t+1} * m_{t+1} - V_t
        A_t     = delta_t + gamma * lam * m_{t+1} * A_{t+1}
        R_t     = A_t + V_t          (the value target, "returns")

    rewards, values, mask: (B, T). The episode ends after the last masked
    position: the value beyond it is 0 (terminal). The scan runs backwards over
    T and is vectorised over B; ``tests/training/test_ops.py`` checks it against
    the naive double loop over episodes and tokens.
    Returns (advantages, returns), both (B, T), zero where ``mask`` is 0.
    """
    mask_f = mask.to(values.dtype)
    steps = rewards.shape[1]
    advantages = torch.zeros_like(values)
    next_adv = torch.zeros_like(values[:, 0])  # (B,)
    next_value = torch.zeros_like(values[:, 0])  # (B,)
    next_mask = torch.zeros_like(values[:, 0])  # (B,): is t+1 still inside the episode?
    for t in reversed(range(steps)):
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        next_adv = delta + gamma * lam * next_mask * next_adv
        advantages[:, t] = next_adv
        next_value, next_mask = values[:, t], mask_f[:, t]
    advantages = advantages * mask_f
    returns = (advantages + values) * mask_f
    return advantages, returns


def kl_estimate(logp: Tensor, ref_logp: Tensor, *, kind: str = "k1") -> Tensor:
    """Per-token Monte Carlo estimator of KL(pi || pi_ref) from samples of pi.

    logp, ref_logp: log-probabilities of the SAMPLED tokens under the policy
    and the reference, any shape; the result has the same shape. With
    log r = ref_logp - logp (Schulman 2020, "Approximating KL divergence"):

        k1 = -log r                 unbiased, high variance, can be negative
        k2 = (log r)^2 / 2          biased, low variance, >= 0
        k3 = (r - 1) - log r        unbiased, low variance, >= 0

    k1 enters the PPO reward (its expectation is the exact KL term of the
    objective); k3 is the one to log; a negative running mean of k1 means the
    samples are not from the policy that produced ``logp`` (a bug alarm).
    """
    log_r = ref_logp - logp
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    if kind == "k3":
        return torch.expm1(log_r) - log_r
    raise ValueError(f"unknown KL estimator {kind!r}; expected 'k1', 'k2' or 'k3'")


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the categorical distribution per position: (..., V) -> (...).

    H = logsumexp(z) - sum softmax(z) * z, which avoids log(0) for tiny probs.
    """
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


def logprobs_from_logits(logits: Tensor, tokens: Tensor) -> Tensor:
    """log softmax(logits)[token]: logits (B, T, V), tokens (B, T) -> (B, T)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return torch.gather(logp, 2, tokens.unsqueeze(-1)).squeeze(-1)


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 - Var[R - V] / Var[R] over masked positions (1 = perfect critic,
    0 = no better than a constant, negative = worse than a constant)."""
    var_returns = masked_var(returns, mask)
    if var_returns <= 0:
        return torch.zeros((), dtype=values.dtype)
    return 1.0 - masked_var(returns - values, mask) / var_returns


@dataclass
class FixedKLController:
    """A constant KL coefficient beta."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None:
        """Fixed: nothing to adapt."""


@dataclass
class AdaptiveKLController:
    """Proportional controller for beta (Ziegler et al. 2019, arXiv:1909.08593, eq. 2).

        e_t     = clip(KL_t / KL_target - 1, -0.2, 0.2)
        beta_t+1 = beta_t * (1 + K_beta * e_t),   K_beta = n_steps / horizon

    ``n_steps`` is the number of episodes in the batch just measured (the
    paper's K_beta = 0.1 corresponds to horizon = 10 * batch size).
    """

    value: float
    target: float
    horizon: int

    def update(self, current_kl: float, n_steps: int) -> None:
        if not math.isfinite(current_kl):
            return  # a NaN KL must not destroy the controller's state
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
