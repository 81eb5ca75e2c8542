"""Lead dashboard: agreement report, plots, CSV tables, disagreement queue.

Thin adapters over `annotate.services.reports`. Every view resolves the
project through `_lead_project` first: strangers get 404, members with another
role 403, anonymous users the login page -- whatever the URL or method.
Plots are inline SVG drawn here from the report (no JavaScript, no CDN).
"""

from __future__ import annotations

import csv
import functools
import statistics
from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Exists, OuterRef
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from annotate.models import Comparison, Membership, Project
from annotate.rendering import render_markdown
from annotate.services.reports import (
    agreement_report,
    comparison_disagreements,
    comparison_resolve,
    comparison_send_back,
)
from annotate.views import CONTENT_SECURITY_POLICY

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
PLOT_MAX_BARS = 30  # annotators with the most judgments; the CSV has everyone
SEND_BACK_CHOICES = (1, 2, 3, 5)


def _lead_project(request: HttpRequest, slug: str) -> Project:
    mine = Membership.objects.filter(project=OuterRef("pk"), user=request.user)
    project = (
        Project.objects.filter(slug=slug)
        .annotate(is_member=Exists(mine), is_lead=Exists(mine.filter(role=Membership.Role.LEAD)))
        .first()
    )
    if project is None or not project.is_member:
        raise Http404("No such project")
    if not project.is_lead:
        raise PermissionDenied("Only the project's leads can see its dashboard.")
    return project


