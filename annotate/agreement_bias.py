"""Label-bias statistics of one axis: length, position and gold accuracy.

How often the longer response wins (overall and by length-gap quintile), a
length-only logistic fit, how often the left-hand response wins, and gold
hits. Pure functions over the shaped frame (`annotate.agreement_frame`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from annotate.agreement_frame import A, B, _num, _quantile_bins, _rate, _rates, _Rows

# Length-only logistic fit: a weak L2 penalty (negligible next to thousands of
# judgments) keeps the coefficient finite when a small batch is separable.
LEN_FIT_C = 1e4


def _length_figures(rows: _Rows, cat: np.ndarray) -> dict[str, Any]:
    decided = (cat == A) | (cat == B)
    la, lb, chose_b = rows.len_a[decided], rows.len_b[decided], cat[decided] == B
    unequal = la != lb
    longer = chose_b[unequal] == (lb > la)[unequal]
    gap = np.abs(lb - la)[unequal]
    quintiles = []
    bins = _quantile_bins(gap, 5)
    n_bin = np.bincount(bins, minlength=5)
    hits = np.bincount(bins, weights=longer, minlength=5).astype(np.int64)
    for b, fig in enumerate(_rates(hits, n_bin)):
        if fig["n"]:
            in_bin = gap[bins == b]
            quintiles.append(
                {"bin": b + 1, "gap_chars": [int(in_bin.min()), int(in_bin.max())], **fig}
            )
    coef = auc = None
    if chose_b.size and 0 < chose_b.sum() < chose_b.size:
        # Every judgment of a comparison has the same length feature: fit on
        # (comparison, choice) rows weighted by their count -- the same
        # likelihood and the same AUC as one row per judgment, on fewer rows.
        # Rows go in ascending x, so the AUC's stable sort meets sorted input.
        comp = rows.comp[decided]
        w1 = np.bincount(comp, weights=chose_b, minlength=rows.n_comp)[rows.x_order]
        w0 = np.bincount(comp, minlength=rows.n_comp)[rows.x_order] - w1
        weight = np.stack([w0, w1], axis=1).ravel()  # (2M,) interleaved: x order kept
        keep = weight > 0
        xk = np.repeat(rows.x_len[rows.x_order], 2)[keep].reshape(-1, 1)
        yk = np.tile([False, True], rows.n_comp)[keep]
        weight = weight[keep]
        if np.ptp(xk) > 0:  # all pairs the same relative length: nothing to fit
            fit = LogisticRegression(C=LEN_FIT_C, solver="newton-cholesky", tol=1e-8)
            fit.fit(xk, yk, sample_weight=weight)
            coef = _num(fit.coef_[0, 0])
            auc = _num(roc_auc_score(yk, fit.decision_function(xk), sample_weight=weight))
    return {
        "longer_chosen_rate": _rate(int(longer.sum()), int(longer.size)),
        "longer_chosen_by_gap_quintile": quintiles,
        "len_logit_coef": coef,
        "len_only_auc": auc,
    }


def _left_chosen(rows: _Rows, cat: np.ndarray) -> dict[str, Any]:
    left = _left_mask(rows, cat)
    k, n = int(left.sum()), int(((cat == A) | (cat == B)).sum())
    out = _rate(k, n)
    out["p_value"] = _num(binomtest(k, n, 0.5).pvalue) if n else None
    return out


def _left_mask(rows: _Rows, cat: np.ndarray) -> np.ndarray:
    # Whatever was on the left: A unless the assignment swapped the pair.
    return ((cat == A) & ~rows.swapped) | ((cat == B) & rows.swapped)


def _gold_hits(frame: pd.DataFrame, overall_cat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gold = frame["gold"].to_numpy(dtype=float)
    has = ~np.isnan(gold)
    return has, has & (overall_cat == np.nan_to_num(gold).astype(np.int8) + 1)
