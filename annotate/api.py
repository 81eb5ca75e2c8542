"""REST API of the labeling app (DRF, under /api/v1/). Thin adapters: parse,
check access (`annotate.permissions`), call one service, serialize.

Error shape: 400 ``{field: [messages]}`` (DRF's), 401 without credentials,
403 when the caller's role does not allow the action, 404 for objects outside
the caller's projects (and other annotators' assignments), 409 for a labeling
request the rules refuse now (skipped, lease lost), 413 for an oversized body.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from typing import Any

from django.conf import settings
from django.db.models import CharField, Count, Q, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import APIException, NotFound
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.models import Assignment, Comparison, Judgment, Project
from annotate.permissions import (
    API_AUTHENTICATION,
    IMPORT,
    LABEL,
    READ_DATA,
    project_for,
    sees_all_judgments,
    visible_projects,
)
from annotate.serializers import (
    AssignmentQuerySerializer,
    AssignmentSerializer,
    ComparisonBodyImportSerializer,
    ComparisonFileImportSerializer,
    ComparisonQuerySerializer,
    ComparisonSerializer,
    ImportErrorSerializer,
    ImportResultSerializer,
    JudgmentQuerySerializer,
    JudgmentSerializer,
    JudgmentSubmitSerializer,
    LabelingErrorSerializer,
    Pagination,
    ProjectSerializer,
    ReportQuerySerializer,
    SkipSerializer,
    SubmitResultSerializer,
    TokenSerializer,
)
from annotate.services.assignments import LabelingError, assignment_next, assignment_skip
from annotate.services.imports import ImportValidationError, comparisons_import
from annotate.services.judgments import JudgmentInvalid, judgment_submit
from annotate.services.reports import agreement_report

ERRORS = {
    400: OpenApiResponse(description="Invalid input: {field: [messages]}"),
    401: OpenApiResponse(description="Not authenticated"),
    403: OpenApiResponse(description="Your role does not allow this"),
    404: OpenApiResponse(description="Not found, or not a member of its project"),
}
# Codes of `LabelingError` that mean "not yours to see": answered like a missing object.
_HIDDEN = {"not_found", "not_yours"}


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The upload is too large."
    default_code = "too_large"


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


def _upload_limit() -> int:
    return settings.MAX_UPLOAD_MB * 1024 * 1024


def _labeling_error(exc: LabelingError) -> APIException:
    if isinstance(exc, JudgmentInvalid):
        return serializers.ValidationError({k: [v] for k, v in exc.errors.items()})
    if exc.code in _HIDDEN:
        return NotFound(exc.message)
    return Conflict({"code": exc.code, "detail": exc.message})


class TokenView(ObtainAuthToken):
    """Exchange a username and password for the caller's API token (created on first use)."""

    authentication_classes: list = []  # credentials are in the body; a stale header must not 401

    @extend_schema(
        operation_id="auth_token_create",
        request=AuthTokenSerializer,
        responses={200: TokenSerializer, 400: OpenApiResponse(description="Bad credentials")},
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().post(request, *args, **kwargs)


class ProjectListView(generics.ListAPIView):
    authentication_classes = API_AUTHENTICATION
    serializer_class = ProjectSerializer
    pagination_class = Pagination
    queryset = Project.objects.none()

    def get_queryset(self) -> QuerySet[Project]:
        return visible_projects(self.request.user).order_by("slug")


class ProjectDetailView(APIView):
    authentication_classes = API_AUTHENTICATION

    @extend_schema(operation_id="projects_retrieve", responses={200: ProjectSerializer, **ERRORS})
    def get(self, request: Request, slug: str) -> Response:
        project = project_for(request.user, slug)
        return Response(ProjectSerializer(project, context={"request": request}).data)


class ComparisonListView(generics.GenericAPIView):
    """List (leads, ML staff) and bulk-create (ML staff) comparisons of a project."""

    authentication_classes = API_AUTHENTICATION
    serializer_class = ComparisonSerializer
    pagination_class = Pagination
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    queryset = Comparison.objects.none()

    @extend_schema(
        operation_id="project_comparisons_list",
        parameters=[ComparisonQuerySerializer],
        responses={200: ComparisonSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, slug: str) -> Response:
        project = project_for(request.user, slug, READ_DATA)
        query = ComparisonQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        f = query.validated_data
        rows = Comparison.objects.filter(project=project).annotate(
            n_judgments=Count("judgments", filter=Q(judgments__superseded_at__isnull=True))
        )
        if "external_id" in f:
            rows = rows.filter(external_id=f["external_id"])
        if "model" in f:
            rows = rows.filter(Q(model_a=f["model"]) | Q(model_b=f["model"]))
        if "search" in f:
            rows = rows.filter(prompt__icontains=f["search"])
        if f.get("judged") is not None:
            rows = rows.filter(n_judgments__gt=0) if f["judged"] else rows.filter(n_judgments=0)
        page = self.paginate_queryset(rows.order_by("id"))
        return self.get_paginated_response(ComparisonSerializer(page, many=True).data)

    @extend_schema(
        operation_id="project_comparisons_import",
        description="Bulk create through the import service: a JSON body with `items`, or a "
        "multipart upload "
        "with `file`. All or nothing: one bad record and nothing is written (400 naming it). "
        "201 when something was created, 200 when everything already existed.",
        request={
            "application/json": ComparisonBodyImportSerializer,
            "multipart/form-data": ComparisonFileImportSerializer,
        },
        responses={
            201: ImportResultSerializer,
            200: ImportResultSerializer,
            400: ImportErrorSerializer,
            413: OpenApiResponse(description="Body or file over MAX_UPLOAD_MB"),
            **{k: v for k, v in ERRORS.items() if k != 400},
        },
    )
    def post(self, request: Request, slug: str) -> Response:
        project = project_for(request.user, slug, IMPORT)
        # Refuse by the declared size before parsing anything.
        if int(request.META.get("CONTENT_LENGTH") or 0) > _upload_limit():
            raise PayloadTooLarge(f"The request is over {settings.MAX_UPLOAD_MB} MB.")
        if request.content_type.startswith("multipart/"):
            body = ComparisonFileImportSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            upload = body.validated_data["file"]
            if upload.size > _upload_limit():
                raise PayloadTooLarge(f"The file is over {settings.MAX_UPLOAD_MB} MB.")
            stream, filename, fmt, offset = upload, upload.name, body.validated_data["format"], None
        else:
            body = ComparisonBodyImportSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            stream, filename, fmt = _items_stream(
                body.validated_data["format"], body.validated_data["items"]
            )
            offset = 1  # line N of the synthesized file is items[N - 1]
        try:
            result = comparisons_import(
                project_slug=project.slug,
                stream=stream,
                filename=filename,
                fmt=fmt,
                with_judgments=body.validated_data["with_judgments"],
                created_by=request.user,
            )
        except ImportValidationError as exc:
            error = exc.as_dict()
            if offset is not None:
                where = exc.line if exc.line is not None else exc.record
                error["item"] = where - offset if where is not None else None
            return Response(
                {"detail": str(exc), "errors": [error]}, status=status.HTTP_400_BAD_REQUEST
            )
        data = {
            **asdict(result),
            "annotators": list(result.annotators),
            "message": "nothing new"
            if result.nothing_new
            else f"{result.comparisons_created} created",
        }
        code = status.HTTP_200_OK if result.nothing_new else status.HTTP_201_CREATED
        return Response(ImportResultSerializer(data).data, status=code)


def _items_stream(fmt: str, items: list[dict[str, Any]]) -> tuple[io.BytesIO, str, str]:
    """The JSON body's records as the file the import service reads."""
    if fmt == "alpaca-eval":
        return io.BytesIO(json.dumps(items).encode()), "request-body.json", fmt
    lines = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
    return io.BytesIO(lines.encode()), "request-body.jsonl", fmt


class ComparisonDetailView(APIView):
    authentication_classes = API_AUTHENTICATION

    @extend_schema(
        operation_id="project_comparisons_retrieve", responses={200: ComparisonSerializer, **ERRORS}
    )
    def get(self, request: Request, slug: str, pk: int) -> Response:
        project = project_for(request.user, slug, READ_DATA)
        comparison = (
            Comparison.objects.filter(project=project, pk=pk)
            .annotate(
                n_judgments=Count("judgments", filter=Q(judgments__superseded_at__isnull=True))
            )
            .first()
        )
        if comparison is None:
            raise NotFound("No such comparison in this project.")
        return Response(ComparisonSerializer(comparison).data)


class AssignmentListView(generics.GenericAPIView):
    """Assignments of a project: an annotator's own; everyone's for leads, ML staff and staff."""

    authentication_classes = API_AUTHENTICATION
    serializer_class = AssignmentSerializer
    pagination_class = Pagination
    queryset = Assignment.objects.none()

    @extend_schema(
        operation_id="project_assignments_list",
        parameters=[AssignmentQuerySerializer],
        responses={200: AssignmentSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, slug: str) -> Response:
        project = project_for(request.user, slug)
        query = AssignmentQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = Assignment.objects.filter(project=project).select_related(
            "comparison", "project", "annotator"
        )
        if not sees_all_judgments(request.user, project):
            rows = rows.filter(annotator=request.user)
        if "status" in query.validated_data:
            rows = rows.filter(status=query.validated_data["status"])
        page = self.paginate_queryset(rows.order_by("id"))
        return self.get_paginated_response(AssignmentSerializer(page, many=True).data)


class AssignmentNextView(APIView):
    authentication_classes = API_AUTHENTICATION

    @extend_schema(
        operation_id="project_assignments_next",
        request=None,
        description="The caller's open assignment, or a new one. 204 when nothing is left. "
        "`left`/`right` are in display order; answer in that orientation.",
        responses={
            200: AssignmentSerializer,
            204: OpenApiResponse(description="Nothing left"),
            **ERRORS,
        },
    )
    def post(self, request: Request, slug: str) -> Response:
        project = project_for(request.user, slug, LABEL)
        assignment = assignment_next(project=project, annotator=request.user)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(AssignmentSerializer(assignment).data)


class AssignmentSkipView(APIView):
    authentication_classes = API_AUTHENTICATION

    @extend_schema(
        operation_id="project_assignments_skip",
        request=SkipSerializer,
        responses={200: AssignmentSerializer, 409: LabelingErrorSerializer, **ERRORS},
    )
    def post(self, request: Request, slug: str, pk: int) -> Response:
        project = project_for(request.user, slug, LABEL)
        body = SkipSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            assignment = assignment_skip(
                project=project,
                annotator=request.user,
                assignment_id=pk,
                reason=body.validated_data["reason"],
            )
        except LabelingError as exc:
            raise _labeling_error(exc) from exc
        return Response(AssignmentSerializer(assignment).data)


class JudgmentSubmitView(APIView):
    authentication_classes = API_AUTHENTICATION

    @extend_schema(
        operation_id="project_assignments_submit",
        request=JudgmentSubmitSerializer,
        description="Record the caller's answer. Idempotent: a repeat returns the stored "
        "judgment with 200.",
        responses={
            201: SubmitResultSerializer,
            200: SubmitResultSerializer,
            409: LabelingErrorSerializer,
            **ERRORS,
        },
    )
    def post(self, request: Request, slug: str, pk: int) -> Response:
        project = project_for(request.user, slug, LABEL)
        body = JudgmentSubmitSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            outcome = judgment_submit(
                project=project,
                annotator=request.user,
                assignment_id=pk,
                overall=data["overall"],
                axes=data["axes"],
                flags=data["flags"],
                rationale=data["rationale"],
                active_ms=data.get("active_ms"),
                displayed=data["orientation"] == "displayed",
                source=Judgment.Source.API,
            )
        except LabelingError as exc:
            raise _labeling_error(exc) from exc
        payload = {
            "judgment": JudgmentSerializer(outcome.judgment).data,
            "created": outcome.created,
            "over_budget": outcome.over_budget,
            "late": outcome.late,
        }
        return Response(
            payload, status=status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK
        )


class JudgmentListView(generics.GenericAPIView):
    """Current judgments (canonical orientation). Annotators see only their own."""

    authentication_classes = API_AUTHENTICATION
    serializer_class = JudgmentSerializer
    pagination_class = Pagination
    queryset = Judgment.objects.none()

    @extend_schema(
        operation_id="project_judgments_list",
        parameters=[JudgmentQuerySerializer],
        responses={200: JudgmentSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, slug: str) -> Response:
        project = project_for(request.user, slug)
        query = JudgmentQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        f = query.validated_data
        rows = Judgment.objects.filter(project=project).select_related("annotator", "comparison")
        if not f["include_superseded"]:
            rows = rows.filter(superseded_at__isnull=True)
        if not sees_all_judgments(request.user, project):
            rows = rows.filter(annotator=request.user)
        if "annotator" in f:
            rows = rows.filter(annotator__username=f["annotator"])
        if "submitted_after" in f:
            rows = rows.filter(submitted_at__gte=f["submitted_after"])
        if "submitted_before" in f:
            rows = rows.filter(submitted_at__lt=f["submitted_before"])
        if "comparison" in f:
            rows = rows.filter(comparison_id=f["comparison"])
        rows = _filter_axis(rows, project, f.get("axis"), f.get("side"))
        page = self.paginate_queryset(rows.order_by("id"))
        return self.get_paginated_response(JudgmentSerializer(page, many=True).data)


def _filter_axis(
    rows: QuerySet[Judgment], project: Project, axis: str | None, side: str | None
) -> QuerySet[Judgment]:
    if axis is None and side is None:
        return rows
    axis = axis or "overall"
    if axis != "overall" and axis not in project.rubric_axes:
        raise serializers.ValidationError(
            {"axis": [f"'overall' or one of: {', '.join(project.rubric_axes)}"]}
        )
    if axis == "overall":
        sides = {"A": Q(overall__lt=0), "tie": Q(overall=0), "B": Q(overall__gt=0)}
        return rows.filter(sides[side]) if side else rows
    # A key transform, not an `axes__<name>` lookup: axis names are data and
    # may contain characters (or "__") the lookup syntax would misread.
    # The Cast makes the comparison a plain text one (without it, SQLite
    # compares against JSON_EXTRACT(<param>) and fails on "malformed JSON").
    rows = rows.alias(axis_choice=Cast(KeyTextTransform(axis, "axes"), output_field=CharField()))
    return rows.filter(axis_choice=side) if side else rows.filter(axis_choice__in=["A", "tie", "B"])


class AgreementView(APIView):
    authentication_classes = API_AUTHENTICATION

    @extend_schema(
        operation_id="project_agreement",
        parameters=[ReportQuerySerializer],
        responses={200: OpenApiTypes.OBJECT, **ERRORS},
        description="The project's agreement and label-bias report "
        "(schema in annotate/agreement.py); "
        "cached until the judgments change.",
    )
    def get(self, request: Request, slug: str) -> Response:
        project = project_for(request.user, slug, READ_DATA)
        query = ReportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(agreement_report(project=project, refresh=query.validated_data["refresh"]))
