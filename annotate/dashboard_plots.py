"""Lead dashboard plots: bar-chart geometry for inline SVG.

The dashboard draws its charts server-side (no JavaScript, no CDN): these
functions turn the agreement report into coordinates that
`annotate/dashboard_plot.html` renders.
"""

from __future__ import annotations

from typing import Any

PLOT_MAX_BARS = 30  # annotators with the most judgments; the CSV has everyone


def _bar_chart(
    title: str, bars: list[dict[str, Any]], *, ref: float | None = None, y_label: str = ""
) -> dict[str, Any]:
    """Geometry of a bar chart on a 0..1 axis with 95% error bars, for dashboard_plot.html."""
    width, height, left, right, top, bottom = 440, 230, 44, 10, 12, 64
    plot_w, plot_h = width - left - right, height - top - bottom
    band = plot_w / max(len(bars), 1)

    def y(v: float) -> float:
        return top + plot_h * (1 - min(max(v, 0.0), 1.0))

    drawn = []
    for i, bar in enumerate(bars):
        x = left + i * band
        value = bar.get("value")
        item = {
            "label": bar["label"],
            "value": value,
            "n": bar.get("n"),
            "cx": x + band / 2,
            "cap_l": x + band / 2 - 4,
            "cap_r": x + band / 2 + 4,
            "x": x + band * 0.15,
            "w": band * 0.7,
            "label_y": top + plot_h + 12,
        }
        if value is not None:
            item.update(y=y(value), h=top + plot_h - y(value))
        ci = bar.get("ci95")
        if ci and ci[0] is not None and ci[1] is not None:
            item.update(ci_lo=ci[0], ci_hi=ci[1], y_lo=y(ci[0]), y_hi=y(ci[1]))
        drawn.append(item)
    ticks = [{"v": v, "y": y(v)} for v in (0.0, 0.25, 0.5, 0.75, 1.0)]
    return {
        "title": title,
        "y_label": y_label,
        "width": width,
        "height": height,
        "left": left,
        "right_x": width - right,
        "top": top,
        "base_y": top + plot_h,
        "bars": drawn,
        "ticks": ticks,
        "mid_x": width / 2,
        "ref_y": y(ref) if ref is not None else None,
        "ref": ref,
        "rotate": len(bars) > 6,
    }


def report_plots(report: dict[str, Any]) -> list[dict[str, Any]]:
    axes, overall = report["axes"], report["axes"]["overall"]
    busiest = sorted(report["annotators"], key=lambda u: -u["judgments"])[:PLOT_MAX_BARS]
    plots = [
        _bar_chart(
            "Pairwise agreement per axis (95% bootstrap CI)",
            [{"label": n, **a["pairwise_agreement"]} for n, a in axes.items()],
            y_label="agreement",
        ),
        _bar_chart(
            "Longer response chosen, by length-gap quintile (overall, characters)",
            [
                {"label": f"{q['gap_chars'][0]}-{q['gap_chars'][1]}", **q}
                for q in overall["longer_chosen_by_gap_quintile"]
            ],
            ref=0.5,
            y_label="longer chosen",
        ),
        _bar_chart(
            "Left response chosen, per annotator (overall, Wilson CI)",
            [{"label": u["username"], **u["left_chosen_rate"]} for u in busiest],
            ref=0.5,
            y_label="left chosen",
        ),
        _bar_chart(
            "Pairwise agreement by time-spent quartile (overall)",
            [
                {
                    "label": f"{q['seconds'][0]:.0f}-{q['seconds'][1]:.0f}s",
                    "value": q["value"],
                    "n": q["n"],
                }
                for q in overall["agreement_by_time_quartile"]
            ],
            y_label="agreement",
        ),
    ]
    for i, plot in enumerate(plots):
        plot["id"] = f"plot-{i + 1}"
    return plots
