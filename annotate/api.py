"""REST API of the labeling app (DRF, under /api/v1/). Thin adapters: parse,
check access (`annotate.permissions`), call one service, serialize.

Error shape: 400 ``{field: [messages]}`` (DRF's), 401 without credentials,
403 when the caller's role does not allow the action, 404 for objects outside
the caller's projects (and other annotators' assignments), 409 for a labeling
request the rules refuse now (skipped, lease lost), 413 for an oversized body.

Here: token, projects, comparisons (list, import) and the agreement report;
assignments and judgments are in `annotate.api_labeling`.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import APIException, NotFound
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.models import Comparison, Project
from annotate.permissions import (
    API_AUTHENTICATION,
    IMPORT,
    READ_DATA,
    project_for,
    visible_projects,
)
from annotate.serializers import (
    ComparisonBodyImportSerializer,
    ComparisonFileImportSerializer,
    ComparisonQuerySerializer,
    ComparisonSerializer,
    ImportErrorSerializer,
    ImportResultSerializer,
    Pagination,
    ProjectSerializer,
    ReportQuerySerializer,
    TokenSerializer,
)
from annotate.services.imports import ImportValidationError, comparisons_import
from annotate.services.reports import agreement_report

ERRORS = {
    400: OpenApiResponse(description="Invalid input: {field: [messages]}"),
    401: OpenApiResponse(description="Not authenticated"),
    403: OpenApiResponse(description="Your role does not allow this"),
    404: OpenApiResponse(description="Not found, or not a member of its project"),
}


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The upload is too large."
    default_code = "too_large"


def _upload_limit() -> int:
    return settings.MAX_UPLOAD_MB * 1024 * 1024


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
