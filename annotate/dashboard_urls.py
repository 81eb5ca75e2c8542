"""Lead dashboard URLs, mounted at /lead/ (every view checks the lead role)."""

from django.urls import path

from annotate import dashboard_views as views
from annotate import disagreement_views as queue

app_name = "lead"

urlpatterns = [
    path("", views.index, name="index"),
    path("<slug:slug>/", views.dashboard, name="dashboard"),
    path("<slug:slug>/report.json", views.report_json, name="report-json"),
    path("<slug:slug>/csv/<str:table>.csv", views.table_csv, name="csv"),
    path("<slug:slug>/disagreements/", queue.disagreements, name="disagreements"),
    path("<slug:slug>/disagreements/<int:pk>/", queue.disagreement_detail, name="disagreement"),
    path(
        "<slug:slug>/disagreements/<int:pk>/resolve/",
        queue.disagreement_resolve,
        name="disagreement-resolve",
    ),
    path(
        "<slug:slug>/disagreements/<int:pk>/send-back/",
        queue.disagreement_send_back,
        name="disagreement-send-back",
    ),
]
