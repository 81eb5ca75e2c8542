"""Lead disagreement queue: list, detail, resolve, send back for more judgments.

Thin adapters over `annotate.services.reports`, behind the same lead check as
the dashboard (`lead_view`): strangers get 404, other roles 403.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from annotate.dashboard_views import lead_view
from annotate.models import Comparison, Project
from annotate.rendering import render_markdown
from annotate.services.reports import (
    comparison_disagreements,
    comparison_resolve,
    comparison_send_back,
)

SEND_BACK_CHOICES = (1, 2, 3, 5)


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
