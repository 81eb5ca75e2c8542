"""Label screen over HTTP: permissions, htmx vs plain POST, errors, query counts."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from annotate.models import Assignment, Comparison, Judgment, Membership, User
from annotate.rendering import render_markdown
from annotate.services.assignments import assignment_next
from tests.factories import ComparisonFactory, MembershipFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}
ANSWER = {
    "axis-helpful": "A",
    "axis-truthful": "tie",
    "axis-harmless": "B",
    "overall": "2",
    "active_ms": "1500",
}


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def label_url(project) -> str:
    return reverse("label", args=[project.slug])


def open_assignment(user) -> Assignment:
    return Assignment.objects.select_related("comparison").get(annotator=user, status="open")


def test_login_page_and_home_progress(client, project, alice) -> None:
    ComparisonFactory.create_batch(4, project=project)
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-for-tests-1"})
    assert response.status_code == 302
    home = client.get(reverse("home"))
    html = home.content.decode()
    assert "Demo" in html and label_url(project) in html
    assert home.context["rows"][0]["progress"].remaining == 4


def test_ai_annotator_cannot_log_in(client, project) -> None:
    judge = UserFactory(username="gpt-judge", kind=User.Kind.AI)
    MembershipFactory(project=project, user=judge)
    response = client.post(
        reverse("login"), {"username": "gpt-judge", "password": "pw-for-tests-1"}
    )
    assert response.status_code == 200 and "cannot log in" in response.content.decode()
    assert client.get(label_url(project)).status_code == 302  # still anonymous -> login


def test_only_annotators_of_the_project_can_label(client, project, lee, alice) -> None:
    ComparisonFactory(project=project)
    other = ProjectFactory(slug="other")
    ComparisonFactory(project=other)
    assert client.get(label_url(project)).status_code == 302  # anonymous
    client.force_login(lee)
    assert client.get(label_url(project)).status_code == 403  # a lead, not an annotator
    client.force_login(alice)
    assert client.get(label_url(other)).status_code == 404  # not a member
    assert client.get(reverse("label", args=["nope"])).status_code == 404
    assert not Assignment.objects.filter(project=other).exists()


def test_label_page_structure_and_accessibility(alice_client, project) -> None:
    project.guidelines = "# Rules\nPrefer **honest** answers."
    project.save()
    ComparisonFactory(project=project, response_a="**alpha** text", response_b="beta text", gold=1)
    response = alice_client.get(label_url(project))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Content-Security-Policy" in response.headers
    assert "<strong>honest</strong>" in html and "<details" in html
    for axis in project.rubric_axes:
        assert re.search(rf"<fieldset[^>]*>\s*<legend>{axis.capitalize()}</legend>", html)
    assert "<legend>Overall preference</legend>" in html
    assert html.count('type="radio" name="overall"') == 7
    assert all(label in html for label in project.scale)
    a = open_assignment(project.memberships.get(role="annotator").user)
    left, right = (
        ("beta text", "<strong>alpha</strong> text")
        if a.swapped
        else ("<strong>alpha</strong> text", "beta text")
    )
    assert html.index(left) < html.index(right)
    # Nothing says which side is canonical, nor that this is a gold item.
    assert "gold" not in html.lower() and "swapped" not in html.lower()


def test_chat_prompt_shown_as_conversation(alice_client, project) -> None:
    ComparisonFactory(
        project=project,
        prompt_messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi *there*"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Capital of France?"},
        ],
    )
    html = alice_client.get(label_url(project)).content.decode()
    assert html.count('class="turn turn-') == 4
    assert "turn-system" in html and "<em>there</em>" in html


def test_htmx_submit_swaps_in_next_item(alice_client, project, alice) -> None:
    ComparisonFactory.create_batch(2, project=project)
    alice_client.get(label_url(project))
    first = open_assignment(alice)
    response = alice_client.post(
        reverse("label-submit", args=[project.slug, first.pk]), ANSWER, **HX
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and "Saved." in html
    second = open_assignment(alice)
    assert second.pk != first.pk and f'data-assignment="{second.pk}"' in html
    j = Judgment.objects.get(assignment=first)
    # Position 2 = displayed "A better" = -2 on screen; canonical flips when swapped.
    assert j.overall == (2 if first.swapped else -2)
    assert j.axes["helpful"] == ("B" if first.swapped else "A") and j.axes["truthful"] == "tie"
    assert j.active_ms == 1500


def test_plain_post_redirects_then_shows_next(alice_client, project, alice) -> None:
    ComparisonFactory.create_batch(2, project=project)
    alice_client.get(label_url(project))
    first = open_assignment(alice)
    response = alice_client.post(reverse("label-submit", args=[project.slug, first.pk]), ANSWER)
    assert response.status_code == 302 and response.url == label_url(project)
    page = alice_client.get(response.url).content.decode()
    assert "Saved." in page and "<html" in page
    assert Judgment.objects.filter(assignment=first).count() == 1


def test_double_post_records_once_and_returns_the_same_next(alice_client, project, alice) -> None:
    ComparisonFactory.create_batch(3, project=project)
    alice_client.get(label_url(project))
    first = open_assignment(alice)
    url = reverse("label-submit", args=[project.slug, first.pk])
    one = alice_client.post(url, ANSWER, **HX).content.decode()
    two = alice_client.post(url, {**ANSWER, "overall": "7"}, **HX).content.decode()
    assert Judgment.objects.filter(assignment=first).count() == 1
    nxt = open_assignment(alice)
    assert f'data-assignment="{nxt.pk}"' in one and f'data-assignment="{nxt.pk}"' in two
    assert "already saved" in two


def test_missing_axis_redisplays_with_errors(alice_client, project, alice) -> None:
    ComparisonFactory(project=project)
    alice_client.get(label_url(project))
    a = open_assignment(alice)
    url = reverse("label-submit", args=[project.slug, a.pk])
    bad = {k: v for k, v in ANSWER.items() if k != "axis-truthful"}
    response = alice_client.post(url, bad, **HX)
    html = response.content.decode()
    assert response.status_code == 200 and "Choose A, tie or B for truthful." in html
    assert f'data-assignment="{a.pk}"' in html
    assert re.search(r'name="overall" value="2" required checked', html)  # the answer is kept
    assert alice_client.post(url, bad).status_code == 422  # plain POST: full page with errors
    assert not Judgment.objects.exists()


def test_rationale_required_when_the_project_says_so(alice_client, project, alice) -> None:
    project.require_rationale = True
    project.save()
    ComparisonFactory(project=project)
    alice_client.get(label_url(project))
    a = open_assignment(alice)
    url = reverse("label-submit", args=[project.slug, a.pk])
    assert "asks for a short rationale" in alice_client.post(url, ANSWER, **HX).content.decode()
    alice_client.post(url, {**ANSWER, "rationale": "B invents a date."}, **HX)
    assert Judgment.objects.get().rationale == "B invents a date."


def test_foreign_or_expired_assignment_gets_a_message_not_a_500(
    alice_client, project, alice, bob
) -> None:
    project.overlap = 1
    project.save()
    ComparisonFactory.create_batch(2, project=project)
    bobs = assignment_next(project=project, annotator=bob)
    response = alice_client.post(
        reverse("label-submit", args=[project.slug, bobs.pk]), ANSWER, **HX
    )
    assert response.status_code == 200 and "assigned to someone else" in response.content.decode()
    # Alice's lease runs out; carol's next request reclaims it and takes the only free slot.
    a = open_assignment(alice)
    Assignment.objects.filter(pk=a.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    carol = UserFactory(username="carol")
    MembershipFactory(project=project, user=carol, role=Membership.Role.ANNOTATOR)
    assert assignment_next(project=project, annotator=carol).comparison_id == a.comparison_id
    response = alice_client.post(reverse("label-submit", args=[project.slug, a.pk]), ANSWER)
    assert response.status_code == 302
    page = alice_client.get(response.url).content.decode()
    assert "slot went to another annotator" in page and "All done" in page
    assert not Judgment.objects.filter(annotator=alice).exists()
    response = alice_client.post(reverse("label-submit", args=[project.slug, 10**9]), ANSWER, **HX)
    assert response.status_code == 200 and "does not exist" in response.content.decode()


def test_skip_with_reason(alice_client, project, alice) -> None:
    ComparisonFactory.create_batch(2, project=project)
    alice_client.get(label_url(project))
    a = open_assignment(alice)
    url = reverse("label-skip", args=[project.slug, a.pk])
    html = alice_client.post(url, {"reason": "other"}, **HX).content.decode()
    assert "Say briefly why" in html and Assignment.objects.get(pk=a.pk).status == "open"
    html = alice_client.post(
        url, {"reason": "other", "note": "foreign language"}, **HX
    ).content.decode()
    a.refresh_from_db()
    assert a.status == "skipped" and a.skip_reason == "other: foreign language"
    assert "Skipped." in html and open_assignment(alice).pk != a.pk


def test_done_screen_when_nothing_left(alice_client, project) -> None:
    html = alice_client.get(label_url(project)).content.decode()
    assert "All done" in html


def test_markdown_rendering_is_sanitized() -> None:
    html = str(
        render_markdown(
            "<script>x()</script> <img src=x onerror=alert(1)> [a](javascript:alert(1)) "
            "<a href='javascript:alert(2)'>b</a> ![i](http://tracker/p.png) [ok](https://example.org)"
        )
    )
    assert "<script" not in html and "<img" not in html and 'href="javascript' not in html.lower()
    assert "&lt;script&gt;x()&lt;/script&gt;" in html  # still readable
    assert '<a href="https://example.org" rel="noopener noreferrer nofollow">ok</a>' in html
    assert '<a href="http://tracker/p.png"' in html and "[image: i]" in html


# --- constant query counts --------------------------------------------------


def _make_project(size: int):
    project = ProjectFactory(slug=f"size-{size}", overlap=3)
    user = UserFactory(username=f"worker-{size}")
    MembershipFactory(project=project, user=user, role=Membership.Role.ANNOTATOR)
    others = [UserFactory(username=f"other-{size}-{i}") for i in range(2)]
    Comparison.objects.bulk_create(
        Comparison(
            project=project,
            external_id=f"s{size}-{i}",
            content_hash=f"{size}-{i}",
            prompt=f"q{i}",
            response_a=f"a{i}",
            response_b=f"b{i}",
            # Every other item is gold, so both pools (gold and not) stay non-empty
            # for the three items served below whatever the gold draw says: a
            # fallback pick is one extra query and would make counts random.
            gold=(1 if i % 2 == 1 else None),
        )
        for i in range(size)
    )
    # Half the project already has work on it, so the planner sees a mix.
    comparisons = list(Comparison.objects.filter(project=project).order_by("pk")[: size // 2])
    now = timezone.now()
    for other in others:
        Assignment.objects.bulk_create(
            Assignment(
                project=project, comparison=c, annotator=other, status="submitted", shown_at=now
            )
            for c in comparisons
        )
    Comparison.objects.filter(pk__in=[c.pk for c in comparisons]).update(slots_taken=2)
    return project, user


def _queries(client, method: str, url: str, data: dict | None = None) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = getattr(client, method)(url, data or {}, **HX)
    assert response.status_code == 200, response.content[:500]
    return len(ctx.captured_queries)


def test_next_and_submit_query_counts_do_not_grow_with_project_size(client) -> None:
    counts = {}
    for size in (40, 500):
        project, user = _make_project(size)
        project.gold_rate = 0.2
        project.save()
        client.force_login(user)
        first = _queries(client, "get", label_url(project))  # creates the first assignment
        resume = _queries(client, "get", label_url(project))  # resumes it
        a = Assignment.objects.get(annotator=user, status="open")
        submit = _queries(
            client, "post", reverse("label-submit", args=[project.slug, a.pk]), ANSWER
        )
        b = Assignment.objects.get(annotator=user, status="open")
        skip = _queries(
            client, "post", reverse("label-skip", args=[project.slug, b.pk]), {"reason": "broken"}
        )
        counts[size] = (first, resume, submit, skip)
    print("queries (first next, resume, submit+next, skip+next):", counts)
    assert counts[40] == counts[500], counts
    first, resume, submit, skip = counts[40]
    assert first <= 12 and submit <= 18, counts
