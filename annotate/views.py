"""Annotator views: thin adapters over `annotate.services`.

One template (`annotate/label.html`) with an `item` partial. htmx requests get
the partial (submit and skip swap in the next comparison without a reload);
plain form POSTs (no JavaScript) get a redirect to the label page, which shows
the next comparison: the same views serve both.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from annotate.forms import SKIP_REASONS, JudgmentForm, SkipForm, axis_field_name, scale_positions
from annotate.models import Assignment, Judgment, Membership, Project, User
from annotate.rendering import render_markdown
from annotate.services.assignments import (
    LabelingError,
    annotator_progress,
    assignment_next,
    assignment_skip,
)
from annotate.services.judgments import JudgmentInvalid, judgment_submit

# Third XSS layer on the screens that show model text: no inline script, no
# plugins, no foreign origins. htmx is served from 'self'.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# (value, label, shortcut key shown as a hint; label.js maps the keys)
AXIS_CHOICE_LABELS = [("A", "A", "a"), ("tie", "Tie", "t"), ("B", "B", "b")]


def _csp(response: HttpResponse) -> HttpResponse:
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


def _annotator_project(request: HttpRequest, slug: str) -> Project:
    """The project if the user annotates it: 404 for strangers, 403 for other roles. One query."""
    mine = Membership.objects.filter(project=OuterRef("pk"), user=request.user)
    project = (
        Project.objects.filter(slug=slug)
        .annotate(
            is_member=Exists(mine), is_annotator=Exists(mine.filter(role=Membership.Role.ANNOTATOR))
        )
        .first()
    )
    if project is None or not project.is_member:
        raise Http404("No such project")
    if not project.is_annotator:
        raise PermissionDenied("Only the project's annotators can label it.")
    return project


def _role_links(role: str, slug: str) -> list[dict[str, str]]:
    """The screens a lead or ML member opens from the home page (annotators get the label
    button, which depends on their progress)."""
    if role == Membership.Role.LEAD:
        return [
            {"label": "Dashboard", "url": reverse("lead:dashboard", args=[slug])},
            {"label": "Disagreements", "url": reverse("lead:disagreements", args=[slug])},
        ]
    if role == Membership.Role.ML:
        runs = f"{reverse('ml-runs')}?{urlencode({'project': slug})}"
        return [
            {"label": "Exports", "url": reverse("ml-project-exports", args=[slug])},
            {"label": "Training runs", "url": runs},
        ]
    return []


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """One row per project the user belongs to, with the links each of their roles needs.

    One query for the memberships and three for the progress, whatever the number of projects.
    """
    memberships = list(
        Membership.objects.filter(user=request.user)
        .select_related("project")
        .order_by("project__name", "project__pk", "role")
    )
    annotated = [m.project_id for m in memberships if m.role == Membership.Role.ANNOTATOR]
    progress = (
        annotator_progress(annotator=request.user, project_ids=annotated) if annotated else {}
    )
    rows: dict[int, dict[str, Any]] = {}
    for m in memberships:
        row = rows.setdefault(
            m.project_id,
            {"project": m.project, "roles": [], "progress": None, "label_url": None, "links": []},
        )
        row["roles"].append(m.get_role_display())
        if m.role == Membership.Role.ANNOTATOR:
            row["progress"] = progress.get(m.project_id)
            row["label_url"] = reverse("label", args=[m.project.slug])
        row["links"].extend(_role_links(m.role, m.project.slug))
    context = {
        "rows": list(rows.values()),
        # Progress columns only when the user labels somewhere: a lead sees no empty columns.
        "show_progress": bool(annotated),
    }
    return render(request, "annotate/home.html", context)


def _mmss(seconds: int) -> str:
    seconds = max(0, seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


def _item_context(
    *,
    request: HttpRequest,
    project: Project,
    assignment: Assignment | None,
    notice: dict[str, str] | None = None,
    form: JudgmentForm | None = None,
    errors: dict[str, str] | None = None,
    skip_form: SkipForm | None = None,
) -> dict[str, Any]:
    user: User = request.user  # type: ignore[assignment]
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    ctx: dict[str, Any] = {
        "project": project,
        "assignment": assignment,
        "notice": notice,
        "done_today": Judgment.objects.filter(
            project=project, annotator=user, submitted_at__gte=midnight, superseded_at__isnull=True
        ).count(),
    }
    if assignment is None:
        return ctx
    comparison = assignment.comparison
    now = timezone.now()
    elapsed = int((now - assignment.shown_at).total_seconds())
    remaining = project.time_budget_s - elapsed
    texts = [("A", comparison.response_a), ("B", comparison.response_b)]
    if assignment.swapped:
        texts.reverse()
    # Display letters: whatever is on the left is "A" on screen. The
    # canonical letter is never sent to the browser (nor the gold answer).
    responses = [
        {"letter": shown, "raw": text, "html": render_markdown(text)}
        for shown, (_, text) in zip(("A", "B"), texts, strict=True)
    ]
    turns = None
    if isinstance(comparison.prompt_messages, list) and comparison.prompt_messages:
        turns = [
            {
                "role": str(m.get("role", "user")),
                "raw": str(m.get("content", "")),
                "html": render_markdown(str(m.get("content", ""))),
            }
            for m in comparison.prompt_messages
            if isinstance(m, dict)
        ]
    data = form.data if form is not None and form.is_bound else {}
    errors = dict(errors or {})
    if form is not None and form.is_bound:
        errors.update({name: " ".join(errs) for name, errs in form.errors.items()})
    axes = [
        {
            "name": axis,
            "field": axis_field_name(axis),
            "value": data.get(axis_field_name(axis), ""),
            "error": errors.get(axis_field_name(axis), ""),
            "index": i,
        }
        for i, axis in enumerate(project.rubric_axes)
    ]
    chosen_flags = data.getlist("flags") if hasattr(data, "getlist") else []
    ctx.update(
        {
            "comparison_prompt_html": render_markdown(comparison.prompt),
            "comparison_prompt_raw": comparison.prompt,
            "turns": turns,
            "responses": responses,
            "remaining_s": remaining,
            "remaining_label": _mmss(remaining),
            "lease_remaining_s": int((assignment.lease_expires_at - now).total_seconds())
            if assignment.lease_expires_at
            else remaining,
            "axes": axes,
            "axis_choices": AXIS_CHOICE_LABELS,
            "scale": [
                {"pos": pos, "label": label, "checked": data.get("overall") == str(pos)}
                for pos, label, _ in scale_positions(project)
            ],
            "flags": [
                {"name": f, "label": f.replace("_", " "), "checked": f in chosen_flags}
                for f in project.flags
            ],
            "rationale": data.get("rationale", ""),
            "errors": errors,
            "skip_reasons": SKIP_REASONS,
            "skip_errors": {k: " ".join(v) for k, v in skip_form.errors.items()}
            if skip_form is not None
            else {},
            "submit_url": reverse("label-submit", args=[project.slug, assignment.pk]),
            "skip_url": reverse("label-skip", args=[project.slug, assignment.pk]),
        }
    )
    return ctx


def _render_item(request: HttpRequest, ctx: dict[str, Any], *, status: int = 200) -> HttpResponse:
    project: Project = ctx["project"]
    if request.htmx:
        return _csp(render(request, "annotate/label.html#item", ctx, status=status))
    ctx["guidelines_html"] = render_markdown(project.guidelines)
    return _csp(render(request, "annotate/label.html", ctx, status=status))


@login_required
@require_GET
def label(request: HttpRequest, slug: str) -> HttpResponse:
    project = _annotator_project(request, slug)
    assignment = assignment_next(project=project, annotator=request.user)
    return _render_item(
        request, _item_context(request=request, project=project, assignment=assignment)
    )


def _own_assignment(project: Project, user: User, assignment_id: int) -> Assignment | None:
    return (
        Assignment.objects.select_related("comparison")
        .filter(pk=assignment_id, project=project, annotator=user, status=Assignment.Status.OPEN)
        .first()
    )


def _after_write(request: HttpRequest, project: Project, notice: dict[str, str]) -> HttpResponse:
    """htmx: the next item with the notice; plain POST: redirect (Post/Redirect/Get)."""
    if not request.htmx:
        level = messages.SUCCESS if notice["level"] == "ok" else messages.WARNING
        messages.add_message(request, level, notice["text"])
        return redirect("label", slug=project.slug)
    assignment = assignment_next(project=project, annotator=request.user)
    return _render_item(
        request,
        _item_context(request=request, project=project, assignment=assignment, notice=notice),
    )


def _redisplay(
    request: HttpRequest, project: Project, assignment_id: int, **kwargs: Any
) -> HttpResponse:
    """Show the same item again with errors (200 for htmx so it swaps in, 422 otherwise)."""
    assignment = _own_assignment(project, request.user, assignment_id)
    if assignment is None:
        return _after_write(
            request, project, {"level": "warn", "text": "That comparison is no longer open."}
        )
    ctx = _item_context(
        request=request,
        project=project,
        assignment=assignment,
        notice={"level": "warn", "text": "Please fix the highlighted fields."},
        **kwargs,
    )
    return _render_item(request, ctx, status=200 if request.htmx else 422)


@login_required
@require_POST
def label_submit(request: HttpRequest, slug: str, assignment_id: int) -> HttpResponse:
    project = _annotator_project(request, slug)
    form = JudgmentForm(request.POST, project=project)
    if not form.is_valid():
        return _redisplay(request, project, assignment_id, form=form)
    try:
        outcome = judgment_submit(
            project=project,
            annotator=request.user,
            assignment_id=assignment_id,
            overall=form.displayed_overall(),
            axes=form.axes(),
            flags=form.cleaned_data["flags"],
            rationale=form.cleaned_data["rationale"],
            active_ms=form.cleaned_data["active_ms"],
        )
    except JudgmentInvalid as exc:
        return _redisplay(request, project, assignment_id, form=form, errors=exc.errors)
    except LabelingError as exc:
        return _after_write(request, project, {"level": "warn", "text": exc.message})
    if not outcome.created:
        text = "That answer was already saved; here is your next comparison."
    elif outcome.over_budget:
        text = "Saved (over the time budget)."
    else:
        text = "Saved."
    return _after_write(request, project, {"level": "ok", "text": text})


@login_required
@require_POST
def label_skip(request: HttpRequest, slug: str, assignment_id: int) -> HttpResponse:
    project = _annotator_project(request, slug)
    form = SkipForm(request.POST)
    if not form.is_valid():
        return _redisplay(request, project, assignment_id, skip_form=form)
    try:
        assignment_skip(
            project=project,
            annotator=request.user,
            assignment_id=assignment_id,
            reason=form.reason_text(),
        )
    except LabelingError as exc:
        return _after_write(request, project, {"level": "warn", "text": exc.message})
    return _after_write(request, project, {"level": "ok", "text": "Skipped."})
