"""Lead dashboard tables: the agreement report flattened into rows.

The HTML tables and the CSV downloads share these rows, so a number on the
page and in the spreadsheet always come from the same place. Pure functions
of the report (`annotate.agreement`), no database.
"""

from __future__ import annotations

import csv
import statistics
from typing import Any, Protocol

from annotate.models import Comparison

ANNOTATOR_COLUMNS = (
    ("username", "Annotator"),
    ("judgments", "Judgments"),
    ("median_seconds", "Median time (s)"),
    ("over_budget_rate", "Over budget"),
    ("skip_rate", "Skip rate"),
    ("loo_majority_agreement", "Agrees with majority"),
    ("gold_accuracy", "Gold accuracy"),
    ("longer_chosen_rate", "Longer chosen"),
    ("left_chosen_rate", "Left chosen"),
)
SORT_KEYS = tuple(key for key, _ in ANNOTATOR_COLUMNS)
CSV_TABLES = (
    "axes",
    "annotators",
    "cohen_kappa",
    "length_quintiles",
    "time_quartiles",
    "conflicts",
    "disagreements",
)


def _fig(prefix: str, fig: dict[str, Any] | None) -> dict[str, Any]:
    fig = fig or {}
    ci = fig.get("ci95") or [None, None]
    return {
        prefix: fig.get("value"),
        f"{prefix}_ci_lo": ci[0],
        f"{prefix}_ci_hi": ci[1],
        f"{prefix}_n": fig.get("n"),
    }


def _kappa_median(axis: dict[str, Any]) -> float | None:
    values = [p["value"] for p in axis["cohen_kappa"]["pairs"] if p["value"] is not None]
    return statistics.median(values) if values else None


def report_tables(
    report: dict[str, Any], disagreements: list[Comparison] | None = None
) -> dict[str, list[dict[str, Any]]]:
    axes = report["axes"]
    tables: dict[str, list[dict[str, Any]]] = {
        "axes": [
            {
                "axis": name,
                "n_judgments": a["n_judgments"],
                "n_decided": a["n_decided"],
                **_fig("pairwise_agreement", a["pairwise_agreement"]),
                "n_pairs": a["pairwise_agreement"]["n_pairs"],
                "krippendorff_alpha_nominal": a["krippendorff_alpha_nominal"],
                "krippendorff_alpha_ordinal": a.get("krippendorff_alpha_ordinal"),
                "fleiss_kappa": a["fleiss_kappa"]["value"],
                "fleiss_raters": a["fleiss_kappa"]["raters"],
                "cohen_kappa_median": _kappa_median(a),
                "cohen_kappa_pairs": len(a["cohen_kappa"]["pairs"]),
                **_fig("longer_chosen_rate", a["longer_chosen_rate"]),
                "len_logit_coef": a["len_logit_coef"],
                "len_only_auc": a["len_only_auc"],
                **_fig("left_chosen_rate", a["left_chosen_rate"]),
                "left_p_value": a["left_chosen_rate"]["p_value"],
                **_fig("gold_accuracy", a.get("gold_accuracy")),
            }
            for name, a in axes.items()
        ],
        "annotators": [
            {
                "username": u["username"],
                "judgments": u["judgments"],
                "median_seconds": u["median_seconds"],
                "over_budget_rate": u["over_budget_rate"],
                "skip_rate": u["skip_rate"],
                **_fig("loo_majority_agreement", u["loo_majority_agreement"]),
                **_fig("gold_accuracy", u["gold_accuracy"]),
                **_fig("longer_chosen_rate", u["longer_chosen_rate"]),
                **_fig("left_chosen_rate", u["left_chosen_rate"]),
            }
            for u in report["annotators"]
        ],
        "cohen_kappa": [
            {
                "axis": name,
                "annotator_1": p["annotators"][0],
                "annotator_2": p["annotators"][1],
                "shared": p["shared"],
                "cohen_kappa": p["value"],
            }
            for name, a in axes.items()
            for p in a["cohen_kappa"]["pairs"]
        ],
        "length_quintiles": [
            {
                "axis": name,
                "bin": q["bin"],
                "gap_chars_min": q["gap_chars"][0],
                "gap_chars_max": q["gap_chars"][1],
                **_fig("longer_chosen_rate", q),
            }
            for name, a in axes.items()
            for q in a["longer_chosen_by_gap_quintile"]
        ],
        "time_quartiles": [
            {
                "axis": name,
                "bin": q["bin"],
                "seconds_min": q["seconds"][0],
                "seconds_max": q["seconds"][1],
                "pairwise_agreement": q["value"],
                "n": q["n"],
            }
            for name, a in axes.items()
            for q in a["agreement_by_time_quartile"]
        ],
        "conflicts": [
            {
                "axis_1": a1,
                "axis_2": a2,
                "conflict_rate": report["cross_axis_conflict"]["rate"][i][j],
                "n": report["cross_axis_conflict"]["n"][i][j],
            }
            for i, a1 in enumerate(report["cross_axis_conflict"]["axes"])
            for j, a2 in enumerate(report["cross_axis_conflict"]["axes"])
            if i < j
        ],
    }
    if disagreements is not None:
        tables["disagreements"] = [
            {
                "comparison": c.pk,
                "external_id": c.external_id,
                "n_a": c.n_a,
                "n_tie": c.n_tie,
                "n_b": c.n_b,
                "extra_overlap": c.extra_overlap,
                "resolved_at": c.resolved_at.isoformat() if c.resolved_at else None,
            }
            for c in disagreements
        ]
    return tables


def sorted_annotators(
    rows: list[dict[str, Any]], key: str, descending: bool
) -> list[dict[str, Any]]:
    present = [r for r in rows if r.get(key) is not None]
    missing = [r for r in rows if r.get(key) is None]  # unknown values sort last either way
    return sorted(present, key=lambda r: r[key], reverse=descending) + missing


class _Writable(Protocol):
    def write(self, text: str, /) -> object: ...


def write_csv(out: _Writable, rows: list[dict[str, Any]]) -> None:
    """Rows as CSV with a header (nothing for no rows), safe to open in a spreadsheet."""
    if not rows:
        return
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        # A username like "=HYPERLINK(...)" must not become a spreadsheet formula.
        writer.writerow(
            {
                k: ("'" + v if isinstance(v, str) and v[:1] in "=+-@\t\r" else v)
                for k, v in row.items()
            }
        )
