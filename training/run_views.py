"""ML pages for training runs (mounted under /ml/): launch, list, watch live, compare, download, cancel.

Thin adapters over `training.services` / `training.services_runs`. Only ML
members of a run's project (and staff) get in: leads and annotators of the
project get 403, everyone else 404 (`annotate.permissions`). The run page
polls a fragment with htmx every second while the run is active; the
fragment of a finished run carries no trigger, so polling stops by itself.
No torch here.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import F, Q, QuerySet
from django.db.models.functions import Mod
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotate.models import Project
from annotate.permissions import TRAIN, has_role_anywhere, project_for, visible_projects
from training.api import reap_lost_runs, run_for
from training.config import LoopConfig
from training.models import DatasetExport, MetricPoint, TrainingRun
from training.models_hub import PACKAGED
from training.registry import KINDS
from training.run_charts import build_charts, series_from_rows
from training.services import run_cancel
from training.services_runs import run_artifacts_path, run_artifacts_zip, run_launch

CFG = "cfg_"  # prefix of hyperparameter form fields (keeps them apart from the run's own fields)
POINTS_PER_SERIES = 300


# --- the launch form --------------------------------------------------------------
def _default_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()  # as the true/false select shows it
    if isinstance(value, tuple | list):
        return ", ".join(map(str, value))
    return str(value)


def config_fields(config_cls: type[LoopConfig]) -> dict[str, forms.Field]:
    """One form field per config field, with its default as initial value and its help text."""
    hints = typing.get_type_hints(config_cls)
    out: dict[str, forms.Field] = {}
    for fld in dataclasses.fields(config_cls):
        meta = fld.metadata
        help_text = f"{meta.get('help', '')} Default: {_default_text(fld.default) or 'null'}."
        # Every field is optional: a missing or blank value keeps the default. Booleans are a
        # true/false select, not a checkbox, because an unchecked box is indistinguishable from "absent".
        if hints[fld.name] is bool:
            field: forms.Field = forms.ChoiceField(choices=[("true", "true"), ("false", "false")], required=False,
                                                   initial=str(fld.default).lower(), help_text=help_text)
        elif "choices" in meta:
            field = forms.ChoiceField(choices=[(c, c) for c in meta["choices"]], initial=fld.default,
                                      required=False, help_text=help_text)
        else:
            field = forms.CharField(required=False, initial=_default_text(fld.default), help_text=help_text,
                                    max_length=1000, widget=forms.TextInput(attrs={"placeholder": "null"}
                                                                             if fld.default is None else {}))
        field.label = fld.name
        out[CFG + fld.name] = field
    return out


class RunForm(forms.Form):
    name = forms.CharField(required=False, max_length=200)
    kind = forms.ChoiceField(choices=[])
    export = forms.ModelChoiceField(queryset=DatasetExport.objects.none(), required=False,
                                    help_text="A preference dataset exported from this project.")
    data_path = forms.CharField(required=False, max_length=500,
                                help_text="Staff only: a JSONL/Parquet file or export folder on the workers' disk "
                                          "(instead of an export).")
    num_gpus = forms.IntegerField(min_value=1, max_value=64, initial=1, label="GPUs",
                                  help_text="More than 1 launches the trainer through `accelerate launch` on the "
                                            "worker's node.")

    def __init__(self, *args: Any, project: Project, user: Any, kind: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kind_name = kind
        self.fields["kind"].choices = [(name, f"{name}: {k.help}") for name, k in KINDS.items()]
        self.fields["kind"].initial = kind
        self.fields["export"].queryset = DatasetExport.objects.filter(project=project).order_by("-id")
        self.fields["export"].label_from_instance = (
            lambda e: f"#{e.pk} · {e.format} · {e.n_train} train / {e.n_eval} eval · {e.created_at:%Y-%m-%d %H:%M}")
        latest = self.fields["export"].queryset.first()
        if latest is not None:
            self.fields["export"].initial = latest.pk
        if not user.is_staff:
            del self.fields["data_path"]
        self.fields.update(config_fields(KINDS[kind].config))

    def hyperparameters(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name.startswith(CFG) and name != CFG + "model"]

    def model_field(self) -> forms.BoundField | None:
        return self[CFG + "model"] if CFG + "model" in self.fields else None

    def config(self) -> dict[str, Any]:
        """Hyperparameters as the config dataclass's from_dict takes them; blank means the default."""
        values: dict[str, Any] = {}
        for name, value in self.cleaned_data.items():
            if not name.startswith(CFG):
                continue
            if isinstance(value, str) and value.strip() == "":
                continue  # blank keeps the default (null for optional fields)
            values[name.removeprefix(CFG)] = value
        values["num_gpus"] = self.cleaned_data.get("num_gpus") or 1
        return values

    def add_service_errors(self, exc: ValidationError) -> None:
        for name, errs in exc.message_dict.items():
            target = name if name in self.fields else CFG + name if CFG + name in self.fields else None
            self.add_error(target, errs if target else [f"{name}: {e}" for e in errs])


# --- helpers ---------------------------------------------------------------------------
def _visible_runs(user: Any) -> QuerySet[TrainingRun]:
    runs = TrainingRun.objects.select_related("project", "created_by", "export").order_by("-id")
    return runs if user.is_staff else runs.filter(project__in=visible_projects(user, TRAIN))


def _require_ml(user: Any) -> None:
    if not has_role_anywhere(user, TRAIN):
        raise PermissionDenied("Only ML staff use the training pages.")


