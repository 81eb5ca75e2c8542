"""Lead dashboard: access rule, agreement report page, JSON and CSV downloads.

Thin adapters over `annotate.services.reports`. Every view resolves the
project through `_lead_project` first: strangers get 404, members with another
role 403, anonymous users the login page -- whatever the URL or method.
The tables and the inline-SVG plots are built in `annotate.dashboard_tables`
and `annotate.dashboard_plots`; the disagreement queue is in
`annotate.disagreement_views`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect, render

from annotate.dashboard_plots import report_plots
from annotate.dashboard_tables import (
    ANNOTATOR_COLUMNS,
    CSV_TABLES,
    SORT_KEYS,
    report_tables,
    sorted_annotators,
    write_csv,
)
from annotate.models import Membership, Project
from annotate.services.reports import agreement_report, comparison_disagreements
from annotate.views import CONTENT_SECURITY_POLICY


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


@lead_view("GET")
def dashboard(request: HttpRequest, project: Project) -> HttpResponse:
    report = agreement_report(project=project)
    tables = report_tables(report)
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
            "annotators": sorted_annotators(tables["annotators"], sort, descending),
            "sort": sort,
            "descending": descending,
            "columns": ANNOTATOR_COLUMNS,
            "plots": report_plots(report),
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
    rows = report_tables(agreement_report(project=project), disagreements)[table]
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{project.slug}-{table}.csv"'
    write_csv(response, rows)
    return response
