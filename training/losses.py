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
        shapes = f"chosen {tuple(chosen.shape)} and rejected {tuple(rejected.shape)}"
        raise ValueError(f"{shapes} rewards differ in shape")
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


# --- Direct preference optimisation -------------------------------------------------------------

DPO_VARIANTS = ("sigmoid", "ipo", "hinge", "rdpo", "simpo")


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None,
    ref_rejected_logps: Tensor | None,
    *,
    beta: float,
    variant: str = "sigmoid",
    label_smoothing: float = 0.0,
    alpha: float = 0.0,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
    gamma: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""Pairwise preference-optimisation losses on sequence log-probs (DPO and its variants).

    Inputs are summed log-probs of the completion tokens only,
    :math:`\log\pi(y|x) = \sum_t \log\pi(y_t | x, y_{<t})`, for the chosen
    :math:`y_w` and rejected :math:`y_l` completion of each pair. With the
    log-ratios :math:`\rho_w = \log\pi_\theta(y_w|x) - \log\pi_{ref}(y_w|x)`,
    :math:`\rho_l` likewise, and :math:`h = \rho_w - \rho_l`:

    - ``sigmoid`` -- DPO (Rafailov et al. 2023, eq. 7) with conservative
      label smoothing :math:`\epsilon` (cDPO, Mitchell 2023: the label is
      flipped with probability :math:`\epsilon`):
      :math:`L = -(1-\epsilon)\log\sigma(\beta h) - \epsilon\log\sigma(-\beta h)`.
    - ``ipo`` -- IPO (Azar et al. 2023, "A General Theoretical Paradigm to
      Understand Learning from Human Preferences", eq. 17): regress the
      log-ratio gap onto a finite target instead of pushing it to infinity,
      :math:`L = (h - \frac{1}{2\beta})^2`, with :math:`\beta` the paper's
      :math:`\tau` and sequence-level (summed) log-probs as in the paper.
    - ``hinge`` -- SLiC-HF (Zhao et al. 2023, eq. 1 with :math:`\delta=1`):
      :math:`L = \max(0, 1 - \beta h)`.
    - ``rdpo`` -- length-regularised DPO (Park et al. 2024, "Disentangling
      Length from Quality in Direct Preference Optimization", eq. 9): the
      length gap in tokens enters the sigmoid, so a longer chosen answer must
      earn a larger margin,
      :math:`L = -\log\sigma(\beta h - \alpha(|y_w| - |y_l|))` (cDPO
      smoothing applies as for ``sigmoid``). Needs the lengths.
    - ``simpo`` -- SimPO (Meng et al. 2024, eq. 6): reference-free and
      length-normalised, with a target margin :math:`\gamma`,
      :math:`L = -\log\sigma(\frac{\beta}{|y_w|}\log\pi_\theta(y_w|x)
      - \frac{\beta}{|y_l|}\log\pi_\theta(y_l|x) - \gamma)`. The reference
      log-probs are ignored (may be ``None``). Needs the lengths.

    Implicit rewards reported as metrics: :math:`\beta\rho` for the
    reference-based variants, :math:`\frac{\beta}{|y|}\log\pi_\theta(y|x)` for
    ``simpo``.

    Shapes:
        policy_*_logps, ref_*_logps: ``[B]`` (fp32 recommended).
        chosen_lengths, rejected_lengths: ``[B]`` completion lengths in tokens
        (required by ``rdpo`` and ``simpo``).
    Returns:
        loss: 0-dim mean over the B pairs, with grad.
        metrics: detached 0-dim tensors ``loss``, ``rewards/chosen``,
        ``rewards/rejected``, ``rewards/margins`` (chosen - rejected) and
        ``rewards/accuracies`` (share of pairs with a positive margin; ties
        are wrong).
    """
    if variant not in DPO_VARIANTS:
        raise ValueError(f"unknown DPO variant {variant!r}; expected one of {', '.join(DPO_VARIANTS)}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    pi_w = policy_chosen_logps.reshape(-1).float()  # [B]
    pi_l = policy_rejected_logps.reshape(-1).float()  # [B]
    if pi_w.shape != pi_l.shape:
        raise ValueError(f"chosen {tuple(pi_w.shape)} and rejected {tuple(pi_l.shape)} log-probs differ in shape")
    needs_lengths = variant in ("rdpo", "simpo")
    if needs_lengths and (chosen_lengths is None or rejected_lengths is None):
        raise ValueError(f"variant {variant!r} needs chosen_lengths and rejected_lengths")

    if variant == "simpo":
        len_w = chosen_lengths.reshape(-1).to(pi_w).clamp(min=1)  # [B]
        len_l = rejected_lengths.reshape(-1).to(pi_w).clamp(min=1)  # [B]
        reward_w = beta * pi_w / len_w  # [B]
        reward_l = beta * pi_l / len_l  # [B]
        logits = reward_w - reward_l - gamma  # [B]
    else:
        if ref_chosen_logps is None or ref_rejected_logps is None:
            raise ValueError(f"variant {variant!r} needs reference log-probs")
        rho_w = pi_w - ref_chosen_logps.reshape(-1).to(pi_w)  # [B]
        rho_l = pi_l - ref_rejected_logps.reshape(-1).to(pi_w)  # [B]
        reward_w, reward_l = beta * rho_w, beta * rho_l  # [B]
        h = rho_w - rho_l  # [B]
        logits = beta * h  # [B]
        if variant == "rdpo":
            gap = chosen_lengths.reshape(-1).to(pi_w) - rejected_lengths.reshape(-1).to(pi_w)  # [B]
            logits = logits - alpha * gap

    if variant == "ipo":
        per_pair = (h - 1.0 / (2.0 * beta)) ** 2
    elif variant == "hinge":
        per_pair = torch.relu(1.0 - logits)
    else:  # sigmoid, rdpo, simpo: (smoothed) logistic loss on the logit
        per_pair = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    loss = per_pair.mean()

    with torch.no_grad():
        margins = reward_w - reward_l
        metrics = {
            "loss": loss.detach(),
            "rewards/chosen": reward_w.mean().detach(),
            "rewards/rejected": reward_l.mean().detach(),
            "rewards/margins": margins.mean().detach(),
            "rewards/accuracies": (margins > 0).float().mean(),
        }
    return loss, metrics
