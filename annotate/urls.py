from django.urls import path

from annotate import views

urlpatterns = [
    path("", views.home, name="home"),
    path("projects/<slug:slug>/label/", views.label, name="label"),
    path(
        "projects/<slug:slug>/label/<int:assignment_id>/submit/",
        views.label_submit,
        name="label-submit",
    ),
    path(
        "projects/<slug:slug>/label/<int:assignment_id>/skip/", views.label_skip, name="label-skip"
    ),
]
