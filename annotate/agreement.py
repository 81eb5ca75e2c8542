"""Agreement and label-bias report for one project: pure functions over pandas frames.

We shape the data; well-kept libraries compute the statistics (`krippendorff`,
statsmodels, scikit-learn, scipy). No Django here: `annotate.services.reports`
loads the frames and caches the result.

Input: ``judgments`` has one row per *current* judgment with the columns of
`JUDGMENT_COLUMNS` plus one ``axis:<name>`` column per rubric axis holding
"A" / "tie" / "B" (anything else, e.g. None, means "not given"):

    comparison  int    comparison id          annotator  str   username
    overall     int    signed strength (<0 A, 0 tie, >0 B), canonical orientation
    swapped     bool   B was shown on the left      over_budget  bool
    seconds     float  time spent (NaN unknown)     len_a, len_b  int  characters
    gold        float  gold sign of the comparison (-1/0/+1) or NaN

``assignments`` (optional) has columns ``annotator, status, n`` (counts per
status) for skip rates.

Output (`project_report`), a JSON-safe dict; floats that cannot be computed
are null. A "figure with a CI" is ``{"value": x, "ci95": [lo, hi], "n": n}``.

    {"schema_version": 1, "project": slug, "length_unit": "characters",
     "summary": {n_judgments, n_comparisons, n_comparisons_multi, n_annotators,
                 median_seconds, over_budget_rate, skip_rate},
     "axes": {"overall" | <rubric axis>: {
        n_judgments, n_decided (A or B, not tie),
        pairwise_agreement: figure (+ n_pairs, n_comparisons) -- share of annotator
            pairs on the same comparison choosing the same side (A/tie/B); CI:
            percentile bootstrap over comparisons,
        krippendorff_alpha_nominal: float (side),
        krippendorff_alpha_ordinal: float (overall only: the signed strength scale),
        fleiss_kappa: {value, n_comparisons, raters} over comparisons with the
            modal number of judgments,
        cohen_kappa: {min_shared, pairs_eligible, pairs: [{annotators: [u1, u2],
            shared, value}]} -- pairs with >= min_shared shared items, the
            MAX_KAPPA_PAIRS with most shared items,
        longer_chosen_rate: figure (Wilson CI) over decided judgments of unequal length,
        longer_chosen_by_gap_quintile: [{bin, gap_chars: [lo, hi], value, ci95, n}],
        len_logit_coef: float -- logistic fit (sklearn, C=LEN_FIT_C) of "chose B" on
            log2((len_b + 1) / (len_a + 1)): log-odds per doubling of relative length,
        len_only_auc: float -- AUC of that length-only fit,
        left_chosen_rate: figure (Wilson CI) + p_value (two-sided binomial test vs 0.5),
        agreement_by_time_quartile: [{bin, seconds: [lo, hi], value, n}] -- share of
            a judgment's co-annotators who agree with it, by its time quartile,
        gold_accuracy: figure (overall only) -- side matches the gold sign}},
     "cross_axis_conflict": {axes: [...], rate: [[...]], n: [[...]]} -- among
        judgments where both axes pick a side, the share picking opposite sides,
     "annotators": [{username, judgments, median_seconds, over_budget_rate,
        skip_rate, loo_majority_agreement: figure, gold_accuracy: figure,
        longer_chosen_rate: figure, left_chosen_rate: figure}]}

Per-annotator figures are on the overall preference. ``loo_majority_agreement``
compares a judgment with the majority side of the *other* judgments of its
comparison (judgments whose others have no unique majority are left out).
``skip_rate`` = skipped / (submitted + skipped) assignments.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import krippendorff
import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from statsmodels.stats.inter_rater import cohens_kappa, fleiss_kappa
from statsmodels.stats.proportion import proportion_confint
from threadpoolctl import threadpool_limits

SCHEMA_VERSION = 1
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
MIN_SHARED_FOR_KAPPA = 20
# Eligible pairs grow quadratically with annotators; the report keeps the
# best-supported ones (and says how many were eligible) so its size and cost stay bounded.
MAX_KAPPA_PAIRS = 500
N_BOOT = 2000
# Length-only logistic fit: a weak L2 penalty (negligible next to thousands of
# judgments) keeps the coefficient finite when a small batch is separable.
LEN_FIT_C = 1e4


def axis_column(axis: str) -> str:
    return f"axis:{axis}"


def side_codes(values: pd.Series) -> np.ndarray:
    """ "A"/"tie"/"B" -> 0/1/2; anything else -> -1."""
    return values.map({"A": A, "tie": TIE, "B": B}).fillna(-1).to_numpy(dtype=np.int8)


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
    x_len[comp] = np.log2(len_b + 1.0) - np.log2(len_a + 1.0)
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


def _pairwise(counts: np.ndarray, rng: np.random.Generator, n_boot: int) -> dict[str, Any]:
    n = counts.sum(axis=1)
    multi = n >= 2
    agree = (counts[multi] * (counts[multi] - 1) // 2).sum(axis=1)
    pairs = (n[multi] * (n[multi] - 1)) // 2
    total = int(pairs.sum())
    out: dict[str, Any] = {
        "value": None,
        "ci95": None,
        "n_pairs": total,
        "n_comparisons": int(multi.sum()),
    }
    if total == 0:
        return out
    # Naive bootstrap:
    #   for b in range(B): i = rng.integers(0, M, M); stat[b] = agree[i].sum() / pairs[i].sum()
    # Drawing M comparisons with replacement only matters through how often each
    # distinct (agree, pairs) kind is drawn: a multinomial over a handful of kinds.
    key = agree * (int(pairs.max()) + 1) + pairs
    kinds, freq = np.unique(key, return_counts=True)
    k_agree, k_pairs = kinds // (int(pairs.max()) + 1), kinds % (int(pairs.max()) + 1)
    draws = rng.multinomial(len(pairs), freq / len(pairs), size=n_boot)  # (B, K)
    stats = (draws @ k_agree) / (draws @ k_pairs)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    out.update(value=int(agree.sum()) / total, ci95=[float(lo), float(hi)])
    return out


def _alpha(counts: np.ndarray, level: str, domain: np.ndarray | None = None) -> float | None:
    units = counts[counts.sum(axis=1) >= 2]
    if (units.sum(axis=0) > 0).sum() < 2:
        return None  # one category only: alpha is undefined (0 / 0)
    # Float counts: the same small integers, but the package's coincidence
    # sum runs ~4x faster on float64 than on int64 arrays.
    values = units.astype(np.float64)
    return _num(
        krippendorff.alpha(value_counts=values, value_domain=domain, level_of_measurement=level)
    )


def _fleiss(counts: np.ndarray) -> dict[str, Any]:
    n = counts.sum(axis=1)
    sizes = n[n >= 2]
    if sizes.size == 0:
        return {"value": None, "n_comparisons": 0, "raters": None}
    mode = int(np.bincount(sizes).argmax())
    table = counts[n == mode]
    value = fleiss_kappa(table, method="fleiss") if (table.sum(axis=0) > 0).sum() >= 2 else None
    return {"value": _num(value), "n_comparisons": int(len(table)), "raters": mode}


def _cohen(rows: _Rows, cat: np.ndarray, min_shared: int) -> dict[str, Any]:
    ok = (cat[rows.pair_lo] >= 0) & (cat[rows.pair_hi] >= 0)
    lo, hi = rows.pair_lo[ok], rows.pair_hi[ok]
    u = len(rows.names)
    key = rows.ann[lo].astype(np.int64) * u + rows.ann[hi]  # annotator pair id
    dense = u * u <= 4_000_000  # a dense table by pair id beats sorting a million pairs
    if dense:
        per_key = np.bincount(key, minlength=u * u)
        keys = np.flatnonzero(per_key)
        shared = per_key[keys]
    else:
        keys, shared = np.unique(key, return_counts=True)
    eligible = shared >= min_shared
    e_keys, e_shared = keys[eligible], shared[eligible]
    chosen = np.sort(e_keys[np.lexsort((e_keys, -e_shared))][:MAX_KAPPA_PAIRS])
    pairs = []
    if chosen.size:
        # One 3x3 contingency table per chosen pair, all from one bincount;
        # statsmodels computes kappa from a table in ~0.1 ms, where sklearn's
        # cohen_kappa_score on raw labels takes ~2 ms (the tests check they agree).
        if dense:
            slot = np.full(u * u, -1, np.int64)
            slot[chosen] = np.arange(chosen.size)
            pos = slot[key]
            keep = pos >= 0
        else:
            pos = np.minimum(np.searchsorted(chosen, key), chosen.size - 1)
            keep = chosen[pos] == key
        cells = pos[keep] * 9 + cat[lo[keep]].astype(np.int64) * 3 + cat[hi[keep]]
        tables = np.bincount(cells, minlength=chosen.size * 9).reshape(-1, 3, 3)
        for k, table in zip(chosen.tolist(), tables, strict=True):
            a1, a2 = divmod(k, u)
            with np.errstate(invalid="ignore", divide="ignore"):  # both used one category: 0/0
                kappa = cohens_kappa(table, return_results=False)
            pairs.append(
                {
                    "annotators": [rows.names[a1], rows.names[a2]],
                    "shared": int(table.sum()),
                    "value": _num(kappa),
                }
            )
        pairs.sort(key=lambda p: (-p["shared"], p["annotators"]))
    return {
        "min_shared": min_shared,
        "pairs_eligible": int(eligible.sum()),
        "pairs": pairs,
    }


def _quantile_bins(x: np.ndarray, k: int) -> np.ndarray:
    """Bin index (0..k-1) of each value by empirical quantile; equal values share a bin."""
    if x.size == 0:
        return np.zeros(0, np.int64)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, k + 1)[1:-1], method="inverted_cdf"))
    return np.searchsorted(edges, x, side="left")


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


def _by_time(rows: _Rows, cat: np.ndarray, counts: np.ndarray) -> list[dict[str, Any]]:
    n = counts.sum(axis=1)[rows.comp]
    use = np.flatnonzero((cat >= 0) & (n >= 2) & (rows.time_bin >= 0))
    agree = counts[rows.comp[use], cat[use]] - 1  # co-annotators choosing the same side
    partners = n[use] - 1
    bins = rows.time_bin[use]
    agree_sum = np.bincount(bins, weights=agree, minlength=4)
    partner_sum = np.bincount(bins, weights=partners, minlength=4)
    n_bin = np.bincount(bins, minlength=4)
    out = []
    for b in np.flatnonzero(n_bin).tolist():
        out.append(
            {
                "bin": b + 1,
                "seconds": list(rows.time_ranges[b]),
                "value": float(agree_sum[b] / partner_sum[b]),
                "n": int(n_bin[b]),
            }
        )
    return out


def _gold_hits(frame: pd.DataFrame, overall_cat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gold = frame["gold"].to_numpy(dtype=float)
    has = ~np.isnan(gold)
    return has, has & (overall_cat == np.nan_to_num(gold).astype(np.int8) + 1)


def _axis_report(
    rows: _Rows, cat: np.ndarray, rng: np.random.Generator, n_boot: int, min_shared: int
) -> dict[str, Any]:
    counts = _counts(rows, cat)
    decided = (cat == A) | (cat == B)
    return {
        "n_judgments": int((cat >= 0).sum()),
        "n_decided": int(decided.sum()),
        "pairwise_agreement": _pairwise(counts, rng, n_boot),
        "krippendorff_alpha_nominal": _alpha(counts, "nominal"),
        "fleiss_kappa": _fleiss(counts),
        "cohen_kappa": _cohen(rows, cat, min_shared),
        **_length_figures(rows, cat),
        "left_chosen_rate": _left_chosen(rows, cat),
        "agreement_by_time_quartile": _by_time(rows, cat, counts),
    }


def _conflicts(cats: dict[str, np.ndarray]) -> dict[str, Any]:
    names = list(cats)
    decided = {k: (c == A) | (c == B) for k, c in cats.items()}
    rate: list[list[float | None]] = []
    count: list[list[int]] = []
    for a in names:
        rate.append([])
        count.append([])
        for b in names:
            both = decided[a] & decided[b]
            n = int(both.sum())
            opposite = int((both & (cats[a] != cats[b])).sum())
            rate[-1].append(None if a == b or n == 0 else opposite / n)
            count[-1].append(n)
    return {"axes": names, "rate": rate, "n": count}


def _loo_majority(
    rows: _Rows, cat: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per judgment: usable (the others have a unique majority side) and agrees with it."""
    valid = cat >= 0
    others = counts[rows.comp].copy()  # (N, 3)
    idx = np.flatnonzero(valid)
    others[idx, cat[idx]] -= 1
    top = others.max(axis=1)
    unique = (others == top[:, None]).sum(axis=1) == 1
    usable = valid & (top > 0) & unique
    agrees = usable & (others[np.arange(len(cat)), np.maximum(cat, 0)] == top)
    return usable, agrees