def lead_view(*methods: str) -> Callable:
    """Login, then the lead check, then the method check.

    In that order, so a non-lead gets 403/404 whatever the method and never
    learns which methods a URL accepts.
    """

    def wrap(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @login_required
        @functools.wraps(view)
        def inner(request: HttpRequest, slug: str, **kwargs: Any) -> HttpResponse:
            project = _lead_project(request, slug)
            if request.method not in methods:
                return HttpResponseNotAllowed(methods)
            response = view(request, project, **kwargs)
            # These pages show model text too: same no-inline-script policy as the label screen.
            response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            return response

        return inner

    return wrap


@login_required
def index(request: HttpRequest) -> HttpResponse:
    projects = Project.objects.filter(
        memberships__user=request.user, memberships__role=Membership.Role.LEAD
    )
    projects = list(projects.distinct().order_by("name"))
    if not projects:
        raise PermissionDenied("You lead no project.")
    if len(projects) == 1:
        return redirect("lead:dashboard", slug=projects[0].slug)
    return render(request, "annotate/dashboard_index.html", {"projects": projects})


# --- tables (the CSV downloads and the HTML share them) ---------------------


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


def _tables(
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


def _sorted_annotators(
    rows: list[dict[str, Any]], key: str, descending: bool
) -> list[dict[str, Any]]:
    present = [r for r in rows if r.get(key) is not None]
    missing = [r for r in rows if r.get(key) is None]  # unknown values sort last either way
    return sorted(present, key=lambda r: r[key], reverse=descending) + missing


# --- plots ------------------------------------------------------------------


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


def _plots(report: dict[str, Any]) -> list[dict[str, Any]]:
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


# --- views ------------------------------------------------------------------


@lead_view("GET")
def dashboard(request: HttpRequest, project: Project) -> HttpResponse:
    report = agreement_report(project=project)
    tables = _tables(report)
    sort = request.GET.get("sort", "username")
    sort = sort if sort in SORT_KEYS else "username"
    descending = request.GET.get("dir") == "desc"
    open_count = comparison_disagreements(project=project, status="open").count()
    return render(
        request,
        "annotate/dashboard.html",
        {
            "project": project,
            "report": report,
            "summary": report["summary"],
            "overall": report["axes"]["overall"],
            "axis_rows": tables["axes"],
            "annotators": _sorted_annotators(tables["annotators"], sort, descending),
            "sort": sort,
            "descending": descending,
            "columns": ANNOTATOR_COLUMNS,
            "plots": _plots(report),
            "kappa_rows": [r for r in tables["cohen_kappa"] if r["axis"] == "overall"][:20],
            "conflict_axes": report["cross_axis_conflict"]["axes"],
            "conflict_rows": list(
                zip(
                    report["cross_axis_conflict"]["axes"],
                    report["cross_axis_conflict"]["rate"],
                    strict=True,
                )
            ),
            "csv_tables": CSV_TABLES,
            "open_disagreements": open_count,
        },
    )


@lead_view("GET")
def report_json(request: HttpRequest, project: Project) -> HttpResponse:
    return JsonResponse(agreement_report(project=project), json_dumps_params={"allow_nan": False})


@lead_view("GET")
def table_csv(request: HttpRequest, project: Project, table: str) -> HttpResponse:
    if table not in CSV_TABLES:
        raise Http404("No such table")
    disagreements = (
        list(comparison_disagreements(project=project)) if table == "disagreements" else None
    )
    rows = _tables(agreement_report(project=project), disagreements)[table]
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{project.slug}-{table}.csv"'
    if rows:
        writer = csv.DictWriter(response, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            # A username like "=HYPERLINK(...)" must not become a spreadsheet formula.
            writer.writerow(
                {
                    k: ("'" + v if isinstance(v, str) and v[:1] in "=+-@\t\r" else v)
                    for k, v in row.items()
                }
            )
    return response


@lead_view("GET")
def disagreements(request: HttpRequest, project: Project) -> HttpResponse:
    status = request.GET.get("status", "all")
    status = status if status in ("open", "resolved", "all") else "all"
    page = Paginator(comparison_disagreements(project=project, status=status), 50).get_page(
        request.GET.get("page")
    )
    return render(
        request, "annotate/disagreements.html", {"project": project, "page": page, "status": status}
    )


def _scale_label(project: Project, overall: int) -> str:
    index = overall + project.max_strength
    return project.scale[index] if 0 <= index < len(project.scale) else f"{overall:+d}"


def _detail_context(project: Project, comparison: Comparison) -> dict[str, Any]:
    judgments = list(
        comparison.judgments.filter(superseded_at__isnull=True)
        .select_related("annotator")
        .order_by("submitted_at", "pk")
    )
    columns = [
        {
            "j": j,
            "overall_label": _scale_label(project, j.overall),
            "left": "B" if j.swapped else "A",
            "axes": [(axis, j.axes.get(axis, "")) for axis in project.rubric_axes],
            "active_s": None if j.active_ms is None else j.active_ms / 1000,
            # The importer stamps shown == submitted: an imported verdict has no real timing.
            "seconds": None if j.source == j.Source.IMPORT else j.seconds,
        }
        for j in judgments
    ]
    return {
        "project": project,
        "comparison": comparison,
        "columns": columns,
        "axes": project.rubric_axes,
        "prompt_html": render_markdown(comparison.prompt),
        "prompt_turns": [
            (m.get("role", ""), render_markdown(str(m.get("content", ""))))
            for m in (comparison.prompt_messages or [])
            if isinstance(m, dict)
        ],
        "response_a_html": render_markdown(comparison.response_a),
        "response_b_html": render_markdown(comparison.response_b),
        "send_back_choices": SEND_BACK_CHOICES,
        "capacity": project.overlap + comparison.extra_overlap,
    }


@lead_view("GET")
def disagreement_detail(request: HttpRequest, project: Project, pk: int) -> HttpResponse:
    comparison = get_object_or_404(
        Comparison.objects.select_related("resolved_by"), pk=pk, project=project
    )
    return render(
        request, "annotate/disagreement_detail.html", _detail_context(project, comparison)
    )


def _after_action(
    request: HttpRequest, project: Project, comparison: Comparison, text: str
) -> HttpResponse:
    if request.htmx:
        ctx = _detail_context(project, comparison)
        ctx["notice"] = text
        return render(request, "annotate/disagreement_detail.html#actions", ctx)
    messages.success(request, text)
    return redirect(
        reverse("lead:disagreement", kwargs={"slug": project.slug, "pk": comparison.pk})
    )


@lead_view("POST")
def disagreement_resolve(request: HttpRequest, project: Project, pk: int) -> HttpResponse:
    comparison = get_object_or_404(Comparison, pk=pk, project=project)
    comparison = comparison_resolve(comparison=comparison, lead=request.user)
    return _after_action(request, project, comparison, "Marked resolved.")


@lead_view("POST")
def disagreement_send_back(request: HttpRequest, project: Project, pk: int) -> HttpResponse:
    comparison = get_object_or_404(Comparison, pk=pk, project=project)
    try:
        extra = int(request.POST.get("extra", "1"))
        comparison = comparison_send_back(comparison=comparison, lead=request.user, extra=extra)
    except (ValueError, ValidationError):
        return HttpResponse("Ask for 1 to 10 more judgments.", status=400)
    noun = "judgment" if extra == 1 else "judgments"
    return _after_action(
        request,
        project,
        comparison,
        f"Sent back for {extra} more {noun}; annotators will be offered it again.",
    )
