"""PPO's clipped policy and value losses against values computed by hand."""
from __future__ import annotations

import math

import pytest
import torch

from training.losses import ppo_policy_loss, ppo_value_loss


def test_policy_loss_hand_computed():
    # Four tokens, eps = 0.2; the last one is padding and must not count.
    #   t0: A=+1, rho=1.5 -> unclipped -1.5, clipped -1.2 -> max -1.2 (clipped active)
    #   t1: A=-1, rho=0.5 -> unclipped +0.5, clipped +0.8 -> max +0.8 (clipped active)
    #   t2: A=+2, rho=0.9 -> unclipped -1.8, clipped -1.8 -> max -1.8 (inside the range)
    #   t3: padding (A=100, rho=e^3)
    ratios = torch.tensor([[1.5, 0.5, 0.9, math.exp(3.0)]])
    old = torch.zeros(1, 4)
    new = ratios.log()
    adv = torch.tensor([[1.0, -1.0, 2.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, m = ppo_policy_loss(new, old, adv, mask, clip_range=0.2)
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 1.8) / 3, rel=1e-6)
    assert m["policy/clipfrac"].item() == pytest.approx(2 / 3)
    expected_kl = 0.5 * (math.log(1.5) ** 2 + math.log(0.5) ** 2 + math.log(0.9) ** 2) / 3
    assert m["policy/approxkl"].item() == pytest.approx(expected_kl, rel=1e-6)
    assert m["val/ratio"].item() == pytest.approx((1.5 + 0.5 + 0.9) / 3, rel=1e-6)
    assert m["loss/policy"].item() == pytest.approx(loss.item())


def test_policy_loss_gradient_vanishes_where_clipped():
    # A>0 and rho > 1 + eps: the objective is flat, no gradient; inside the range the
    # gradient of -A*rho w.r.t. log pi is -A*rho.
    new = torch.tensor([[math.log(1.5), math.log(1.1)]], requires_grad=True)
    loss, _ = ppo_policy_loss(new, torch.zeros(1, 2), torch.tensor([[1.0, 1.0]]), torch.ones(1, 2), clip_range=0.2)
    loss.backward()
    assert new.grad[0, 0].item() == 0.0
    assert new.grad[0, 1].item() == pytest.approx(-1.1 / 2, rel=1e-6)


def test_policy_loss_on_policy_equals_minus_mean_advantage():
    adv = torch.tensor([[0.3, -0.7, 1.1]])
    logp = torch.tensor([[-1.0, -2.0, -0.5]])
    loss, m = ppo_policy_loss(logp, logp.clone(), adv, torch.ones(1, 3))
    assert loss.item() == pytest.approx(-adv.mean().item(), rel=1e-6)
    assert m["policy/clipfrac"].item() == 0.0 and m["policy/approxkl"].item() == 0.0
    assert m["val/ratio"].item() == pytest.approx(1.0)


def test_value_loss_hand_computed():
    # eps_v = 0.2:
    #   t0: V=1.0, old=0.5, R=2.0 -> clip V to 0.7: (1-2)^2=1, (0.7-2)^2=1.69 -> 1.69 (clipped larger)
    #   t1: V=0.1, old=0.0, R=0.0 -> inside: 0.01, 0.01 -> 0.01
    #   t2: V=-1.0, old=0.0, R=0.5 -> clip to -0.2: 2.25, 0.49 -> 2.25 (unclipped larger)
    #   t3: padding
    values = torch.tensor([[1.0, 0.1, -1.0, 9.0]])
    old = torch.tensor([[0.5, 0.0, 0.0, 0.0]])
    returns = torch.tensor([[2.0, 0.0, 0.5, -9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, m = ppo_value_loss(values, old, returns, mask, clip_range_value=0.2)
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.01 + 2.25) / 3, rel=1e-5)
    assert m["val/clipfrac"].item() == pytest.approx(1 / 3)
    assert m["val/error"].item() == pytest.approx((1.0 + 0.01 + 2.25) / 3, rel=1e-5)
    assert m["loss/value"].item() == pytest.approx(loss.item())
