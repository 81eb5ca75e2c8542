"""Top-level URL map. Each app owns its URLs; the API lives under /api/v1/."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", include("config.api_urls")),
    path("lead/", include("annotate.dashboard_urls")),
    path("ml/", include("training.urls")),
    path("", include("annotate.urls")),
]