def _annotators(
    frame: pd.DataFrame,
    rows: _Rows,
    cat: np.ndarray,
    counts: np.ndarray,
    assignments: pd.DataFrame | None,
) -> list[dict[str, Any]]:
    u = len(rows.names)

    def per(mask: np.ndarray) -> np.ndarray:
        return np.bincount(rows.ann[mask], minlength=u)

    usable, agrees = _loo_majority(rows, cat, counts)
    has_gold, gold_hit = _gold_hits(frame, cat)
    decided = (cat == A) | (cat == B)
    unequal = decided & (rows.len_a != rows.len_b)
    longer = unequal & ((cat == B) == (rows.len_b > rows.len_a))
    judged = per(np.ones(len(cat), bool))
    over = per(frame["over_budget"].to_numpy(dtype=bool))
    medians = pd.Series(rows.seconds).groupby(rows.ann).median().reindex(range(u))
    skip = dict.fromkeys(rows.names, None)
    if assignments is not None and len(assignments):
        table = assignments.pivot_table(
            index="annotator", columns="status", values="n", aggfunc="sum", fill_value=0
        )
        skipped = table.get("skipped", pd.Series(0, index=table.index))
        closed = skipped + table.get("submitted", pd.Series(0, index=table.index))
        skip.update(
            {
                str(k): (float(s / c) if c else None)
                for k, s, c in zip(table.index, skipped, closed, strict=True)
            }
        )
    figures = {
        "loo_majority_agreement": _rates(per(agrees), per(usable)),
        "gold_accuracy": _rates(per(gold_hit), per(has_gold)),
        "longer_chosen_rate": _rates(per(longer), per(unequal)),
        "left_chosen_rate": _rates(per(_left_mask(rows, cat)), per(decided)),
    }
    return [
        {
            "username": name,
            "judgments": int(judged[i]),
            "median_seconds": _num(medians.iloc[i]),
            "over_budget_rate": float(over[i] / judged[i]) if judged[i] else None,
            "skip_rate": skip.get(name),
            **{key: figs[i] for key, figs in figures.items()},
        }
        for i, name in enumerate(rows.names)
    ]


