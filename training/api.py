"""REST API of the training app: exports and training runs. Thin adapters over
`training.services`; access rules in `annotate.permissions`."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.http import FileResponse, Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.permissions import (
    API_AUTHENTICATION,
    EXPORT,
    TRAIN,
    check_project,
    has_role_anywhere,
    project_for,
    visible_projects,
)
from annotate.serializers import Pagination
from training import export_files
from training.models import DatasetExport, MetricPoint, TrainingRun
from training.serializers import (
    DatasetExportSerializer,
    ExportCreateSerializer,
    ExportDownloadQuerySerializer,
    MetricsQuerySerializer,
    RunListQuerySerializer,
    RunMetricsSerializer,
    TrainingRunCreateSerializer,
    TrainingRunSerializer,
)
from training.services import export_create, export_dir, run_cancel, run_create
from training.services_runs import (
    run_artifacts_zip,
    run_fail_stale,
    run_validate_config,
    stale_after_s,
)

ERRORS = {
    400: OpenApiResponse(description="Invalid input: {field: [messages]}"),
    401: OpenApiResponse(description="Not authenticated"),
    403: OpenApiResponse(description="Your role does not allow this"),
    404: OpenApiResponse(description="Not found, or not a member of its project"),
}


def _field_errors(
    exc: DjangoValidationError, rename: dict[str, str] | None = None
) -> serializers.ValidationError:
    rename = rename or {}
    return serializers.ValidationError({rename.get(k, k): v for k, v in exc.message_dict.items()})


def export_for(user: Any, pk: int) -> DatasetExport:
    export = DatasetExport.objects.select_related("project", "created_by").filter(pk=pk).first()
    if export is None:
        raise Http404("No such export.")
    check_project(user, export.project, EXPORT)
    return export


def run_for(user: Any, pk: int) -> TrainingRun:
    run = TrainingRun.objects.select_related("project", "created_by").filter(pk=pk).first()
    if run is None or (run.project is None and not user.is_staff):
        raise Http404("No such run.")
    if run.project is not None:
        check_project(user, run.project, TRAIN)
    return run


def reap_lost_runs() -> list[int]:
    """Fail runs whose worker stopped heartbeating (cheap when there are none); see services_runs."""
    return run_fail_stale(older_than_s=stale_after_s())


class ApiView(APIView):
    authentication_classes = API_AUTHENTICATION


class ProjectExportsView(generics.GenericAPIView):
    authentication_classes = API_AUTHENTICATION
    serializer_class = DatasetExportSerializer
    pagination_class = Pagination
    queryset = DatasetExport.objects.none()

    def get_queryset(self) -> QuerySet[DatasetExport]:
        project = project_for(self.request.user, self.kwargs["slug"], EXPORT)
        return (
            DatasetExport.objects.filter(project=project)
            .select_related("project", "created_by")
            .order_by("-id")
        )

    @extend_schema(
        operation_id="project_exports_list",
        responses={200: DatasetExportSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, slug: str) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(DatasetExportSerializer(page, many=True).data)

    @extend_schema(
        operation_id="project_exports_create",
        request=ExportCreateSerializer,
        responses={201: DatasetExportSerializer, **ERRORS},
    )
    def post(self, request: Request, slug: str) -> Response:
        project = project_for(request.user, slug, EXPORT)
        params = ExportCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
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
        except DjangoValidationError as exc:
            raise _field_errors(exc, {"fmt": "format"}) from exc
        return Response(DatasetExportSerializer(export).data, status=status.HTTP_201_CREATED)


class ExportDetailView(ApiView):
    @extend_schema(
        operation_id="exports_retrieve", responses={200: DatasetExportSerializer, **ERRORS}
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(DatasetExportSerializer(export_for(request.user, pk)).data)


class ExportDownloadView(ApiView):
    @extend_schema(
        operation_id="exports_download",
        parameters=[ExportDownloadQuerySerializer],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, **ERRORS},
    )
    def get(self, request: Request, pk: int) -> FileResponse:
        export = export_for(request.user, pk)
        query = ExportDownloadQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return export_file_response(export, query.validated_data.get("file"))


def export_file_response(export: DatasetExport, name: str | None) -> FileResponse:
    """One recorded file of the export, or a zip of all of them (shared with the ML page)."""
    root = export_dir(export)
    if not root.is_dir():
        raise Http404("The export's files are gone.")
    if name:
        # Only names recorded at export time: no path from the request reaches the disk.
        if name not in export.files:
            raise Http404("No such file in this export.")
        return FileResponse(
            (root / name).open("rb"), as_attachment=True, filename=name.replace("/", "_")
        )
    return FileResponse(
        export_files.zip_export(root),
        as_attachment=True,
        filename=f"{export.project.slug}-export-{export.pk}.zip",
        content_type="application/zip",
    )


class RunsView(generics.GenericAPIView):
    authentication_classes = API_AUTHENTICATION
    serializer_class = TrainingRunSerializer
    pagination_class = Pagination
    queryset = TrainingRun.objects.none()

    def get_queryset(self) -> QuerySet[TrainingRun]:
        user = self.request.user
        if not has_role_anywhere(user, TRAIN):
            raise PermissionDenied("Only ML staff see training runs.")
        runs = TrainingRun.objects.select_related("project", "created_by").order_by("-id")
        return runs if user.is_staff else runs.filter(project__in=visible_projects(user, TRAIN))

    @extend_schema(
        operation_id="runs_list",
        parameters=[RunListQuerySerializer],
        responses={200: TrainingRunSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request) -> Response:
        query = RunListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        runs = self.get_queryset()
        reap_lost_runs()  # listing runs must never show a dead worker's run as running
        filters = query.validated_data
        if "project" in filters:
            runs = runs.filter(project__slug=filters["project"])
        if "status" in filters:
            runs = runs.filter(status=filters["status"])
        if "kind" in filters:
            runs = runs.filter(kind=filters["kind"])
        page = self.paginate_queryset(runs)
        return self.get_paginated_response(TrainingRunSerializer(page, many=True).data)

    @extend_schema(
        operation_id="runs_create",
        request=TrainingRunCreateSerializer,
        responses={201: TrainingRunSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        if not has_role_anywhere(request.user, TRAIN):
            raise PermissionDenied("Only ML staff launch training runs.")
        body = TrainingRunCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        export = export_for(request.user, data["export"]) if "export" in data else None
        project = project_for(request.user, data["project"], TRAIN) if "project" in data else None
        if project is None and export is None and not request.user.is_staff:
            raise serializers.ValidationError({"project": ["give a project or an export"]})
        try:
            # The kind's config dataclass validates the hyperparameters; the
            # run stores the full config (defaults written out).
            config = run_validate_config(kind=data["kind"], config=data["config"])
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"config": exc.message_dict}) from exc
        try:
            run = run_create(
                user=request.user,
                kind=data["kind"],
                project=project,
                export=export,
                data_path=data["data_path"],
                config=config,
                name=data["name"],
            )
        except DjangoValidationError as exc:
            raise _field_errors(exc) from exc
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_201_CREATED)


class RunDetailView(ApiView):
    @extend_schema(operation_id="runs_retrieve", responses={200: TrainingRunSerializer, **ERRORS})
    def get(self, request: Request, pk: int) -> Response:
        run = run_for(request.user, pk)
        if run.status == TrainingRun.Status.RUNNING and reap_lost_runs():
            run.refresh_from_db()
        return Response(TrainingRunSerializer(run).data)


class RunMetricsView(ApiView):
    @extend_schema(
        operation_id="runs_metrics",
        parameters=[MetricsQuerySerializer],
        responses={200: RunMetricsSerializer, **ERRORS},
    )
    def get(self, request: Request, pk: int) -> Response:
        run = run_for(request.user, pk)
        query = MetricsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        points = MetricPoint.objects.filter(run=run, step__gt=query.validated_data["after_step"])
        if query.validated_data.get("name"):
            points = points.filter(name__in=query.validated_data["name"])
        series: dict[str, list[list[float]]] = {}
        for name, step, value in points.order_by("name", "step").values_list(
            "name", "step", "value"
        ):
            series.setdefault(name, []).append([step, value])
        return Response(
            {"run": run.pk, "status": run.status, "progress": run.progress, "series": series}
        )


class RunCancelView(ApiView):
    @extend_schema(
        operation_id="runs_cancel", request=None, responses={200: TrainingRunSerializer, **ERRORS}
    )
    def post(self, request: Request, pk: int) -> Response:
        run = run_cancel(run=run_for(request.user, pk), user=request.user)
        return Response(TrainingRunSerializer(run).data)


class RunArtifactsView(ApiView):
    @extend_schema(
        operation_id="runs_artifacts",
        description="A zip of the run's output folder (model, tokenizer, run_config.json, "
        "metrics.jsonl, eval_report.json); `?checkpoints=1` includes resumable checkpoints.",
        responses={(200, "application/zip"): OpenApiTypes.BINARY, **ERRORS},
    )
    def get(self, request: Request, pk: int) -> FileResponse:
        run = run_for(request.user, pk)
        try:
            archive = run_artifacts_zip(run, checkpoints=request.query_params.get("checkpoints") == "1")
        except FileNotFoundError as exc:
            raise Http404(f"run {run.pk} has no artifacts yet") from exc
        return FileResponse(
            archive, as_attachment=True, filename=f"run-{run.pk}-{run.kind}-artifacts.zip",
            content_type="application/zip",
        )
