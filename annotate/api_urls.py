"""API routes of the labeling app (mounted under /api/v1/)."""

from django.urls import path, register_converter
from django.urls.converters import IntConverter, get_converters

from annotate import api, api_labeling


class IdConverter(IntConverter):
    """A database id: at most 18 digits, so no lookup overflows a 64-bit column
    (`<int:...>` would let a 30-digit id reach SQLite and fail with a 500)."""

    regex = "[0-9]{1,18}"


if "id" not in get_converters():  # the URLconf may be imported more than once
    register_converter(IdConverter, "id")

urlpatterns = [
    # POST username + password -> {"token": ...}; AI annotators cannot authenticate.
    path("auth/token/", api.TokenView.as_view(), name="api-token"),
    path("projects/", api.ProjectListView.as_view(), name="api-projects"),
    path("projects/<slug:slug>/", api.ProjectDetailView.as_view(), name="api-project-detail"),
    path(
        "projects/<slug:slug>/comparisons/",
        api.ComparisonListView.as_view(),
        name="api-comparisons",
    ),
    path(
        "projects/<slug:slug>/comparisons/<id:pk>/",
        api.ComparisonDetailView.as_view(),
        name="api-comparison-detail",
    ),
    path(
        "projects/<slug:slug>/assignments/",
        api_labeling.AssignmentListView.as_view(),
        name="api-assignments",
    ),
    path(
        "projects/<slug:slug>/assignments/next/",
        api_labeling.AssignmentNextView.as_view(),
        name="api-assignment-next",
    ),
    path(
        "projects/<slug:slug>/assignments/<id:pk>/skip/",
        api_labeling.AssignmentSkipView.as_view(),
        name="api-assignment-skip",
    ),
    path(
        "projects/<slug:slug>/assignments/<id:pk>/judgment/",
        api_labeling.JudgmentSubmitView.as_view(),
        name="api-assignment-submit",
    ),
    path(
        "projects/<slug:slug>/judgments/",
        api_labeling.JudgmentListView.as_view(),
        name="api-judgments",
    ),
    path("projects/<slug:slug>/agreement/", api.AgreementView.as_view(), name="api-agreement"),
]