def project_report(
    judgments: pd.DataFrame,
    *,
    project: str,
    axes: Sequence[str],
    max_strength: int,
    assignments: pd.DataFrame | None = None,
    seed: int = 0,
    n_boot: int = N_BOOT,
    min_shared_for_kappa: int = MIN_SHARED_FOR_KAPPA,
    workers: int = 2,
) -> dict[str, Any]:
    """The whole report (see the module docstring for its schema).

    The axes are independent, so up to `workers` threads compute them at once
    (numpy, krippendorff and sklearn release the GIL in their heavy loops).
    Each axis bootstraps with its own generator seeded from (seed, axis
    index): the result does not depend on the scheduling.
    """
    rows = _rows(judgments)
    overall = judgments["overall"].to_numpy(dtype=np.int64)
    cats = {"overall": overall_codes(overall)}
    for axis in axes:
        col = axis_column(axis)
        missing = np.full(len(judgments), -1, np.int8)
        cats[axis] = side_codes(judgments[col]) if col in judgments else missing
    # Ordinal alpha on the signed strength; the domain spans the scale even if
    # some points were never used, so it does not depend on what was observed.
    lo = min(-max_strength, int(overall.min(initial=0)))
    hi = max(max_strength, int(overall.max(initial=0)))
    strength = _counts(rows, (overall - lo).astype(np.int64), n_cat=hi - lo + 1)
    overall_counts = _counts(rows, cats["overall"])
    tasks: dict[str, Callable[[], Any]] = {
        "ordinal": partial(_alpha, strength, "ordinal", np.arange(lo, hi + 1)),
        "annotators": partial(
            _annotators, judgments, rows, cats["overall"], overall_counts, assignments
        ),
    }
    for i, (name, cat) in enumerate(cats.items()):
        rng = np.random.default_rng([seed, i])
        tasks[f"axis:{name}"] = partial(_axis_report, rows, cat, rng, n_boot, min_shared_for_kappa)
    # Single-feature fits gain nothing from BLAS/OpenMP threads: they would only
    # spin against our own worker threads.
    with threadpool_limits(limits=1):
        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = {key: pool.submit(task) for key, task in tasks.items()}
                done = {key: future.result() for key, future in futures.items()}
        else:
            done = {key: task() for key, task in tasks.items()}
    report_axes = {name: done[f"axis:{name}"] for name in cats}
    report_axes["overall"]["krippendorff_alpha_ordinal"] = done["ordinal"]
    has_gold, gold_hit = _gold_hits(judgments, cats["overall"])
    report_axes["overall"]["gold_accuracy"] = _rate(int(gold_hit.sum()), int(has_gold.sum()))
    annotators = done["annotators"]
    skip_rate = None
    if assignments is not None and len(assignments):
        by_status = assignments.groupby("status")["n"].sum()
        closed = int(by_status.get("skipped", 0) + by_status.get("submitted", 0))
        skip_rate = float(by_status.get("skipped", 0) / closed) if closed else None
    n_per_comp = overall_counts.sum(axis=1)
    return {
        "schema_version": SCHEMA_VERSION,
        "project": project,
        "length_unit": "characters",
        "summary": {
            "n_judgments": int(len(judgments)),
            "n_comparisons": int(rows.n_comp),
            "n_comparisons_multi": int((n_per_comp >= 2).sum()),
            "n_annotators": len(rows.names),
            "median_seconds": _num(np.nanmedian(rows.seconds))
            if np.isfinite(rows.seconds).any()
            else None,
            "over_budget_rate": _num(judgments["over_budget"].mean()) if len(judgments) else None,
            "skip_rate": skip_rate,
        },
        "axes": report_axes,
        "cross_axis_conflict": _conflicts(cats),
        "annotators": annotators,
    }


def empty_frame(axes: Sequence[str] = ()) -> pd.DataFrame:
    """A frame with the expected columns and no rows."""
    return pd.DataFrame(
        {c: pd.Series(dtype=object) for c in (*JUDGMENT_COLUMNS, *map(axis_column, axes))}
    )
