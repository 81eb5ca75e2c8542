"""Length-bias statistics for preference models (pure numpy/scipy, no torch).

Preference data and the models trained on it reward length: longer answers win
55-70% of human comparisons regardless of quality (Singhal et al. 2023, "A Long
Way to Go"), and a reward model can reach most of its accuracy by counting
tokens. These functions say how much of a model's accuracy a length-only rule
would already get, and how strongly its rewards follow length.

Names follow DESIGN.md "Diagnostics vocabulary". Lengths are token counts of
the completion only (not the prompt). Undefined statistics (e.g. a correlation
of a constant) are reported as ``None`` so the report stays valid JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

ArrayLike = Sequence[float] | np.ndarray


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return _finite_or_none(float(np.corrcoef(x, y)[0, 1]))


def length_rule_accuracy(
    chosen_lens: ArrayLike, rejected_lens: ArrayLike
) -> dict[str, float | None]:
    """Accuracy of the two length-only rules on these pairs.

    "pick longer" is right when the chosen completion is longer; "pick
    shorter" when it is shorter; a pair of equal lengths counts 1/2 for both
    (a coin flip). ``best`` is the better of the two: the accuracy any model
    must beat before it has learned more than length.
    """
    c = np.asarray(chosen_lens, dtype=np.float64)
    r = np.asarray(rejected_lens, dtype=np.float64)
    if len(c) == 0:
        return {"pick_longer": None, "pick_shorter": None, "best": None}
    ties = 0.5 * np.mean(c == r)
    longer = float(np.mean(c > r) + ties)
    shorter = float(np.mean(c < r) + ties)
    return {"pick_longer": longer, "pick_shorter": shorter, "best": max(longer, shorter)}


def _accuracy_by(
    groups: np.ndarray, correct: np.ndarray, decimals: int
) -> dict[str, dict[str, float | int]]:
    """Accuracy per distinct value of `groups` (NaN rows dropped), keyed by the rounded value."""
    out: dict[str, dict[str, float | int]] = {}
    keep = ~np.isnan(groups)
    rounded = np.round(groups[keep], decimals)
    kept_correct = correct[keep]
    for value in np.unique(rounded):
        mask = rounded == value
        out[f"{value:g}"] = {"n": int(mask.sum()), "accuracy": float(kept_correct[mask].mean())}
    return out


def reward_length_report(
    chosen_rewards: ArrayLike,
    rejected_rewards: ArrayLike,
    chosen_lens: ArrayLike,
    rejected_lens: ArrayLike,
    *,
    margins: ArrayLike | None = None,
    agreement: ArrayLike | None = None,
) -> dict[str, Any]:
    """Accuracy of a reward model and how much of it is length.

    Inputs are per pair (length N). Keys:

    - ``accuracy``: share of pairs with r_chosen > r_rejected (ties are wrong).
    - ``acc_chosen_longer`` / ``acc_chosen_shorter``: accuracy on the pairs
      whose chosen completion is longer / shorter (equal lengths in neither).
    - ``length_flip_gap``: acc_chosen_longer - acc_chosen_shorter. Near 0 for
      a model that ignores length; large and positive for one that prefers
      longer answers (it is right when the longer one won and wrong when the
      shorter one did).
    - ``length_rule``: accuracies of "pick longer" / "pick shorter" / best.
    - ``acc_over_length_heuristic``: accuracy - length_rule.best.
    - ``reward_len_spearman``: Spearman rank correlation between every
      completion's reward and its token length (2N points).
    - ``pair_len_corr``: Pearson correlation between the reward gap
      (r_c - r_r) and the length gap (len_c - len_r) over pairs.
    - ``len_r2``: R^2 of the least-squares line reward ~ a + b * length over
      all 2N completions (the share of reward variance length explains).
    - ``acc_by_margin`` / ``acc_by_agreement``: {value: {n, accuracy}} when
      those columns are given (rows with NaN are left out).
    """
    rc = np.asarray(chosen_rewards, dtype=np.float64)
    rr = np.asarray(rejected_rewards, dtype=np.float64)
    lc = np.asarray(chosen_lens, dtype=np.float64)
    lr = np.asarray(rejected_lens, dtype=np.float64)
    n = len(rc)
    if not (len(rr) == len(lc) == len(lr) == n):
        raise ValueError(f"lengths differ: rewards {n}/{len(rr)}, lens {len(lc)}/{len(lr)}")
    correct = rc > rr  # [N] bool
    longer = lc > lr
    shorter = lc < lr
    rule = length_rule_accuracy(lc, lr)
    accuracy = float(correct.mean()) if n else None
    acc_longer = float(correct[longer].mean()) if longer.any() else None
    acc_shorter = float(correct[shorter].mean()) if shorter.any() else None

    rewards = np.concatenate([rc, rr])  # [2N]
    lens = np.concatenate([lc, lr])  # [2N]
    spearman = None
    if n >= 2 and np.std(rewards) > 0 and np.std(lens) > 0:
        spearman = _finite_or_none(float(stats.spearmanr(rewards, lens).statistic))
    r_all = _pearson(lens, rewards)

    report: dict[str, Any] = {
        "n_pairs": n,
        "accuracy": accuracy,
        "acc_chosen_longer": acc_longer,
        "acc_chosen_shorter": acc_shorter,
        "length_flip_gap": (acc_longer - acc_shorter)
        if acc_longer is not None and acc_shorter is not None
        else None,
        "acc_over_length_heuristic": (accuracy - rule["best"])
        if accuracy is not None and rule["best"] is not None
        else None,
        "reward_len_spearman": spearman,
        "pair_len_corr": _pearson(lc - lr, rc - rr),
        "len_r2": None if r_all is None else r_all**2,
        "length_rule": rule,
        "longer_chosen_rate": float(longer.mean()) if n else None,
        "n_chosen_longer": int(longer.sum()),
        "n_chosen_shorter": int(shorter.sum()),
        "n_equal_length": int(n - longer.sum() - shorter.sum()),
        "mean_margin": float((rc - rr).mean()) if n else None,
    }
    if margins is not None:
        report["acc_by_margin"] = _accuracy_by(np.asarray(margins, dtype=np.float64), correct, 4)
    if agreement is not None:
        report["acc_by_agreement"] = _accuracy_by(
            np.asarray(agreement, dtype=np.float64), correct, 3
        )
    return report


def scalar_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The report's top-level numbers (for the metrics sink): nested tables and None left out."""
    flat = {
        k: float(v)
        for k, v in report.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    rule = report.get("length_rule") or {}
    if rule.get("best") is not None:
        flat["length_rule_best"] = float(rule["best"])
    return flat
