"""Only the project's leads see its dashboard: every URL, every method, every other role."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from annotate.models import Comparison, Membership
from tests.annotate.test_agreement_command import judge
from tests.factories import ComparisonFactory, MembershipFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(project, lee, alice, bob, mia):
    cache.clear()
    comparison = ComparisonFactory(project=project)
    judge(comparison, alice, -2)
    judge(comparison, bob, 2)
    other = ProjectFactory(slug="other")
    otto = UserFactory(username="otto")  # leads another project only
    MembershipFactory(project=other, user=otto, role=Membership.Role.LEAD)
    root = UserFactory(username="root", is_staff=True, is_superuser=True)  # staff, not a member
    return {
        "project": project,
        "comparison": comparison,
        "lee": lee,
        "alice": alice,
        "mia": mia,
        "otto": otto,
        "root": root,
    }


def urls(slug: str, pk: int) -> list[str]:
    kw = {"slug": slug}
    return [
        reverse("lead:dashboard", kwargs=kw),
        reverse("lead:dashboard", kwargs=kw) + "?sort=judgments&dir=desc",
        reverse("lead:report-json", kwargs=kw),
        *(
            reverse("lead:csv", kwargs={**kw, "table": t})
            for t in (
                "axes",
                "annotators",
                "cohen_kappa",
                "length_quintiles",
                "time_quartiles",
                "conflicts",
                "disagreements",
            )
        ),
        reverse("lead:disagreements", kwargs=kw),
        reverse("lead:disagreement", kwargs={**kw, "pk": pk}),
        reverse("lead:disagreement-resolve", kwargs={**kw, "pk": pk}),
        reverse("lead:disagreement-send-back", kwargs={**kw, "pk": pk}),
    ]


@pytest.mark.parametrize("who", ["alice", "mia", "otto", "root"])
def test_non_leads_get_403_or_404_on_every_url_and_method(setup, who) -> None:
    client = Client()
    client.force_login(setup[who])
    comparison = setup["comparison"]
    index = reverse("lead:index")
    for url in [*urls("demo", comparison.pk), *([index] if who != "otto" else [])]:
        for method in ("get", "post"):
            response = getattr(client, method)(url, {"extra": "3"} if method == "post" else None)
            assert response.status_code in (403, 404), (who, method, url, response.status_code)
            assert b"pairwise_agreement" not in response.content and b"<svg" not in response.content
    if who == "otto":  # a lead elsewhere: the index leads to that project only
        assert client.get(index)["Location"] == reverse("lead:dashboard", kwargs={"slug": "other"})
    # Members with another role get 403; strangers 404 (the project's existence is not revealed).
    expected = 403 if who in ("alice", "mia") else 404
    assert client.get(reverse("lead:dashboard", kwargs={"slug": "demo"})).status_code == expected
    comparison = Comparison.objects.get(pk=comparison.pk)
    assert comparison.extra_overlap == 0 and comparison.resolved_at is None


def test_anonymous_users_are_sent_to_the_login_page(setup) -> None:
    client = Client()
    for url in [*urls("demo", setup["comparison"].pk), reverse("lead:index")]:
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            assert response.status_code == 302 and response["Location"].startswith("/login/"), url


def test_the_lead_gets_every_url(setup) -> None:
    client = Client()
    client.force_login(setup["lee"])
    *gets, resolve, send_back = urls("demo", setup["comparison"].pk)
    for url in gets:
        assert client.get(url).status_code == 200, url
    assert client.get(reverse("lead:index")).status_code == 302  # one project: straight to it
    assert client.get(resolve).status_code == 405 and client.get(send_back).status_code == 405
    assert client.post(send_back, {"extra": "2"}).status_code == 302
    assert client.post(resolve).status_code == 302


def test_a_lead_cannot_reach_another_projects_comparison_through_its_own_slug(setup) -> None:
    foreign = ComparisonFactory(project=ProjectFactory(slug="third"))
    client = Client()
    client.force_login(setup["lee"])
    for url in urls("demo", foreign.pk)[-3:]:
        method = client.get if url.endswith(f"/{foreign.pk}/") else client.post
        assert method(url).status_code == 404, url
    assert (
        client.get(reverse("lead:csv", kwargs={"slug": "demo", "table": "secrets"})).status_code
        == 404
    )
    foreign.refresh_from_db()
    assert foreign.extra_overlap == 0 and foreign.resolved_at is None
