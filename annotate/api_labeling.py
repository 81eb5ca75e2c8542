"""REST API for labeling: assignments (list, next, skip) and judgments (submit, list).

Thin adapters like `annotate.api` (same error shape, documented there): a
labeling request the rules refuse now (skipped, lease lost) is a 409; another
annotator's assignment is a 404, as if it did not exist.
"""

from __future__ import annotations

from django.db.models import CharField, Q, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import APIException, NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.api import ERRORS
from annotate.models import Assignment, Judgment, Project
from annotate.permissions import API_AUTHENTICATION, LABEL, project_for, sees_all_judgments
from annotate.serializers import (
    AssignmentQuerySerializer,
    AssignmentSerializer,
    JudgmentQuerySerializer,
    JudgmentSerializer,
    JudgmentSubmitSerializer,
    LabelingErrorSerializer,
    Pagination,
    SkipSerializer,
    SubmitResultSerializer,
)
from annotate.services.assignments import LabelingError, assignment_next, assignment_skip
from annotate.services.judgments import JudgmentInvalid, judgment_submit

# Codes of `LabelingError` that mean "not yours to see": answered like a missing object.
_HIDDEN = {"not_found", "not_yours"}


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


def _labeling_error(exc: LabelingError) -> APIException:
    if isinstance(exc, JudgmentInvalid):
        return serializers.ValidationError({k: [v] for k, v in exc.errors.items()})
    if exc.code in _HIDDEN:
        return NotFound(exc.message)
    return Conflict({"code": exc.code, "detail": exc.message})


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
