"""ML pages (mounted at /ml/): list exports, create one from a form, download.

Thin adapters over `training.services`; ML members of a project (and staff)
only: other members get 403, non-members 404 (see `annotate.permissions`).
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from annotate.models import Judgment, Project
from annotate.permissions import EXPORT, has_role_anywhere, project_for, visible_projects
from training import exports
from training.api import export_file_response, export_for
from training.models import DatasetExport
from training.services import export_create


class ExportForm(forms.Form):
    format = forms.ChoiceField(choices=[(f, f) for f in exports.FORMATS], initial="jsonl")
    axis = forms.ChoiceField(initial="overall")
    policy = forms.ChoiceField(
        choices=[(p, p) for p in exports.POLICIES],
        initial="majority",
        help_text="majority: one record per comparison with a strict majority; "
        "unanimous: every judgment agrees; all: one record per judgment.",
    )
    min_judgments = forms.IntegerField(min_value=1, max_value=1000, initial=1)
    ties = forms.ChoiceField(choices=[(t, t) for t in exports.TIES], initial="drop")
    exclude_annotators = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple
    )
    eval_fraction = forms.FloatField(
        min_value=0.0,
        max_value=0.99,
        initial=0.1,
        help_text="Share of prompts held out (split by prompt).",
    )
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=0)

    def __init__(self, *args: object, project: Project, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["axis"].choices = [(a, a) for a in ["overall", *project.rubric_axes]]
        names = (
            Judgment.objects.filter(project=project)
            .values_list("annotator__username", flat=True)
            .distinct()
            .order_by("annotator__username")
        )
        self.fields["exclude_annotators"].choices = [(n, n) for n in names]


@login_required
@require_GET
def ml_home(request: HttpRequest) -> HttpResponse:
    if not has_role_anywhere(request.user, EXPORT):
        raise PermissionDenied("Only ML staff use these pages.")
    projects = visible_projects(request.user, EXPORT).order_by("name")
    recent = (
        DatasetExport.objects.filter(project__in=projects)
        .select_related("project", "created_by")
        .order_by("-id")[:20]
    )
    return render(request, "training/exports_home.html", {"projects": projects, "recent": recent})


@login_required
@require_http_methods(["GET", "POST"])
def project_exports(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for(request.user, slug, EXPORT)
    form = ExportForm(request.POST or None, project=project)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                export = export_create(
                    project=project,
                    user=request.user,
                    fmt=data["format"],
                    axis=data["axis"],
                    policy=data["policy"],
                    min_judgments=data["min_judgments"],
                    ties=data["ties"],
                    exclude_annotators=data["exclude_annotators"],
                    eval_fraction=data["eval_fraction"],
                    seed=data["seed"],
                )
            except ValidationError as exc:
                for name, errs in exc.message_dict.items():
                    name = "format" if name == "fmt" else name
                    form.add_error(name if name in form.fields else None, errs)
            else:
                messages.success(
                    request,
                    f"Export {export.pk}: {export.n_train} train + {export.n_eval} eval records.",
                )
                return redirect("ml-project-exports", slug=project.slug)
        status = 400
    rows = (
        DatasetExport.objects.filter(project=project).select_related("created_by").order_by("-id")
    )
    return render(
        request,
        "training/exports.html",
        {"project": project, "form": form, "exports": rows},
        status=status,
    )


@login_required
@require_GET
def export_download(request: HttpRequest, pk: int) -> FileResponse:
    export = export_for(request.user, pk)
    return export_file_response(export, request.GET.get("file") or None)
