"""ML pages, mounted at /ml/."""
from django.urls import path

from training import views

urlpatterns = [
    path("", views.ml_home, name="ml-home"),
    path("projects/<slug:slug>/exports/", views.project_exports, name="ml-project-exports"),
    path("exports/<int:pk>/download/", views.export_download, name="ml-export-download"),
]
