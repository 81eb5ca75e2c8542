"""training.diagnostics: hand-made cases with known answers; the statistics vs numpy/scipy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from training.diagnostics import length_rule_accuracy, reward_length_report, scalar_metrics


def test_a_pure_length_model_gains_nothing_over_the_length_rule() -> None:
    # Rewards ARE the lengths: right whenever the longer answer won, wrong otherwise.
    lc = np.array([10, 20, 30, 5, 8, 40])
    lr = np.array([5, 10, 40, 50, 8, 1])
    report = reward_length_report(lc.astype(float), lr.astype(float), lc, lr)
    assert report["accuracy"] == pytest.approx(
        3 / 6
    )  # 3 longer-chosen right; the tie (8 vs 8) is wrong
    assert report["acc_chosen_longer"] == 1.0 and report["acc_chosen_shorter"] == 0.0
    assert report["length_flip_gap"] == 1.0
    assert report["length_rule"] == pytest.approx(
        {"pick_longer": 3.5 / 6, "pick_shorter": 2.5 / 6, "best": 3.5 / 6}
    )
    assert report["acc_over_length_heuristic"] == pytest.approx(3 / 6 - 3.5 / 6)
    assert report["reward_len_spearman"] == pytest.approx(1.0)
    assert report["pair_len_corr"] == pytest.approx(1.0) and report["len_r2"] == pytest.approx(1.0)
    assert (report["n_chosen_longer"], report["n_chosen_shorter"], report["n_equal_length"]) == (
        3,
        2,
        1,
    )


def test_a_length_blind_perfect_model() -> None:
    lc = np.array([10, 20, 30, 40])
    lr = np.array([40, 10, 50, 20])
    report = reward_length_report([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], lc, lr)
    assert report["accuracy"] == 1.0 and report["length_flip_gap"] == 0.0
    assert report["length_rule"]["best"] == 0.5 and report["acc_over_length_heuristic"] == 0.5
    assert report["pair_len_corr"] is None  # constant reward gap: undefined, reported as null


def test_statistics_agree_with_scipy_and_numpy() -> None:
    rng = np.random.default_rng(0)
    lc, lr = rng.integers(1, 300, 200), rng.integers(1, 300, 200)
    rc = 0.01 * lc + rng.normal(size=200)
    rr = 0.01 * lr + rng.normal(size=200)
    report = reward_length_report(rc, rr, lc, lr)
    rewards, lens = np.concatenate([rc, rr]), np.concatenate([lc, lr])
    assert report["reward_len_spearman"] == pytest.approx(stats.spearmanr(rewards, lens).statistic)
    assert report["pair_len_corr"] == pytest.approx(stats.pearsonr(lc - lr, rc - rr).statistic)
    slope, intercept = np.polyfit(lens, rewards, 1)
    residual = rewards - (slope * lens + intercept)
    assert report["len_r2"] == pytest.approx(1 - residual.var() / rewards.var())
    assert report["accuracy"] == pytest.approx(np.mean(rc > rr))


def test_accuracy_by_margin_and_agreement() -> None:
    report = reward_length_report(
        [1, 1, 0, 1, 0],
        [0, 0, 1, 0, 1],
        [1, 2, 3, 4, 5],
        [5, 4, 3, 2, 1],
        margins=[1.0, 1.0, 1 / 3, 1 / 3, float("nan")],
        agreement=[1.0, 2 / 3, 2 / 3, 1.0, 1.0],
    )
    assert report["acc_by_margin"] == {
        "0.3333": {"n": 2, "accuracy": 0.5},
        "1": {"n": 2, "accuracy": 1.0},
    }
    assert report["acc_by_agreement"] == {
        "0.667": {"n": 2, "accuracy": 0.5},
        "1": {"n": 3, "accuracy": 2 / 3},
    }
    json.dumps(report, allow_nan=False)  # valid JSON: no NaN anywhere
    flat = scalar_metrics(report)
    assert (
        flat["accuracy"] == 0.6 and "acc_by_margin" not in flat and flat["length_rule_best"] == 0.5
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), min_size=1, max_size=40))
def test_the_two_length_rules_are_complementary(lengths: list[tuple[int, int]]) -> None:
    lc, lr = zip(*lengths, strict=True)
    rule = length_rule_accuracy(lc, lr)
    assert rule["pick_longer"] + rule["pick_shorter"] == pytest.approx(1.0)
    assert rule["best"] >= 0.5


def test_mismatched_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        reward_length_report([1.0], [0.0, 1.0], [1], [2])
