"""Home page: each role sees links to its own screens, and only those."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.urls import reverse

from annotate.models import Membership
from tests.factories import ComparisonFactory, MembershipFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db


def role_urls(slug: str) -> dict[str, list[str]]:
    """Every role-specific link the home page can show for project `slug`."""
    return {
        "annotator": [reverse("label", args=[slug])],
        "lead": [
            reverse("lead:dashboard", args=[slug]),
            reverse("lead:disagreements", args=[slug]),
        ],
        "ml": [
            reverse("ml-project-exports", args=[slug]),
            # The runs page, filtered to this project.
            f"{reverse('ml-runs')}?{urlencode({'project': slug})}",
        ],
    }


def home_html(client, user) -> str:
    client.force_login(user)
    response = client.get(reverse("home"))
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize("role", ["annotator", "lead", "ml"])
def test_each_role_sees_its_links_and_not_the_others(client, project, role) -> None:
    ComparisonFactory.create_batch(2, project=project)  # something left to label
    user = UserFactory(username=f"user-{role}")
    MembershipFactory(project=project, user=user, role=role)
    html = home_html(client, user)
    assert project.name in html
    for other, urls in role_urls(project.slug).items():
        for url in urls:
            assert (f'href="{url}"' in html) == (other == role), (role, other, url)
    assert reverse("admin:index") not in html  # not staff


def test_annotator_row_keeps_progress_and_says_when_nothing_is_left(client, project, alice):
    html = home_html(client, alice)  # no comparisons at all
    assert "Nothing left to label" in html and reverse("label", args=[project.slug]) not in html
    ComparisonFactory.create_batch(3, project=project)
    response = client.get(reverse("home"))
    row = response.context["rows"][0]
    assert row["progress"].remaining == 3 and row["roles"] == ["Annotator"]
    assert "Done today" in response.content.decode()


def test_lead_only_user_sees_no_progress_columns(client, project, lee) -> None:
    html = home_html(client, lee)
    assert "Project lead" in html
    assert "Done today" not in html and "Remaining for you" not in html


def test_one_row_per_project_with_every_role_of_the_user(client, project, lee) -> None:
    MembershipFactory(project=project, user=lee, role=Membership.Role.ML)
    other = ProjectFactory(slug="other", name="Other")
    MembershipFactory(project=other, user=lee, role=Membership.Role.ANNOTATOR)
    ComparisonFactory(project=other)
    client.force_login(lee)
    response = client.get(reverse("home"))
    rows = response.context["rows"]
    assert [r["project"].slug for r in rows] == ["demo", "other"]  # by name
    assert rows[0]["roles"] == ["Project lead", "ML staff"] and rows[0]["progress"] is None
    assert rows[1]["roles"] == ["Annotator"] and rows[1]["progress"].remaining == 1
    html = response.content.decode()
    for url in role_urls("demo")["lead"] + role_urls("other")["annotator"]:
        assert f'href="{url}"' in html
    assert reverse("lead:dashboard", args=["other"]) not in html
    assert reverse("label", args=["demo"]) not in html


def test_staff_see_the_admin_link_even_without_projects(client, db) -> None:
    staff = UserFactory(username="sam", is_staff=True)
    html = home_html(client, staff)
    assert f'href="{reverse("admin:index")}"' in html
    assert "not a member of any project" in html


def test_admin_link_is_in_the_nav_of_other_pages_for_staff_only(client, project, lee) -> None:
    dashboard = reverse("lead:dashboard", args=[project.slug])
    client.force_login(lee)
    assert reverse("admin:index") not in client.get(dashboard).content.decode()
    lee.is_staff = True
    lee.save(update_fields=["is_staff"])
    assert f'href="{reverse("admin:index")}"' in client.get(dashboard).content.decode()


def test_home_query_count_does_not_grow_with_projects(
    client, project, alice, django_assert_max_num_queries
) -> None:
    client.force_login(alice)
    client.get(reverse("home"))  # warm the session
    for i in range(4):
        extra = ProjectFactory(slug=f"p{i}", name=f"P{i}")
        for role in Membership.Role.values:
            MembershipFactory(project=extra, user=alice, role=role)
        ComparisonFactory(project=extra)
    # session + user + memberships + three progress queries
    with django_assert_max_num_queries(6):
        response = client.get(reverse("home"))
    assert len(response.context["rows"]) == 5
