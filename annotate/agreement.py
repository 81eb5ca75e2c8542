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

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

# The statistics live in three modules by responsibility; the names used
# elsewhere (services, tests, benchmarks) stay importable from here.
from annotate.agreement_bias import (
    LEN_FIT_C,
    _gold_hits,
    _left_chosen,
    _left_mask,
    _length_figures,
)
from annotate.agreement_coefficients import (
    MAX_KAPPA_PAIRS,
    MIN_SHARED_FOR_KAPPA,
    N_BOOT,
    _alpha,
    _by_time,
    _cohen,
    _conflicts,
    _fleiss,
    _loo_majority,
    _pairwise,
)
from annotate.agreement_frame import (
    JUDGMENT_COLUMNS,
    SIDES,
    A,
    B,
    _counts,
    _num,
    _rate,
    _rates,
    _Rows,
    _rows,
    axis_column,
    empty_frame,
    overall_codes,
    side_codes,
)

__all__ = [
    "JUDGMENT_COLUMNS",
    "LEN_FIT_C",
    "MAX_KAPPA_PAIRS",
    "MIN_SHARED_FOR_KAPPA",
    "N_BOOT",
    "SCHEMA_VERSION",
    "SIDES",
    "_alpha",
    "_cohen",
    "_pairwise",
    "_rows",
    "axis_column",
    "empty_frame",
    "overall_codes",
    "project_report",
    "side_codes",
]

SCHEMA_VERSION = 1


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
