"""API routes of the training app (mounted under /api/v1/)."""

from django.urls import path

import annotate.api_urls  # noqa: F401 - registers the `id` path converter used below
from training import api

urlpatterns = [
    path(
        "projects/<slug:slug>/exports/",
        api.ProjectExportsView.as_view(),
        name="api-project-exports",
    ),
    path("exports/<id:pk>/", api.ExportDetailView.as_view(), name="api-export-detail"),
    path("exports/<id:pk>/download/", api.ExportDownloadView.as_view(), name="api-export-download"),
    path("runs/", api.RunsView.as_view(), name="api-runs"),
    path("runs/<id:pk>/", api.RunDetailView.as_view(), name="api-run-detail"),
    path("runs/<id:pk>/metrics/", api.RunMetricsView.as_view(), name="api-run-metrics"),
    path("runs/<id:pk>/cancel/", api.RunCancelView.as_view(), name="api-run-cancel"),
    path("runs/<id:pk>/artifacts/", api.RunArtifactsView.as_view(), name="api-run-artifacts"),
]
