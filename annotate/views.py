"""htmx views: thin adapters over `annotate.services`."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotate.models import Membership


@login_required
def home(request: HttpRequest) -> HttpResponse:
    memberships = (
        Membership.objects.filter(user=request.user).select_related("project").order_by("project__name", "role")
    )
    return render(request, "annotate/home.html", {"memberships": memberships})
