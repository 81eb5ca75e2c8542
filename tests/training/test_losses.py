"""training.losses.bradley_terry_loss against values computed by hand with `math`."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import bradley_terry_loss


def nll(x: float) -> float:
    """-log sigmoid(x) = log(1 + e^-x), by hand."""
    return math.log1p(math.exp(-x))


def test_loss_matches_hand_computed_values() -> None:
    chosen = torch.tensor([1.0, 0.0, 3.0])
    rejected = torch.tensor([0.0, 2.0, 3.0])
    loss, metrics = bradley_terry_loss(chosen, rejected)
    expected = (nll(1.0) + nll(-2.0) + nll(0.0)) / 3  # (0.3133 + 2.1269 + 0.6931) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.item() == pytest.approx(1.0444, abs=1e-4)
    assert metrics["accuracy"].item() == pytest.approx(1 / 3)  # a tie (3 vs 3) counts as wrong
    assert metrics["margin"].item() == pytest.approx((1 - 2 + 0) / 3)
    assert metrics["reward_chosen"].item() == pytest.approx(4 / 3)
    assert metrics["reward_rejected"].item() == pytest.approx(5 / 3)


def test_margin_is_subtracted_inside_the_sigmoid() -> None:
    loss, metrics = bradley_terry_loss(
        torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]), margin=torch.tensor([0.5, 1.0])
    )
    assert loss.item() == pytest.approx((nll(1.0 - 0.5) + nll(-2.0 - 1.0)) / 2, rel=1e-6)
    assert metrics["margin"].item() == pytest.approx(
        -0.5
    )  # the reward gap itself, not minus the margin


def test_centering_term() -> None:
    chosen, rejected = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.5])
    plain, _ = bradley_terry_loss(chosen, rejected)
    loss, metrics = bradley_terry_loss(chosen, rejected, center_coef=0.1)
    penalty = ((1.0 + 0.0) ** 2 + (0.5 + 1.5) ** 2) / 2  # mean (r_c + r_r)^2 = 2.5
    assert metrics["center_penalty"].item() == pytest.approx(penalty)
    assert loss.item() == pytest.approx(plain.item() + 0.1 * penalty, rel=1e-6)
    assert loss.item() == pytest.approx((nll(1.0) + nll(-1.0)) / 2 + 0.25, rel=1e-6)


def test_gradient_matches_the_closed_form() -> None:
    # d/dr_c of -log sigmoid(r_c - r_r) / B is -(1 - sigmoid(r_c - r_r)) / B; the opposite for r_r.
    chosen = torch.tensor([0.3, -1.2, 2.0], requires_grad=True)
    rejected = torch.tensor([0.1, 0.4, -0.5], requires_grad=True)
    loss, _ = bradley_terry_loss(chosen, rejected)
    loss.backward()
    diffs = [0.2, -1.6, 2.5]
    expected = [-(1 - 1 / (1 + math.exp(-d))) / 3 for d in diffs]
    torch.testing.assert_close(chosen.grad, torch.tensor(expected))
    torch.testing.assert_close(rejected.grad, -torch.tensor(expected))


def test_shapes_and_stability() -> None:
    loss, _ = bradley_terry_loss(
        torch.tensor([[0.0], [1000.0]]), torch.tensor([[1000.0], [0.0]])
    )  # [B, 1]
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(
        500.0
    )  # (1000 + ~0) / 2, no overflow
    loss16, _ = bradley_terry_loss(
        torch.tensor([1.0, 0.0], dtype=torch.bfloat16),
        torch.tensor([0.0, 2.0], dtype=torch.bfloat16),
    )
    assert loss16.dtype == torch.float32  # computed in fp32 even under bf16 autocast
    with pytest.raises(ValueError, match="differ in shape"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(2))


def test_metrics_are_detached_and_loss_is_not() -> None:
    chosen = torch.tensor([1.0, 2.0], requires_grad=True)
    loss, metrics = bradley_terry_loss(chosen, torch.zeros(2))
    assert loss.requires_grad
    assert all(not v.requires_grad and v.dim() == 0 for v in metrics.values())
