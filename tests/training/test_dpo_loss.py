"""dpo_loss against values computed by hand (plain floats, math module), for every variant."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import DPO_VARIANTS, dpo_loss

# Two pairs. Summed completion log-probs of the policy and the reference.
PC, PR = [-10.0, -20.0], [-12.0, -15.0]
RC, RR = [-11.0, -19.0], [-11.5, -16.0]
LC, LR = [10, 30], [20, 12]  # completion lengths in tokens
BETA = 0.1


def t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def log_sigmoid(x: float) -> float:
    return math.log(sigmoid(x))


def h(i: int) -> float:
    """Log-ratio gap of pair i: (pi_w - ref_w) - (pi_l - ref_l)."""
    return (PC[i] - RC[i]) - (PR[i] - RR[i])


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def call(variant: str, **kw: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    return dpo_loss(
        t(PC),
        t(PR),
        t(RC),
        t(RR),
        beta=kw.pop("beta", BETA),
        variant=variant,
        chosen_lengths=torch.tensor(LC),
        rejected_lengths=torch.tensor(LR),
        **kw,
    )


def test_hand_values_of_the_gaps() -> None:
    # pair 0: (-10 + 11) - (-12 + 11.5) = 1.5; pair 1: (-20 + 19) - (-15 + 16) = -2
    assert h(0) == pytest.approx(1.5) and h(1) == pytest.approx(-2.0)


def test_sigmoid_matches_hand_computation() -> None:
    loss, m = call("sigmoid")
    expected = mean([-log_sigmoid(BETA * h(0)), -log_sigmoid(BETA * h(1))])
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert m["rewards/chosen"].item() == pytest.approx(
        mean([BETA * (PC[i] - RC[i]) for i in range(2)]), rel=1e-6
    )
    assert m["rewards/rejected"].item() == pytest.approx(
        mean([BETA * (PR[i] - RR[i]) for i in range(2)]), rel=1e-6
    )
    assert m["rewards/margins"].item() == pytest.approx(mean([BETA * h(0), BETA * h(1)]), rel=1e-6)
    assert m["rewards/accuracies"].item() == pytest.approx(0.5)  # pair 0 right, pair 1 wrong


def test_cdpo_label_smoothing() -> None:
    eps = 0.2
    loss, _ = call("sigmoid", label_smoothing=eps)
    expected = mean(
        [-(1 - eps) * log_sigmoid(BETA * h(i)) - eps * log_sigmoid(-BETA * h(i)) for i in range(2)]
    )
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ipo() -> None:
    loss, _ = call("ipo")
    expected = mean([(h(i) - 1 / (2 * BETA)) ** 2 for i in range(2)])  # (1.5 - 5)^2, (-2 - 5)^2
    assert expected == pytest.approx((12.25 + 49.0) / 2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_hinge() -> None:
    loss, _ = call("hinge", beta=1.0)
    expected = mean([max(0.0, 1 - 1.0 * h(i)) for i in range(2)])  # max(0, -0.5) = 0, max(0, 3) = 3
    assert expected == pytest.approx(1.5)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_rdpo_length_regularizer() -> None:
    alpha = 0.05
    loss, m = call("rdpo", alpha=alpha)
    expected = mean([-log_sigmoid(BETA * h(i) - alpha * (LC[i] - LR[i])) for i in range(2)])
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # alpha = 0 is plain DPO; the implicit rewards do not depend on alpha.
    plain, m0 = call("rdpo", alpha=0.0)
    assert plain.item() == pytest.approx(call("sigmoid")[0].item(), rel=1e-6)
    assert m["rewards/margins"].item() == pytest.approx(m0["rewards/margins"].item())


def test_rdpo_penalises_a_longer_chosen_answer() -> None:
    """Same log-ratios; the pair whose chosen answer is longer gets the larger loss."""
    kw = {"beta": BETA, "variant": "rdpo", "alpha": 0.05}
    longer, _ = dpo_loss(
        t([-1.0]),
        t([-2.0]),
        t([-1.0]),
        t([-2.0]),
        chosen_lengths=torch.tensor([40]),
        rejected_lengths=torch.tensor([10]),
        **kw,
    )
    shorter, _ = dpo_loss(
        t([-1.0]),
        t([-2.0]),
        t([-1.0]),
        t([-2.0]),
        chosen_lengths=torch.tensor([10]),
        rejected_lengths=torch.tensor([40]),
        **kw,
    )
    assert longer.item() > math.log(2) > shorter.item()


def test_simpo_is_reference_free_and_length_normalised() -> None:
    beta, gamma = 2.0, 0.5
    loss, m = dpo_loss(
        t(PC),
        t(PR),
        None,
        None,
        beta=beta,
        variant="simpo",
        gamma=gamma,
        chosen_lengths=torch.tensor(LC),
        rejected_lengths=torch.tensor(LR),
    )
    z = [beta * PC[i] / LC[i] - beta * PR[i] / LR[i] - gamma for i in range(2)]
    # pair 0: 2*(-1.0) - 2*(-0.6) - 0.5 = -1.3; pair 1: 2*(-2/3) - 2*(-1.25) - 0.5 = 0.6667
    assert z[0] == pytest.approx(-1.3) and z[1] == pytest.approx(2 / 3)
    assert loss.item() == pytest.approx(mean([-log_sigmoid(x) for x in z]), rel=1e-6)
    assert m["rewards/chosen"].item() == pytest.approx(
        mean([beta * PC[i] / LC[i] for i in range(2)]), rel=1e-6
    )
    assert m["rewards/accuracies"].item() == pytest.approx(0.5)
    # The reference is ignored entirely.
    with_ref, _ = call("simpo", beta=beta, gamma=gamma)
    assert with_ref.item() == pytest.approx(loss.item())


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0, 5.0])
def test_policy_equal_to_reference_gives_log_two(beta: float) -> None:
    logps = torch.randn(16) * 30 - 50
    other = torch.randn(16) * 30 - 50
    loss, m = dpo_loss(logps, other, logps.clone(), other.clone(), beta=beta)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert m["rewards/margins"].item() == 0.0 and m["rewards/accuracies"].item() == 0.0


def test_gradient_pushes_chosen_up_and_rejected_down() -> None:
    pc, pr = t(PC).requires_grad_(), t(PR).requires_grad_()
    loss, _ = dpo_loss(pc, pr, t(RC), t(RR), beta=BETA)
    loss.backward()
    # d/dpc of -log sigmoid(beta h) = -beta * sigmoid(-beta h) / B
    for i in range(2):
        assert pc.grad[i].item() == pytest.approx(-BETA * sigmoid(-BETA * h(i)) / 2, rel=1e-5)
        assert pr.grad[i].item() == pytest.approx(BETA * sigmoid(-BETA * h(i)) / 2, rel=1e-5)


def test_metrics_are_detached_scalars_for_every_variant() -> None:
    for variant in DPO_VARIANTS:
        loss, m = call(variant, alpha=0.01)
        assert loss.ndim == 0 and loss.requires_grad is False  # inputs carry no grad here
        assert set(m) >= {
            "loss",
            "rewards/chosen",
            "rewards/rejected",
            "rewards/margins",
            "rewards/accuracies",
        }
        assert all(v.ndim == 0 and not v.requires_grad for v in m.values())


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown DPO variant"):
        call("kto")
    with pytest.raises(ValueError, match="needs chosen_lengths"):
        dpo_loss(t(PC), t(PR), t(RC), t(RR), beta=BETA, variant="rdpo", alpha=0.1)
    with pytest.raises(ValueError, match="needs reference"):
        dpo_loss(t(PC), t(PR), None, None, beta=BETA)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(t(PC), t(PR), t(RC), t(RR), beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(t(PC), t(PR), t(RC), t(RR), beta=BETA, label_smoothing=0.5)
    with pytest.raises(ValueError, match="differ in shape"):
        dpo_loss(t(PC), t([1.0]), t(RC), t(RR), beta=BETA)
