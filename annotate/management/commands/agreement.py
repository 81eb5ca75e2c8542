"""`python manage.py agreement PROJECT_SLUG [--json] [--refresh]`: the lead report.

A thin adapter over `annotate.services.reports.agreement_report`; with
``--json`` it prints the documented document (schema: `annotate.agreement`).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.models import Project
from annotate.services.reports import agreement_report


def _fig(figure: dict[str, Any] | None) -> str:
    if not figure or figure.get("value") is None:
        return "n/a"
    text = f"{figure['value']:.3f}"
    if figure.get("ci95"):
        lo, hi = figure["ci95"]
        text += f" [{lo:.3f}, {hi:.3f}]"
    return text


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _axis_lines(axis: str, a: dict[str, Any]) -> list[str]:
    fleiss, kappas, left = a["fleiss_kappa"], a["cohen_kappa"], a["left_chosen_rate"]
    rows = [
        (
            "pairwise_agreement",
            f"{_fig(a['pairwise_agreement'])} ({a['pairwise_agreement']['n_pairs']} pairs)",
        ),
        ("krippendorff_alpha_nominal", _num(a["krippendorff_alpha_nominal"])),
    ]
    if "krippendorff_alpha_ordinal" in a:
        rows.append(("krippendorff_alpha_ordinal", _num(a["krippendorff_alpha_ordinal"])))
    rows += [
        (
            "fleiss_kappa",
            f"{_num(fleiss['value'])} "
            f"({fleiss['n_comparisons']} comparisons x {fleiss['raters']} raters)",
        ),
        (
            "cohen_kappa",
            f"{len(kappas['pairs'])} of {kappas['pairs_eligible']} pairs "
            f"with >= {kappas['min_shared']} shared items",
        ),
        *(
            (
                f"  {p['annotators'][0]} / {p['annotators'][1]}",
                f"{_num(p['value'])} ({p['shared']})",
            )
            for p in kappas["pairs"][:10]
        ),
        ("longer_chosen_rate", _fig(a["longer_chosen_rate"])),
        ("len_logit_coef", _num(a["len_logit_coef"])),
        ("len_only_auc", _num(a["len_only_auc"])),
        ("left_chosen_rate", f"{_fig(left)} p={_num(left['p_value'], '.2g')}"),
    ]
    if "gold_accuracy" in a:
        rows.append(("gold_accuracy", _fig(a["gold_accuracy"])))
    rows += [
        (f"longer, gap {q['gap_chars'][0]}-{q['gap_chars'][1]} chars", f"{_fig(q)} (n={q['n']})")
        for q in a["longer_chosen_by_gap_quintile"]
    ]
    rows += [
        (
            f"agreement, {q['seconds'][0]:.0f}-{q['seconds'][1]:.0f} s",
            f"{_num(q['value'])} (n={q['n']})",
        )
        for q in a["agreement_by_time_quartile"]
    ]
    head = f"== {axis} ({a['n_judgments']} judgments, {a['n_decided']} pick a side)"
    return [head, *(f"  {name:<30} {value}" for name, value in rows), ""]


def report_text(report: dict[str, Any]) -> str:
    """The report as plain text for a terminal."""
    s = report["summary"]
    lines = [
        f"Project {report['project']}: {s['n_judgments']} current judgments on "
        f"{s['n_comparisons']} comparisons ({s['n_comparisons_multi']} with 2+), "
        f"{s['n_annotators']} annotators; lengths in {report['length_unit']}.",
        "",
    ]
    for axis, a in report["axes"].items():
        lines += _axis_lines(axis, a)
    cols = ("judg", "med s", "LOO maj", "gold", "longer", "left", "skip")
    lines.append("== annotators (overall)")
    lines.append(f"  {'username':<32}" + "".join(f" {c:>8}" for c in cols))
    for u in report["annotators"]:
        values = (
            str(u["judgments"]),
            _num(u["median_seconds"], ".1f"),
            _num(u["loo_majority_agreement"]["value"]),
            _num(u["gold_accuracy"]["value"]),
            _num(u["longer_chosen_rate"]["value"]),
            _num(u["left_chosen_rate"]["value"]),
            _num(u["skip_rate"]),
        )
        lines.append(f"  {u['username']:<32}" + "".join(f" {v:>8}" for v in values))
    return "\n".join(lines)


class Command(BaseCommand):
    help = (
        "Print a project's agreement and label-bias report (--json: the documented JSON document)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project_slug")
        parser.add_argument("--json", action="store_true", help="print the JSON document")
        parser.add_argument(
            "--refresh", action="store_true", help="recompute even if a cached report is current"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(slug=options["project_slug"]).first()
        if project is None:
            raise CommandError(f"no project with slug {options['project_slug']!r}")
        report = agreement_report(project=project, refresh=options["refresh"])
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, allow_nan=False))
        else:
            self.stdout.write(report_text(report))
