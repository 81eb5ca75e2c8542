"""The judgments frame of an agreement report, shaped once for every statistic.

`annotate.agreement` documents the frame's columns. Here: the column names,
the side codes, the frame factorised into integer arrays (`_Rows`) that the
coefficient and bias modules share, and the Wilson-interval helpers every
figure uses. Pure functions, no Django.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

JUDGMENT_COLUMNS = (
    "comparison",
    "annotator",
    "overall",
    "swapped",
    "seconds",
    "over_budget",
    "len_a",
    "len_b",
    "gold",
)
SIDES = ("A", "tie", "B")  # category codes 0, 1, 2; -1 = not given
A, TIE, B = 0, 1, 2


def axis_column(axis: str) -> str:
    return f"axis:{axis}"


def side_codes(values: pd.Series) -> np.ndarray:
    """ "A"/"tie"/"B" -> 0/1/2; anything else -> -1."""
    codes = {"A": A, "tie": TIE, "B": B}
    if isinstance(values.dtype, pd.CategoricalDtype):
        # Map the few categories, then gather by category code (-1, missing,
        # picks the trailing -1): no per-row lookup.
        table = [codes.get(c, -1) for c in values.cat.categories]
        return np.array([*table, -1], np.int8)[values.cat.codes.to_numpy()]
    return values.map(codes).fillna(-1).to_numpy(dtype=np.int8)


def overall_codes(overall: np.ndarray) -> np.ndarray:
    return (np.sign(overall) + 1).astype(np.int8)


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def _rate(count: int, n: int) -> dict[str, Any]:
    """A proportion with its Wilson 95% interval."""
    if n == 0:
        return {"value": None, "ci95": None, "n": 0}
    lo, hi = proportion_confint(count, n, alpha=0.05, method="wilson")
    return {"value": count / n, "ci95": [_num(lo), _num(hi)], "n": int(n)}


def _rates(counts: np.ndarray, ns: np.ndarray) -> list[dict[str, Any]]:
    """Vectorised `_rate` for many groups at once."""
    safe = np.maximum(ns, 1)
    lo, hi = proportion_confint(counts, safe, alpha=0.05, method="wilson")
    return [
        {"value": c / n, "ci95": [_num(a), _num(b)], "n": int(n)}
        if n
        else {"value": None, "ci95": None, "n": 0}
        for c, n, a, b in zip(
            counts.tolist(),
            ns.tolist(),
            np.atleast_1d(lo).tolist(),
            np.atleast_1d(hi).tolist(),
            strict=True,
        )
    ]


@dataclass(frozen=True)
class _Rows:
    """The frame as integer arrays, factorised once and shared by every axis."""

    comp: np.ndarray  # (N,) comparison code 0..M-1
    n_comp: int
    ann: np.ndarray  # (N,) annotator code 0..U-1 (sorted usernames)
    names: list[str]
    swapped: np.ndarray
    seconds: np.ndarray
    len_a: np.ndarray
    len_b: np.ndarray
    pair_lo: np.ndarray  # (P,) row indexes of every pair of judgments sharing a comparison
    pair_hi: np.ndarray
    time_bin: np.ndarray  # (N,) time-spent quartile 0..3 over the project's judgments, -1 unknown
    time_ranges: dict[int, tuple[float, float]]  # quartile -> (min, max) seconds
    x_len: np.ndarray  # (M,) length feature of each comparison: log2((len_b + 1) / (len_a + 1))
    x_order: np.ndarray  # (M,) comparisons by ascending x_len


def _rows(frame: pd.DataFrame) -> _Rows:
    comp, comps = pd.factorize(frame["comparison"].to_numpy())
    # A Categorical column factorises without sorting a million strings.
    ann, names = pd.factorize(frame["annotator"], sort=True)
    lo, hi = _pairs(comp, ann)
    len_a = frame["len_a"].to_numpy(dtype=np.int64)
    len_b = frame["len_b"].to_numpy(dtype=np.int64)
    x_len = np.zeros(len(comps))
    # The ratio first: IEEE division is correctly rounded, so pairs with the
    # same relative length (2 vs 22, 14 vs 154) get the very same feature and
    # tie in the AUC, which a difference of two logs can miss by an ulp.
    x_len[comp] = np.log2((len_b + 1.0) / (len_a + 1.0))
    seconds = frame["seconds"].to_numpy(dtype=float)
    known = ~np.isnan(seconds)
    time_bin = np.full(len(seconds), -1, np.int64)
    time_bin[known] = _quantile_bins(seconds[known], 4)
    time_ranges = {}
    for b in range(4):
        in_bin = seconds[time_bin == b]
        if in_bin.size:
            time_ranges[b] = (float(in_bin.min()), float(in_bin.max()))
    return _Rows(
        comp=comp,
        n_comp=len(comps),
        ann=ann,
        names=[str(n) for n in names],
        swapped=frame["swapped"].to_numpy(dtype=bool),
        seconds=seconds,
        len_a=len_a,
        len_b=len_b,
        pair_lo=lo,
        pair_hi=hi,
        time_bin=time_bin,
        time_ranges=time_ranges,
        x_len=x_len,
        x_order=np.argsort(x_len, kind="stable"),
    )


def _pairs(comp: np.ndarray, ann: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indexes (lo, hi) of every pair of judgments on the same comparison, ann[lo] < ann[hi].

    Naive loop: ``for rows in groups: for i < j in rows: yield rows[i], rows[j]``.
    Grouped by comparison, row i pairs with i+1, i+2, ... while the comparison
    stays the same; `live` keeps only the starts still inside their group.
    """
    grouped = comp.size < 2 or bool(
        (comp[1:] >= comp[:-1]).all()
    )  # factorised codes of a sorted frame
    order = np.arange(comp.size) if grouped else np.argsort(comp, kind="stable")
    c = comp[order]
    live = np.arange(len(c))
    los, his = [], []
    off = 1
    while live.size:
        live = live[live + off < len(c)]
        live = live[c[live + off] == c[live]]
        los.append(order[live])
        his.append(order[live + off])
        off += 1
    if not los:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    lo, hi = np.concatenate(los), np.concatenate(his)
    swap = ann[lo] > ann[hi]  # one orientation per annotator pair, for the pair id
    return np.where(swap, hi, lo), np.where(swap, lo, hi)


def _counts(rows: _Rows, cat: np.ndarray, n_cat: int = 3) -> np.ndarray:
    """(M, n_cat) judgments per comparison and category; cat < 0 is left out."""
    ok = cat >= 0
    flat = np.bincount(rows.comp[ok] * n_cat + cat[ok], minlength=rows.n_comp * n_cat)
    return flat.reshape(rows.n_comp, n_cat)


def _quantile_bins(x: np.ndarray, k: int) -> np.ndarray:
    """Bin index (0..k-1) of each value by empirical quantile; equal values share a bin."""
    if x.size == 0:
        return np.zeros(0, np.int64)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, k + 1)[1:-1], method="inverted_cdf"))
    return np.searchsorted(edges, x, side="left")


def empty_frame(axes: Sequence[str] = ()) -> pd.DataFrame:
    """A frame with the expected columns and no rows."""
    return pd.DataFrame(
        {c: pd.Series(dtype=object) for c in (*JUDGMENT_COLUMNS, *map(axis_column, axes))}
    )
