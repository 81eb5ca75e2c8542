"""training/ops.py: GAE against the naive loop, masked statistics, KL estimators
on distributions whose KL is known, the adaptive KL controller."""
from __future__ import annotations

import math

import pytest
import torch

from training.ops import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    explained_variance,
    gae_advantages,
    kl_estimate,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
)


def naive_gae(rewards, values, lengths, gamma, lam):
    """The textbook definition, one episode and one token at a time."""
    batch, steps = rewards.shape
    adv = torch.zeros(batch, steps, dtype=torch.float64)
    for b in range(batch):
        n = lengths[b]
        for t in range(n):
            total = 0.0
            for k in range(t, n):  # sum_k (gamma*lam)^(k-t) delta_k
                v_next = values[b, k + 1].item() if k + 1 < n else 0.0
                delta = rewards[b, k].item() + gamma * v_next - values[b, k].item()
                total += (gamma * lam) ** (k - t) * delta
            adv[b, t] = total
    return adv


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 1.0), (0.99, 0.0), (0.8, 0.7)])
def test_gae_matches_naive_loop(gamma, lam):
    g = torch.Generator().manual_seed(0)
    lengths = [7, 3, 1, 5]
    rewards = torch.randn(4, 7, generator=g, dtype=torch.float64)
    values = torch.randn(4, 7, generator=g, dtype=torch.float64)
    mask = torch.zeros(4, 7, dtype=torch.float64)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    adv, ret = gae_advantages(rewards * mask, values, mask, gamma=gamma, lam=lam)
    expected = naive_gae(rewards * mask, values, lengths, gamma, lam)
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, (expected + values) * mask)
    assert torch.all(adv[mask == 0] == 0)


def test_gae_lambda_one_gamma_one_is_reward_to_go_minus_value():
    rewards = torch.tensor([[0.0, 0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, -0.1, 9.0]])  # the padded value must be ignored
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([[2.0, 2.0, 2.0, 0.0]]))
    torch.testing.assert_close(adv, torch.tensor([[1.5, 1.8, 2.1, 0.0]]))


def test_masked_mean_var_whiten_ignore_padding():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, -50.0, -50.0, -50.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert masked_mean(x, mask).item() == pytest.approx(2.5)
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([2.0, 4.0]))
    # unbiased variance of [1,2,3,4] is 5/3
    assert masked_var(x, mask).item() == pytest.approx(5 / 3)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(1.25)
    w = masked_whiten(x, mask)
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_var(w, mask).item() == pytest.approx(1.0, rel=1e-5)
    assert torch.all(w[mask == 0] == 0)
    w2 = masked_whiten(x, mask, shift_mean=False)
    assert masked_mean(w2, mask).item() == pytest.approx(2.5, rel=1e-5)
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0  # empty mask: 0, not NaN


def test_kl_estimators_converge_on_categoricals_with_known_kl():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])  # policy
    q = torch.tensor([0.25, 0.25, 0.25, 0.25])  # reference
    exact = float((p * (p / q).log()).sum())
    g = torch.Generator().manual_seed(1)
    samples = torch.multinomial(p, 200_000, replacement=True, generator=g)
    logp, ref_logp = p.log()[samples], q.log()[samples]
    k1 = kl_estimate(logp, ref_logp, kind="k1")
    k2 = kl_estimate(logp, ref_logp, kind="k2")
    k3 = kl_estimate(logp, ref_logp, kind="k3")
    assert k1.mean().item() == pytest.approx(exact, abs=0.01)
    assert k3.mean().item() == pytest.approx(exact, abs=0.01)
    assert torch.all(k3 >= 0) and torch.all(k2 >= 0)
    assert bool((k1 < 0).any())  # k1 is unbiased but single samples go negative
    assert k3.var().item() < k1.var().item()  # k3's point: lower variance
    # k2's bias is second order: close for nearby distributions
    assert k2.mean().item() == pytest.approx(exact, rel=0.25)
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(logp, ref_logp, kind="k4")


def test_kl_estimates_are_zero_when_policy_equals_reference():
    logp = torch.log(torch.tensor([0.2, 0.7, 0.1]))
    for kind in ("k1", "k2", "k3"):
        assert torch.all(kl_estimate(logp, logp.clone(), kind=kind) == 0)


def test_entropy_and_logprobs_from_logits():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [1.0, 1e-30, 1e-30]]]))
    ent = entropy_from_logits(logits)
    assert ent[0, 0].item() == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)), rel=1e-5)
    assert ent[0, 1].item() == pytest.approx(0.0, abs=1e-5)
    lp = logprobs_from_logits(logits, torch.tensor([[1, 0]]))
    torch.testing.assert_close(lp, torch.tensor([[math.log(0.25), 0.0]]))


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert explained_variance(returns.clone(), returns, mask).item() == pytest.approx(1.0)
    const = torch.full_like(returns, 2.0)
    assert explained_variance(const, returns, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert explained_variance(-returns, returns, mask).item() < 0


def test_adaptive_kl_controller_moves_towards_target():
    ctl = AdaptiveKLController(value=0.1, target=6.0, horizon=10_000)
    ctl.update(12.0, n_steps=1000)  # error clipped to +0.2 -> beta * (1 + 0.2 * 0.1)
    assert ctl.value == pytest.approx(0.1 * 1.02)
    ctl.update(6.0 * 0.9, n_steps=1000)  # error -0.1 -> beta * (1 - 0.01)
    assert ctl.value == pytest.approx(0.1 * 1.02 * 0.99)
    ctl.update(float("nan"), n_steps=1000)
    assert ctl.value == pytest.approx(0.1 * 1.02 * 0.99)
    fixed = FixedKLController(0.05)
    fixed.update(100.0, n_steps=10)
    assert fixed.value == 0.05
