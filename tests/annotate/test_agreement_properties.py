"""annotate.agreement on random data (hypothesis): every coefficient equals the
library computed directly on the same, unshaped judgments (oracles in
test_agreement.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from tests.annotate.test_agreement import (
    make_frame,
    ref_alpha,
    ref_cohen,
    ref_fleiss,
    ref_left,
    ref_length,
    ref_loo,
    ref_pairwise,
    ref_rate,
    report,
)

SIDES = ["A", "tie", "B", None]


@st.composite
def judgment_records(draw: st.DrawFn) -> list[dict[str, Any]]:
    n_annotators = draw(st.integers(2, 6))
    n_comparisons = draw(st.integers(1, 30))
    records = []
    for c in range(n_comparisons):
        raters = draw(
            st.lists(
                st.integers(0, n_annotators - 1), min_size=1, max_size=n_annotators, unique=True
            )
        )
        len_a, len_b = draw(st.integers(1, 400)), draw(st.integers(1, 400))
        gold = draw(st.sampled_from([None, None, -1, 0, 1]))
        for a in raters:
            records.append(
                {
                    "comparison": 1000 + c,
                    "annotator": f"u{a}",
                    "overall": draw(st.integers(-3, 3)),
                    "swapped": draw(st.booleans()),
                    "len_a": len_a,
                    "len_b": len_b,
                    "gold": gold,
                    "seconds": draw(st.one_of(st.none(), st.floats(0.5, 300))),
                    "helpful": draw(st.sampled_from(SIDES)),
                    "harmless": draw(st.sampled_from(SIDES[:3])),
                }
            )
    return records


def _approx(ours: float | None, ref: float | None, tol: float = 1e-9) -> bool:
    if ours is None or ref is None:
        return ours is None and ref is None
    return ours == pytest.approx(ref, abs=tol)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=judgment_records(), min_shared=st.integers(1, 4))
def test_every_coefficient_equals_the_library_on_the_raw_data(records, min_shared) -> None:
    frame = make_frame(records)
    r = report(frame, n_boot=50, min_shared_for_kappa=min_shared)
    for axis, a in r["axes"].items():
        assert _approx(a["pairwise_agreement"]["value"], ref_pairwise(frame, axis), 1e-12), axis
        assert _approx(a["krippendorff_alpha_nominal"], ref_alpha(frame, axis)), axis
        assert _approx(a["fleiss_kappa"]["value"], ref_fleiss(frame, axis)), axis
        ours = {tuple(p["annotators"]): p["value"] for p in a["cohen_kappa"]["pairs"]}
        ref = ref_cohen(frame, axis, min_shared)
        assert ours.keys() == ref.keys() and a["cohen_kappa"]["pairs_eligible"] == len(ref)
        assert all(_approx(ours[k], ref[k]) for k in ref), (axis, ours, ref)
        length = ref_length(frame, axis)
        if length["n"]:
            value, lo, hi = ref_rate(length["hits"], length["n"])
            assert a["longer_chosen_rate"] == {"value": value, "ci95": [lo, hi], "n": length["n"]}
        if a["len_only_auc"] is not None:
            assert a["len_only_auc"] == pytest.approx(length["auc"], abs=1e-9)
            # Separable tiny samples make the (weakly penalised) slope steep; compare relatively.
            assert a["len_logit_coef"] == pytest.approx(length["coef"], rel=2e-3, abs=2e-3)
        k, n = ref_left(frame, axis)
        assert a["left_chosen_rate"]["n"] == n
        if n:
            assert a["left_chosen_rate"]["value"] == k / n
            assert a["left_chosen_rate"]["p_value"] == pytest.approx(binomtest(k, n, 0.5).pvalue)
    assert _approx(
        r["axes"]["overall"]["krippendorff_alpha_ordinal"], ref_alpha(frame, "overall", "ordinal")
    )
    loo = ref_loo(frame)
    for u in r["annotators"]:
        hits, n = loo.get(u["username"], (0, 0))
        assert u["loo_majority_agreement"]["n"] == n
        if n:
            assert u["loo_majority_agreement"]["value"] == hits / n
    gold = frame["gold"].notna()
    hits = int((np.sign(frame["overall"][gold]) == frame["gold"][gold]).sum())
    assert r["axes"]["overall"]["gold_accuracy"]["n"] == int(gold.sum())
    if gold.any():
        assert r["axes"]["overall"]["gold_accuracy"]["value"] == hits / int(gold.sum())
