"""A lead in a real browser (Debian's Chromium through Playwright): logs in,
opens the dashboard and sees the plots, opens a disagreement, sends it back
for more judgments (htmx); an annotator is then served that comparison."""

from __future__ import annotations

import os

import pytest
from django.core.cache import cache

from annotate.models import Comparison, Membership
from annotate.services.assignments import assignment_next
from tests.annotate.test_agreement_command import judge
from tests.factories import ComparisonFactory, MembershipFactory, ProjectFactory, UserFactory

# Playwright's sync API runs an event loop in this thread; Django refuses ORM
# calls from a thread with a running loop unless told this is deliberate.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright (Python) is not installed")
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "pw-for-tests-1"


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def member(project, username: str, role: str):
    user = UserFactory(username=username)
    MembershipFactory(project=project, user=user, role=role)
    return user


def test_lead_sends_a_disagreement_back_and_an_annotator_gets_it(
    browser, live_server, test_output
) -> None:
    cache.clear()
    project = ProjectFactory(slug="audit", name="Audit run", overlap=2)
    lead = member(project, "lee", Membership.Role.LEAD)
    alice = member(project, "alice", Membership.Role.ANNOTATOR)
    bob = member(project, "bob", Membership.Role.ANNOTATOR)
    carol = member(project, "carol", Membership.Role.ANNOTATOR)
    split = ComparisonFactory(
        project=project,
        external_id="split-1",
        slots_taken=2,
        prompt="Which is kinder?",
        response_a="<b>No.</b>",
        response_b="Of course, gladly.",
    )
    judge(
        split,
        alice,
        -2,
        axes={"helpful": "A", "truthful": "A", "harmless": "tie"},
        rationale="A is direct",
    )
    judge(split, bob, 3, axes={"helpful": "B", "truthful": "tie", "harmless": "B"}, swapped=True)
    for i in range(6):  # full, agreeing comparisons: nothing else to serve
        c = ComparisonFactory(project=project, external_id=f"agree-{i}", slots_taken=2)
        judge(c, alice, 1 + i % 2, axes={"helpful": "B"})
        judge(c, bob, 1, axes={"helpful": "B"})
    assert assignment_next(project=project, annotator=carol) is None

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{live_server.url}/login/?next=/lead/audit/")
    page.fill("#id_username", lead.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/lead/audit/")

    # The four plots are inline SVG with bars; nothing was fetched from elsewhere.
    assert page.locator("figure.plot svg").count() == 4
    assert page.locator("figure.plot svg rect").count() >= 4
    assert page.locator("#plot-1 figcaption").inner_text().startswith("Pairwise agreement per axis")
    assert page.locator("#axes-table tbody tr").count() == 4
    page.screenshot(path=str(test_output / "dashboard-1280.png"), full_page=True)

    page.click("nav >> text=Disagreements")
    page.wait_for_url("**/lead/audit/disagreements/")
    assert page.locator("#disagreements-table tbody tr").count() == 1  # only the split one
    page.click("text=split-1")
    page.wait_for_url(f"**/disagreements/{split.pk}/")
    table = page.locator("#judgments-table")
    assert (
        "alice" in table.inner_text()
        and "bob" in table.inner_text()
        and "A is direct" in table.inner_text()
    )
    assert (
        page.locator(".response .md").first.inner_text().strip() == "<b>No.</b>"
    )  # escaped, readable

    page.select_option("select[name=extra]", "1")
    page.click("text=Send back for more judgments")
    page.wait_for_selector("#actions .notice")  # swapped in by htmx, no reload
    assert "Sent back for 1 more judgment" in page.locator("#actions").inner_text()
    assert "Wanted judgments: 3" in page.locator("#actions").inner_text()
    page.screenshot(path=str(test_output / "disagreement-1280.png"), full_page=True)
    page.close()

    split = Comparison.objects.get(pk=split.pk)
    assert split.extra_overlap == 1 and split.resolved_at is None
    assignment = assignment_next(project=project, annotator=carol)
    assert assignment is not None and assignment.comparison_id == split.pk
