"""annotate.agreement on hand-made cases with known answers, each figure also
checked against the library called directly on the raw, unshaped data.

The `ref_*` helpers are the oracles: they start from one row per judgment and
call krippendorff / statsmodels / sklearn / scipy the textbook way (raw
reliability matrix, subjects x raters matrix, label vectors), so they share no
shaping code with the module under test. test_agreement_properties.py reuses
them on random data.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from typing import Any

import krippendorff
import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score, roc_auc_score
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa
from statsmodels.stats.proportion import proportion_confint

from annotate import agreement

AXES = ("helpful", "harmless")
SIDE = {"A": 0, "tie": 1, "B": 2}


def make_frame(records: list[dict[str, Any]], axes: tuple[str, ...] = AXES) -> pd.DataFrame:
    rows = []
    for r in records:
        row = {
            "comparison": r["comparison"],
            "annotator": r["annotator"],
            "overall": r["overall"],
            "swapped": r.get("swapped", False),
            "seconds": r.get("seconds", float("nan"))
            if r.get("seconds") is not None
            else float("nan"),
            "over_budget": r.get("over_budget", False),
            "len_a": r.get("len_a", 10),
            "len_b": r.get("len_b", 10),
            "gold": r.get("gold", float("nan")) if r.get("gold") is not None else float("nan"),
        }
        for axis in axes:
            row[agreement.axis_column(axis)] = r.get(axis)
        rows.append(row)
    return pd.DataFrame(
        rows, columns=[*agreement.JUDGMENT_COLUMNS, *map(agreement.axis_column, axes)]
    )


def report(frame: pd.DataFrame, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("n_boot", 300)
    return agreement.project_report(frame, project="t", axes=AXES, max_strength=3, **kwargs)


def side_of(frame: pd.DataFrame, axis: str) -> pd.Series:
    """Category code per judgment (0 A, 1 tie, 2 B; NaN when not given)."""
    if axis == "overall":
        return np.sign(frame["overall"]).astype(float) + 1
    return frame[agreement.axis_column(axis)].map(SIDE).astype(float)


def _clean(x: float) -> float | None:
    return None if x is None or math.isnan(x) or math.isinf(x) else float(x)


def ref_alpha(frame: pd.DataFrame, axis: str, level: str = "nominal") -> float | None:
    values = frame["overall"].astype(float) if level == "ordinal" else side_of(frame, axis)
    matrix = (
        pd.DataFrame({"c": frame["comparison"], "a": frame["annotator"].astype(str), "v": values})
        .pivot(index="a", columns="c", values="v")
        .to_numpy(dtype=float)
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return _clean(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))
    except ValueError:  # one value only, or no unit with two coders: undefined
        return None


def ref_groups(frame: pd.DataFrame, axis: str) -> dict[Any, list[tuple[str, int]]]:
    groups: dict[Any, list[tuple[str, int]]] = defaultdict(list)
    for c, a, v in zip(
        frame["comparison"], frame["annotator"].astype(str), side_of(frame, axis), strict=True
    ):
        if not math.isnan(v):
            groups[c].append((a, int(v)))
    return groups


def ref_pairwise(frame: pd.DataFrame, axis: str) -> float | None:
    agree = pairs = 0
    for labels in ref_groups(frame, axis).values():
        for i in range(len(labels)):
            for j in range(i + 1, len(labels)):
                agree += labels[i][1] == labels[j][1]
                pairs += 1
    return agree / pairs if pairs else None


def ref_fleiss(frame: pd.DataFrame, axis: str) -> float | None:
    groups = [g for g in ref_groups(frame, axis).values() if len(g) >= 2]
    if not groups:
        return None
    sizes = Counter(len(g) for g in groups)
    mode = min(n for n, k in sizes.items() if k == max(sizes.values()))
    subjects = np.array([[v for _, v in g] for g in groups if len(g) == mode])
    table, _ = aggregate_raters(subjects, n_cat=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _clean(fleiss_kappa(table, method="fleiss"))


def ref_cohen(
    frame: pd.DataFrame, axis: str, min_shared: int
) -> dict[tuple[str, str], float | None]:
    by_pair: dict[tuple[str, str], tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for labels in ref_groups(frame, axis).values():
        for a1, v1 in labels:
            for a2, v2 in labels:
                if a1 < a2:
                    by_pair[(a1, a2)][0].append(v1)
                    by_pair[(a1, a2)][1].append(v2)
    out = {}
    for pair, (x, y) in by_pair.items():
        if len(x) >= min_shared:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # undefined (one shared category): sklearn says nan
                out[pair] = _clean(cohen_kappa_score(x, y, labels=[0, 1, 2]))
    return out


def ref_rate(hits: int, n: int) -> tuple[float, float, float]:
    lo, hi = proportion_confint(hits, n, alpha=0.05, method="wilson")
    return hits / n, lo, hi


def ref_length(frame: pd.DataFrame, axis: str) -> dict[str, Any]:
    side = side_of(frame, axis)
    decided = side.isin([0, 2])
    la, lb, chose_b = frame["len_a"][decided], frame["len_b"][decided], side[decided] == 2
    unequal = la != lb
    longer = (chose_b == (lb > la))[unequal]
    out: dict[str, Any] = {"hits": int(longer.sum()), "n": int(unequal.sum())}
    if 0 < chose_b.sum() < len(chose_b):
        # Equal relative lengths must tie exactly (see agreement_frame's x_len).
        x = np.log2((lb + 1.0) / (la + 1.0)).to_numpy().reshape(-1, 1)
        fit = LogisticRegression(C=agreement.LEN_FIT_C, solver="lbfgs", tol=1e-10, max_iter=10_000)
        fit.fit(x, chose_b)
        out["coef"] = float(fit.coef_[0, 0])
        out["auc"] = float(roc_auc_score(chose_b, fit.decision_function(x)))
    return out


def ref_left(frame: pd.DataFrame, axis: str) -> tuple[int, int]:
    side = side_of(frame, axis)
    left = ((side == 0) & ~frame["swapped"]) | ((side == 2) & frame["swapped"])
    return int(left.sum()), int(side.isin([0, 2]).sum())


def ref_loo(frame: pd.DataFrame) -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for labels in ref_groups(frame, "overall").values():
        for i, (a, v) in enumerate(labels):
            others = Counter(w for j, (_, w) in enumerate(labels) if j != i)
            if not others:
                continue
            (top, k), *rest = others.most_common()
            if rest and rest[0][1] == k:
                continue  # no unique majority among the others
            out[a][0] += top == v
            out[a][1] += 1
    return {a: (h, n) for a, (h, n) in out.items()}


# --- hand-made cases with known answers -------------------------------------


def perfect_records() -> list[dict[str, Any]]:
    sides = [-2, 0, 3, -1, 2]
    return [
        {
            "comparison": c,
            "annotator": a,
            "overall": sides[c % 5],
            "helpful": "A" if sides[c % 5] < 0 else "B",
        }
        for c in range(30)
        for a in ("ann", "bea", "cy")
    ]


def test_perfect_agreement_is_one_everywhere_and_matches_the_libraries() -> None:
    frame = make_frame(perfect_records())
    r = report(frame)
    o = r["axes"]["overall"]
    assert o["pairwise_agreement"]["value"] == 1.0 and o["pairwise_agreement"]["ci95"] == [1.0, 1.0]
    assert o["krippendorff_alpha_nominal"] == pytest.approx(1.0) == ref_alpha(frame, "overall")
    assert (
        o["krippendorff_alpha_ordinal"]
        == pytest.approx(1.0)
        == ref_alpha(frame, "overall", "ordinal")
    )
    assert o["fleiss_kappa"]["value"] == pytest.approx(1.0) == ref_fleiss(frame, "overall")
    assert o["fleiss_kappa"]["raters"] == 3 and o["fleiss_kappa"]["n_comparisons"] == 30
    kappas = {tuple(p["annotators"]): p["value"] for p in o["cohen_kappa"]["pairs"]}
    assert kappas == pytest.approx(ref_cohen(frame, "overall", 20))
    assert set(kappas) == {("ann", "bea"), ("ann", "cy"), ("bea", "cy")} and set(
        kappas.values()
    ) == {1.0}
    assert all(u["loo_majority_agreement"]["value"] == 1.0 for u in r["annotators"])
    h = r["axes"]["helpful"]
    assert h["pairwise_agreement"]["value"] == 1.0 and h[
        "krippendorff_alpha_nominal"
    ] == pytest.approx(1.0)


def test_systematic_disagreement_has_known_negative_values() -> None:
    # x says A on the first 20 and B on the rest; y always says the opposite.
    records = []
    for c in range(40):
        x = -1 if c < 20 else 1
        records += [
            {"comparison": c, "annotator": "x", "overall": x},
            {"comparison": c, "annotator": "y", "overall": -x},
        ]
    frame = make_frame(records)
    o = report(frame)["axes"]["overall"]
    assert o["pairwise_agreement"]["value"] == 0.0
    # 40 units, 80 values, n_A = n_B = 40: alpha = 1 - (N - 1) o_AB / (n_A n_B) = 1 - 79/40.
    assert o["krippendorff_alpha_nominal"] == pytest.approx(-39 / 40)
    assert o["krippendorff_alpha_nominal"] == pytest.approx(ref_alpha(frame, "overall"))
    assert o["fleiss_kappa"]["value"] == pytest.approx(-1.0) == ref_fleiss(frame, "overall")
    (pair,) = o["cohen_kappa"]["pairs"]
    assert pair["value"] == pytest.approx(-1.0) == ref_cohen(frame, "overall", 20)[("x", "y")]
    assert pair["shared"] == 40


def test_random_labels_are_near_zero_and_match_the_libraries() -> None:
    rng = np.random.default_rng(7)
    records = [
        {
            "comparison": c,
            "annotator": f"u{a:02d}",
            "overall": int(rng.integers(-1, 2)),
            "helpful": ["A", "tie", "B"][rng.integers(0, 3)],
        }
        for c in range(3000)
        for a in rng.choice(12, size=3, replace=False)
    ]
    frame = make_frame(records)
    r = report(frame)
    for axis in ("overall", "helpful"):
        a = r["axes"][axis]
        assert abs(a["krippendorff_alpha_nominal"]) < 0.03
        assert abs(a["fleiss_kappa"]["value"]) < 0.03
        assert a["pairwise_agreement"]["value"] == pytest.approx(1 / 3, abs=0.02)
        assert a["pairwise_agreement"]["value"] == pytest.approx(
            ref_pairwise(frame, axis), abs=1e-12
        )
        assert a["krippendorff_alpha_nominal"] == pytest.approx(ref_alpha(frame, axis), abs=1e-10)
        assert a["fleiss_kappa"]["value"] == pytest.approx(ref_fleiss(frame, axis), abs=1e-10)
        kappas = {tuple(p["annotators"]): p["value"] for p in a["cohen_kappa"]["pairs"]}
        assert len(kappas) == 66 and kappas == pytest.approx(ref_cohen(frame, axis, 20), abs=1e-10)
        assert abs(np.median(list(kappas.values()))) < 0.05
    assert r["axes"]["overall"]["krippendorff_alpha_ordinal"] == pytest.approx(
        ref_alpha(frame, "overall", "ordinal"), abs=1e-10
    )


def test_length_bias_figures_match_hand_counts_and_sklearn() -> None:
    # 10 decided judgments on comparisons where B is longer: 7 pick B (the longer).
    records = [
        {
            "comparison": i,
            "annotator": "u",
            "overall": -1 if i in (1, 4, 8) else 1,
            "len_a": 10,
            "len_b": 10 + 5 * (i + 1),
        }
        for i in range(10)
    ]
    records.append(
        {"comparison": 10, "annotator": "u", "overall": 0, "len_a": 5, "len_b": 90}
    )  # tie: left out
    records.append(
        {"comparison": 11, "annotator": "u", "overall": 2, "len_a": 30, "len_b": 30}
    )  # equal lengths
    frame = make_frame(records)
    o = report(frame)["axes"]["overall"]
    value, lo, hi = ref_rate(7, 10)
    assert o["longer_chosen_rate"] == {"value": value, "ci95": [lo, hi], "n": 10}
    ref = ref_length(frame, "overall")
    assert o["len_logit_coef"] == pytest.approx(ref["coef"], rel=1e-4)
    assert o["len_only_auc"] == pytest.approx(ref["auc"], abs=1e-12)
    assert sum(q["n"] for q in o["longer_chosen_by_gap_quintile"]) == 10
    assert o["longer_chosen_by_gap_quintile"][0]["gap_chars"] == [5, 10]


def test_pairs_with_the_same_relative_length_tie_in_the_length_auc() -> None:
    # 1 vs 21 and 13 vs 153 are the same ratio (2/22 = 14/154): one feature
    # value, so a tie, whichever float a difference of logs would have given.
    # (Found by hypothesis: the AUC moved by one tie between solvers.)
    records = [
        {"comparison": 1, "annotator": "u", "overall": -1, "len_a": 1, "len_b": 21},
        {"comparison": 1, "annotator": "v", "overall": -1, "len_a": 1, "len_b": 21},
        {"comparison": 2, "annotator": "u", "overall": 1, "len_a": 13, "len_b": 153},
        {"comparison": 3, "annotator": "u", "overall": -1, "len_a": 1, "len_b": 1},
    ]
    o = report(make_frame(records))["axes"]["overall"]
    assert o["len_logit_coef"] > 0
    # The one B choice against three A: two ties (0.5 each) and one lower feature (1).
    assert o["len_only_auc"] == pytest.approx(2 / 3, abs=1e-12)


def test_left_chosen_rate_follows_the_display_orientation() -> None:
    # Canonical A chosen but shown swapped means the RIGHT one was picked.
    records = [
        {"comparison": 0, "annotator": "u", "overall": -1, "swapped": False},  # left
        {"comparison": 1, "annotator": "u", "overall": -2, "swapped": True},  # right
        {"comparison": 2, "annotator": "u", "overall": 3, "swapped": True},  # left
        {"comparison": 3, "annotator": "u", "overall": 1, "swapped": True},  # left
        {"comparison": 4, "annotator": "u", "overall": 0, "swapped": True},  # tie: left out
    ]
    o = report(make_frame(records))["axes"]["overall"]
    value, lo, hi = ref_rate(3, 4)
    assert o["left_chosen_rate"] == {
        "value": value,
        "ci95": [lo, hi],
        "n": 4,
        "p_value": binomtest(3, 4).pvalue,
    }


def test_leave_one_out_majority_gold_and_skip_rate_per_annotator() -> None:
    records = [
        {"comparison": 1, "annotator": a, "overall": -1, "gold": -1} for a in ("a", "b", "c")
    ]
    records.append({"comparison": 1, "annotator": "d", "overall": 2, "gold": -1})
    records += [
        {"comparison": 2, "annotator": a, "overall": s} for a, s in (("a", 1), ("b", 1), ("d", -1))
    ]
    assignments = pd.DataFrame(
        [("a", "submitted", 2), ("a", "skipped", 2), ("d", "submitted", 2), ("d", "expired", 5)],
        columns=["annotator", "status", "n"],
    )
    frame = make_frame(records)
    r = report(frame, assignments=assignments)
    by = {u["username"]: u for u in r["annotators"]}
    loo = ref_loo(frame)
    # a on comparison 1: others A,A,B -> A agrees; on 2: others B,A -> no majority.
    assert loo["a"] == (1, 1) and loo["d"] == (0, 2)
    for name, (hits, n) in loo.items():
        assert (
            by[name]["loo_majority_agreement"]["value"] == hits / n
            and by[name]["loo_majority_agreement"]["n"] == n
        )
    assert by["d"]["gold_accuracy"]["value"] == 0.0 and by["a"]["gold_accuracy"]["value"] == 1.0
    assert r["axes"]["overall"]["gold_accuracy"]["value"] == 0.75
    assert (
        by["a"]["skip_rate"] == 0.5 and by["d"]["skip_rate"] == 0.0 and by["b"]["skip_rate"] is None
    )
    assert r["summary"]["skip_rate"] == pytest.approx(2 / 6)


def test_cross_axis_conflicts_and_time_quartiles_against_naive_counts() -> None:
    rng = np.random.default_rng(3)
    records = [
        {
            "comparison": c,
            "annotator": f"u{a}",
            "overall": int(rng.integers(-3, 4)),
            "helpful": ["A", "tie", "B", None][rng.integers(0, 4)],
            "harmless": ["A", "tie", "B"][rng.integers(0, 3)],
            "seconds": float(rng.integers(1, 120)),
        }
        for c in range(200)
        for a in rng.choice(5, size=3, replace=False)
    ]
    frame = make_frame(records)
    r = report(frame)
    conflict = r["cross_axis_conflict"]
    for i, a in enumerate(conflict["axes"]):
        for j, b in enumerate(conflict["axes"]):
            sa, sb = side_of(frame, a), side_of(frame, b)
            both = sa.isin([0, 2]) & sb.isin([0, 2])
            assert conflict["n"][i][j] == both.sum()
            expected = None if i == j else (sa[both] != sb[both]).mean()
            assert conflict["rate"][i][j] == pytest.approx(expected)
    quartiles = r["axes"]["helpful"]["agreement_by_time_quartile"]
    groups = ref_groups(frame, "helpful")
    keys = zip(frame["comparison"], frame["annotator"], strict=True)
    seconds = dict(zip(keys, frame["seconds"], strict=True))
    covered = 0
    for q in quartiles:
        agree = partners = n = 0
        for c, labels in groups.items():
            for a, v in labels:
                if len(labels) >= 2 and q["seconds"][0] <= seconds[(c, a)] <= q["seconds"][1]:
                    agree += sum(w == v for b, w in labels if b != a)
                    partners += len(labels) - 1
                    n += 1
        assert q["value"] == pytest.approx(agree / partners) and q["n"] == n
        covered += n
    assert covered == sum(len(g) for g in groups.values() if len(g) >= 2)


def test_bootstrap_ci_matches_the_naive_index_bootstrap() -> None:
    rng = np.random.default_rng(11)
    records = [
        {"comparison": c, "annotator": f"u{a}", "overall": int(rng.choice([-1, 1], p=[0.7, 0.3]))}
        for c in range(400)
        for a in range(int(rng.integers(2, 5)))
    ]
    frame = make_frame(records)
    fig = report(frame, n_boot=4000)["axes"]["overall"]["pairwise_agreement"]
    # Naive: resample comparisons with replacement, recompute the pooled share.
    per = [
        (
            sum(v == w for i, (_, v) in enumerate(g) for _, w in g[i + 1 :]),
            len(g) * (len(g) - 1) // 2,
        )
        for g in ref_groups(frame, "overall").values()
    ]
    agree, pairs = np.array(per).T
    idx = np.random.default_rng(0).integers(0, len(per), (4000, len(per)))
    stats = agree[idx].sum(axis=1) / pairs[idx].sum(axis=1)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    assert fig["value"] == pytest.approx(agree.sum() / pairs.sum())
    assert fig["ci95"][0] == pytest.approx(lo, abs=0.006) and fig["ci95"][1] == pytest.approx(
        hi, abs=0.006
    )
    assert fig["ci95"][0] < fig["value"] < fig["ci95"][1]
    assert (
        report(frame, n_boot=4000)["axes"]["overall"]["pairwise_agreement"] == fig
    )  # seeded: stable


def test_empty_and_single_judgment_frames_give_nulls_not_errors() -> None:
    empty = report(agreement.empty_frame(AXES))
    assert empty["summary"]["n_judgments"] == 0 and empty["annotators"] == []
    assert empty["axes"]["overall"]["pairwise_agreement"]["value"] is None
    one = report(make_frame([{"comparison": 1, "annotator": "u", "overall": 1}]))
    o = one["axes"]["overall"]
    assert o["krippendorff_alpha_nominal"] is None and o["fleiss_kappa"]["value"] is None
    assert o["left_chosen_rate"]["value"] == 0.0 and o["len_logit_coef"] is None


def test_kappa_pairs_are_capped_but_counted() -> None:
    # 40 annotators all rating the same 25 comparisons: 780 eligible pairs.
    rng = np.random.default_rng(5)
    records = [
        {"comparison": c, "annotator": f"u{a:02d}", "overall": int(rng.integers(-1, 2))}
        for c in range(25)
        for a in range(40)
    ]
    kappa = report(make_frame(records))["axes"]["overall"]["cohen_kappa"]
    assert kappa["pairs_eligible"] == 780 and len(kappa["pairs"]) == min(
        780, agreement.MAX_KAPPA_PAIRS
    )
    assert all(p["shared"] == 25 for p in kappa["pairs"])
