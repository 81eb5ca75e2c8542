"""Agreement coefficients of one axis: pure functions over the shaped frame.

Pairwise agreement (with a bootstrap CI), Krippendorff's alpha, Fleiss' and
Cohen's kappa, agreement by time-spent quartile, leave-one-out majority
agreement and cross-axis conflicts. The libraries compute the statistics
(`krippendorff`, statsmodels); we shape the counts they take.
"""

from __future__ import annotations

from typing import Any

import krippendorff
import numpy as np
from statsmodels.stats.inter_rater import cohens_kappa, fleiss_kappa

from annotate.agreement_frame import A, B, _num, _Rows

MIN_SHARED_FOR_KAPPA = 20
# Eligible pairs grow quadratically with annotators; the report keeps the
# best-supported ones (and says how many were eligible) so its size and cost stay bounded.
MAX_KAPPA_PAIRS = 500
N_BOOT = 2000


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
