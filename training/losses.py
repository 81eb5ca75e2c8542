"""Pure loss functions: tensors in, `(loss, metrics)` out.

Every function here is a pure function of its tensor arguments (no module
state, no device moves, no `.item()`), so the training loop decides when to
synchronise. Metrics are detached 0-dim tensors; the loop averages them over
micro-batches and converts them to floats once per optimizer step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from training.ops import masked_mean


def bradley_terry_loss(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    *,
    margin: Tensor | None = None,
    center_coef: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""Bradley-Terry pairwise loss for reward models.

    Under the Bradley-Terry model (Bradley & Terry 1952) the probability that
    the chosen response beats the rejected one is
    :math:`\sigma(r_c - r_r)`; the reward model maximises its log-likelihood
    (Christiano et al. 2017; Stiennon et al. 2020; Ouyang et al. 2022, eq. 1):

    .. math::

        L = -\frac{1}{B} \sum_i \log \sigma(r_{c,i} - r_{r,i} - m_i)
            + \lambda \frac{1}{B} \sum_i (r_{c,i} + r_{r,i})^2

    - :math:`m_i` is the optional per-pair margin (Llama 2, Touvron et al.
      2023, sec. 3.2.2): a larger margin asks for a larger reward gap on pairs
      the annotators rated as clearly different. ``None`` means 0.
    - :math:`\lambda` = ``center_coef`` is the reward-centering term of
      Eisenstein et al. 2023 ("Helping or Herding?"), which keeps rewards near
      zero mean so that they are comparable across prompts; 0 disables it.

    ``-log sigmoid(x)`` is computed as ``softplus(-x)`` via ``F.logsigmoid``,
    which is stable for large |x|.

    Shapes:
        chosen_rewards, rejected_rewards: ``[B]`` (or ``[B, 1]``; squeezed).
        margin: ``[B]`` or ``None``.
    Returns:
        loss: 0-dim tensor with grad.
        metrics: detached 0-dim tensors: ``loss``, ``accuracy`` (share of pairs
        with r_c > r_r; ties count as wrong), ``margin`` (mean r_c - r_r),
        ``reward_chosen``, ``reward_rejected``, ``reward_mean``,
        ``center_penalty`` (mean (r_c + r_r)^2, before the coefficient).
    """
    chosen = chosen_rewards.reshape(-1).float()  # [B]
    rejected = rejected_rewards.reshape(-1).float()  # [B]
    if chosen.shape != rejected.shape:
        raise ValueError(f"chosen {tuple(chosen.shape)} and rejected {tuple(rejected.shape)} rewards differ in shape")
    diff = chosen - rejected  # [B]
    logits = diff if margin is None else diff - margin.reshape(-1).to(diff)
    bt = -F.logsigmoid(logits).mean()
    center = ((chosen + rejected) ** 2).mean()
    loss = bt + center_coef * center
    with torch.no_grad():
        metrics = {
            "loss": loss.detach(),
            "accuracy": (diff > 0).float().mean(),
            "margin": diff.mean().detach(),
            "reward_chosen": chosen.mean().detach(),
            "reward_rejected": rejected.mean().detach(),
            "reward_mean": ((chosen + rejected) / 2).mean().detach(),
            "center_penalty": center.detach(),
        }
    return loss, metrics


# --- PPO (issue 8) ----------------------------------------------------------------------------------


def ppo_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_range: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""Clipped surrogate policy loss of PPO (Schulman et al. 2017, arXiv:1707.06347, eq. 7),
    applied per completion token as in RLHF (Ziegler et al. 2019; Ouyang et al. 2022, sec. 3.5):

    .. math::

        \rho_t = \exp(\log\pi_\theta(a_t|s_t) - \log\pi_{old}(a_t|s_t))

        L = \mathrm{mean}_t \max(-A_t \rho_t,\; -A_t\,\mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon))

    (the max of the negated terms is the min of the two surrogate objectives).

    Shapes: ``logprobs``, ``old_logprobs``, ``advantages``, ``mask``: ``[B, T]``;
    the mean runs over the tokens where ``mask`` is 1 (completion tokens).
    ``advantages`` (GAE, usually whitened) and ``old_logprobs`` (the rollout
    policy) are constants.

    Metrics (detached 0-dim): ``loss/policy``; ``policy/clipfrac``, the share
    of tokens where the clipped term is the active one; ``policy/approxkl``,
    ``0.5 * mean (log rho)^2`` (the k2 estimate of KL(pi_old || pi), small
    when the update stays in the trust region); ``val/ratio``, the mean of
    rho (TRL's name for it, kept so runs compare).
    """
    log_ratio = logprobs - old_logprobs  # [B, T]
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        metrics = {
            "loss/policy": loss.detach(),
            "policy/clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "policy/approxkl": 0.5 * masked_mean(log_ratio.detach() ** 2, mask),
            "val/ratio": masked_mean(ratio.detach(), mask),
        }
    return loss, metrics


def ppo_value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    *,
    clip_range_value: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""Clipped value loss of PPO (OpenAI baselines ppo2, used for RLHF by Ziegler et al. 2019):

    .. math::

        V^{clip}_t = V^{old}_t + \mathrm{clip}(V_t - V^{old}_t, -\epsilon_v, \epsilon_v)

        L = \tfrac12\,\mathrm{mean}_t \max((V_t - R_t)^2, (V^{clip}_t - R_t)^2)

    Shapes: ``values``, ``old_values`` (the rollout critic), ``returns`` (GAE
    targets, constants), ``mask``: ``[B, T]``.

    Metrics: ``loss/value``; ``val/clipfrac``, the share of tokens where the
    clipped error is the larger one; ``val/error``, the mean squared error of
    the unclipped values.
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    err_unclipped = (values - returns) ** 2  # [B, T]
    err_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err_unclipped, err_clipped), mask)
    with torch.no_grad():
        metrics = {
            "loss/value": loss.detach(),
            "val/clipfrac": masked_mean((err_clipped > err_unclipped).float(), mask),
            "val/error": masked_mean(err_unclipped.detach(), mask),
        }
    return loss, metrics
