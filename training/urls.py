"""ML pages, mounted at /ml/."""

from django.urls import path

from training import run_views, views

urlpatterns = [
    path("", views.ml_home, name="ml-home"),
    path("projects/<slug:slug>/exports/", views.project_exports, name="ml-project-exports"),
    path("exports/<int:pk>/download/", views.export_download, name="ml-export-download"),
    # Training runs (training/run_views.py).
    path("runs/", run_views.run_list, name="ml-runs"),
    path("runs/compare/", run_views.run_compare, name="ml-run-compare"),
    path("projects/<slug:slug>/runs/new/", run_views.run_new, name="ml-run-new"),
    path("runs/<int:pk>/", run_views.run_detail, name="ml-run"),
    path("runs/<int:pk>/live/", run_views.run_live, name="ml-run-live"),
    path("runs/<int:pk>/cancel/", run_views.run_cancel_view, name="ml-run-cancel"),
    path("runs/<int:pk>/artifacts.zip", run_views.run_artifacts, name="ml-run-artifacts"),
]