def run_series(run: TrainingRun) -> dict[str, list[tuple[int, float]]]:
    """The run's metrics, thinned in the database to about POINTS_PER_SERIES steps per series."""
    points = MetricPoint.objects.filter(run=run)
    last = run.step or run.total_steps
    stride = max(1, -(-last // POINTS_PER_SERIES))
    if stride > 1:
        points = points.alias(bucket=Mod(F("step"), stride)).filter(
            Q(bucket=0) | Q(step=last) | Q(name__startswith="eval/"))
    return series_from_rows(points.order_by("name", "step").values_list("name", "step", "value"))


def _live_context(run: TrainingRun) -> dict[str, Any]:
    x_max = max(run.total_steps, run.step, 1)
    return {"run": run, "pct": round(100 * run.progress), "charts": build_charts(run_series(run), x_range=(0, x_max)),
            "has_artifacts": bool(run.artifacts_dir)}


# --- views ------------------------------------------------------------------------------
@login_required
@require_GET
def run_list(request: HttpRequest) -> HttpResponse:
    _require_ml(request.user)
    reap_lost_runs()
    runs = _visible_runs(request.user)
    project = request.GET.get("project") or ""
    if project:
        runs = runs.filter(project__slug=project)
    projects = visible_projects(request.user, TRAIN).order_by("name")
    return render(request, "training/runs.html", {"runs": runs[:200], "projects": projects, "project": project})


@login_required
@require_http_methods(["GET", "POST"])
def run_new(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for(request.user, slug, TRAIN)
    kind = request.POST.get("kind") or request.GET.get("kind") or next(iter(KINDS))
    if kind not in KINDS:
        kind = next(iter(KINDS))
    form = RunForm(request.POST if request.method == "POST" else None, project=project, user=request.user,
                   kind=kind)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                run = run_launch(user=request.user, kind=kind, project=project, export=data.get("export"),
                                 data_path=(data.get("data_path") or "").strip(), config=form.config(),
                                 name=data["name"])
            except ValidationError as exc:
                form.add_service_errors(exc)
            else:
                messages.success(request, f"Run {run.pk} queued.")
                return redirect("ml-run", pk=run.pk)
        status = 400
    return render(request, "training/run_form.html",
                  {"project": project, "form": form, "kind": kind, "packaged_models": sorted(PACKAGED)},
                  status=status)


@login_required
@require_GET
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = run_for(request.user, pk)
    if run.status == TrainingRun.Status.RUNNING and reap_lost_runs():
        run.refresh_from_db()
    config = sorted(run.config.items())
    return render(request, "training/run.html", {**_live_context(run), "config": config})


@login_required
@require_GET
def run_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The polled fragment: status, progress bar and charts."""
    run = run_for(request.user, pk)
    if run.status == TrainingRun.Status.RUNNING and reap_lost_runs():
        run.refresh_from_db()
    return render(request, "training/run_live.html", _live_context(run))


@login_required
@require_POST
def run_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    run = run_cancel(run=run_for(request.user, pk), user=request.user)
    if run.status == TrainingRun.Status.CANCELLED:
        messages.success(request, f"Run {run.pk} cancelled.")
    elif run.cancel_requested and run.is_active:
        messages.success(request, f"Run {run.pk} will stop after its current step.")
    return redirect("ml-run", pk=run.pk)


@login_required
@require_GET
def run_artifacts(request: HttpRequest, pk: int) -> FileResponse:
    run = run_for(request.user, pk)
    root = run_artifacts_path(run)
    if root is None or not root.is_dir():
        raise Http404("This run has no artifacts (yet).")
    archive = run_artifacts_zip(run, checkpoints=request.GET.get("checkpoints") == "1")
    return FileResponse(archive, as_attachment=True, filename=f"run-{run.pk}-{run.kind}-artifacts.zip",
                        content_type="application/zip")


def _summary_rows(a: TrainingRun, b: TrainingRun) -> list[tuple[str, Any, Any, float | None]]:
    ev_a, ev_b = a.summary.get("eval", {}) or {}, b.summary.get("eval", {}) or {}
    rows = []
    for name in sorted(set(ev_a) | set(ev_b)):
        va, vb = ev_a.get(name), ev_b.get(name)
        delta = vb - va if isinstance(va, int | float) and isinstance(vb, int | float) else None
        rows.append((name, va, vb, delta))
    return rows


@login_required
@require_GET
def run_compare(request: HttpRequest) -> HttpResponse:
    _require_ml(request.user)
    ids = [request.GET.get("a", ""), request.GET.get("b", "")]
    if not all(i.isdigit() for i in ids):
        return render(request, "training/run_compare.html",
                      {"choices": _visible_runs(request.user)[:200], "error": "Pick two runs."}, status=400)
    a, b = (run_for(request.user, int(i)) for i in ids)
    x_max = max(a.total_steps, a.step, b.total_steps, b.step, 1)
    keys = sorted(set(a.config) | set(b.config))
    config_rows = [(k, a.config.get(k), b.config.get(k), a.config.get(k) != b.config.get(k)) for k in keys]
    pairs = list(zip(build_charts(run_series(a), x_range=(0, x_max)), build_charts(run_series(b), x_range=(0, x_max)),
                     strict=True))
    return render(request, "training/run_compare.html", {
        "a": a, "b": b, "chart_pairs": pairs, "summary_rows": _summary_rows(a, b), "config_rows": config_rows,
        "choices": _visible_runs(request.user)[:200],
    })
