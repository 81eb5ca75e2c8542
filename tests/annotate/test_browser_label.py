"""The label screen in a real browser (Debian's Chromium through Playwright).

* an annotator logs in and labels three comparisons with the keyboard alone
  (and skips a fourth);
  the judgments in the database are checked, including the orientation of
  the ones shown swapped (the swap pattern is fixed through
  ANNOTATE_RANDOM_SEED, which seeds the service's per-assignment draw);
* hostile model output (script tag, onerror image, javascript: link) does not
  execute and stays readable; the countdown says when time is up;
* without JavaScript the same form works (plain POST + redirect);
* screenshots at 1280x800 and 390x844 land in test-output/.
"""

from __future__ import annotations

import os

import pytest
from django.test import Client

from annotate.models import Assignment, Judgment, Membership
from annotate.services.assignments import seeded_random
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


def annotator(project, username: str):
    user = UserFactory(username=username)
    MembershipFactory(project=project, user=user, role=Membership.Role.ANNOTATOR)
    return user


def logged_in_context(browser, live_server, user, **kwargs):
    """A browser context carrying a real session cookie (faster than typing a login)."""
    client = Client()
    client.force_login(user)
    context = browser.new_context(**kwargs)
    context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )
    return context


def current_assignment(page) -> str:
    return page.locator("#item .item").get_attribute("data-assignment")


def wait_for_new_item(page, old: str) -> None:
    page.wait_for_function(
        "old => { const el = document.querySelector('#item .item'); "
        "return (el && el.dataset.assignment !== old) || document.querySelector('#item .done'); }",
        arg=old,
    )


def seed_with_both_orientations(project_id: int, annotator_id: int) -> tuple[int, list[bool]]:
    """A seed whose first three draws show at least one item swapped and one not."""
    for seed in range(1000):
        pattern = [
            seeded_random(
                seed=seed, project_id=project_id, annotator_id=annotator_id, served=k
            ).random()
            < 0.5
            for k in range(3)
        ]
        if pattern[0] is False and any(pattern):
            return seed, pattern
    raise AssertionError("no seed found")


def test_keyboard_only_session_three_comparisons(
    browser, live_server, settings, test_output
) -> None:
    project = ProjectFactory(
        slug="kb",
        name="Keyboard run",
        time_budget_s=300,
        guidelines="Prefer the **accurate** answer.",
    )
    user = annotator(project, "alice")
    comparisons = [
        ComparisonFactory(
            project=project,
            external_id=f"k{i}",
            prompt=f"Question {i}?",
            response_a=f"Alpha answer {i}: *canonical A*.",
            response_b=f"Bravo answer {i}: canonical B.",
        )
        for i in range(4)
    ]
    seed, pattern = seed_with_both_orientations(project.pk, user.pk)
    settings.ANNOTATE_RANDOM_SEED = seed

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{live_server.url}/login/?next=/projects/kb/label/")
    # Log in with the keyboard: the username field has autofocus.
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_selector("#item .item")
    page.evaluate("window.__sameDocument = true")

    # The shortcut overlay lists every key, and Escape closes it.
    page.keyboard.press("?")
    dialog = page.locator("dialog#help")
    assert dialog.is_visible()
    for key in ("Enter", "a", "t", "b", "j", "k", "s", "r", "g", "f", "c"):
        assert dialog.locator(f"kbd:text-is('{key}')").count() >= 1, key
    page.keyboard.press("Escape")
    assert not dialog.is_visible()

    # Responses side by side at 1280 px; screenshot.
    left, right = (
        page.locator("#response-A").bounding_box(),
        page.locator("#response-B").bounding_box(),
    )
    assert abs(left["y"] - right["y"]) < 2 and right["x"] > left["x"] + left["width"] - 1
    page.keyboard.press("g")  # open the guidelines for the picture
    page.screenshot(path=str(test_output / "label-1280x800.png"))
    page.keyboard.press("g")
    page.set_viewport_size({"width": 390, "height": 844})
    left, right = (
        page.locator("#response-A").bounding_box(),
        page.locator("#response-B").bounding_box(),
    )
    assert right["y"] >= left["y"] + left["height"] - 1  # stacked on a phone
    page.screenshot(path=str(test_output / "label-390x844.png"))
    page.screenshot(path=str(test_output / "label-390x844-full.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})

    # Per item: axes a / t / b (displayed A, tie, displayed B), then an overall digit, then Enter.
    # The second item reaches the axes in another order (j moves the axis cursor).
    keys = [["a", "t", "b"], ["j", "j", "b", "a", "t"], ["a", "t", "b"]]
    digits = ["1", "6", "4"]
    seen_ids = []
    for k in range(3):
        aid = current_assignment(page)
        seen_ids.append(int(aid))
        a = Assignment.objects.get(pk=aid)
        assert a.swapped == pattern[k], (k, pattern)
        left_text = page.locator("#response-A").inner_text()
        expected_left = a.comparison.response_b if a.swapped else a.comparison.response_a
        assert expected_left.split(":")[0] in left_text
        timer = page.locator(".timer-value").inner_text()
        assert ":" in timer
        for key in [*keys[k], digits[k]]:
            page.keyboard.press(key)
        assert page.locator(f'input[name="overall"][value="{digits[k]}"]').is_checked()
        page.keyboard.press("Enter")
        wait_for_new_item(page, aid)

    # The fourth one is skipped from the keyboard: s opens the reasons, arrows pick, Enter confirms.
    aid = current_assignment(page)
    page.keyboard.press("s")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    wait_for_new_item(page, aid)
    skipped = Assignment.objects.get(pk=aid)
    assert skipped.status == "skipped" and skipped.skip_reason == "broken"

    assert page.locator("#item .done").is_visible()
    assert page.evaluate("window.__sameDocument") is True  # htmx swaps, no reload

    displayed = {"1": -3, "6": 2, "4": 0}
    judgments = {j.assignment_id: j for j in Judgment.objects.filter(annotator=user)}
    assert sorted(judgments) == sorted(seen_ids)
    for k, aid in enumerate(seen_ids):
        j = judgments[aid]
        assert j.comparison_id == comparisons[k].pk
        assert j.swapped == pattern[k]
        if pattern[k]:  # left was canonical B: everything flips
            assert j.overall == -displayed[digits[k]]
            assert j.axes == {"helpful": "B", "truthful": "tie", "harmless": "A"}
        else:
            assert j.overall == displayed[digits[k]]
            assert j.axes == {"helpful": "A", "truthful": "tie", "harmless": "B"}
        assert j.active_ms is not None and j.active_ms > 0
        assert not j.over_budget
    context.close()


HOSTILE = (
    "Here is a script: <script>window.__pwned = 'script'</script>\n\n"
    "An image: <img src=x onerror=\"window.__pwned = 'img'\">\n\n"
    "A link: [click me](javascript:window.__pwned='link') and "
    "<a href=\"javascript:window.__pwned='a'\">raw</a>\n\n"
    "An autolink: <javascript:window.__pwned='auto'>"
)


def test_hostile_model_output_does_not_execute_and_stays_readable(
    browser, live_server, test_output
) -> None:
    project = ProjectFactory(slug="xss", name="XSS", time_budget_s=1, lease_grace_s=600)
    user = annotator(project, "mallory-target")
    ComparisonFactory(
        project=project,
        prompt="<script>window.__pwned='prompt'</script>Say hi",
        response_a=HOSTILE,
        response_b=HOSTILE,
        prompt_messages=[
            {"role": "user", "content": "<img src=x onerror=\"window.__pwned='chat'\">hi"}
        ],
    )
    # bypass_csp: the page's Content-Security-Policy would block inline script
    # on its own; switch it off so this test proves the sanitizer alone suffices.
    context = logged_in_context(
        browser, live_server, user, viewport={"width": 1280, "height": 800}, bypass_csp=True
    )
    page = context.new_page()
    response = page.goto(f"{live_server.url}/projects/xss/label/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("#item .item")
    page.wait_for_timeout(200)  # let any onerror/onload handler fire, if one slipped through
    assert page.evaluate("typeof window.__pwned") == "undefined"

    for selector in ("script", "img", "[onerror]", "a[href^='javascript' i]"):
        assert page.locator(f"#item {selector}").count() == 0, selector
    # Nothing clickable runs either.
    page.locator("#response-A").get_by_text("click me", exact=False).first.click()
    page.wait_for_timeout(200)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    # The text is readable as written, in the rendered and in the raw view.
    rendered = page.locator("#response-A .rendered").inner_text()
    assert "<script>window.__pwned = 'script'</script>" in rendered
    assert "<img src=x onerror=" in rendered
    page.keyboard.press("r")
    raw = page.locator("#response-A .raw")
    assert raw.is_visible() and raw.inner_text().strip() == HOSTILE.strip()
    assert page.locator(".turn-user .raw").inner_text().startswith("<img src=x")

    # The budget is 1 s: the countdown says when time is up; a late answer is kept, over budget.
    page.wait_for_function(
        "() => document.querySelector('.timer-msg').textContent.includes('Time is up')"
    )
    assert page.locator(".timer.over").count() == 1
    page.screenshot(path=str(test_output / "label-hostile-1280x800.png"))
    aid = current_assignment(page)
    for key in ("a", "a", "a", "7"):
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    wait_for_new_item(page, aid)
    j = Judgment.objects.get(assignment_id=aid)
    assert j.over_budget and j.overall == (-3 if j.swapped else 3)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    context.close()


def test_without_javascript_the_plain_form_still_works(browser, live_server) -> None:
    project = ProjectFactory(slug="nojs", name="No JS")
    user = annotator(project, "nojs-user")
    ComparisonFactory.create_batch(2, project=project)
    context = logged_in_context(browser, live_server, user, java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{live_server.url}/projects/nojs/label/")
    first = current_assignment(page)
    for axis in ("helpful", "truthful", "harmless"):
        page.check(f'input[name="axis-{axis}"][value="tie"]')
    page.check('input[name="overall"][value="4"]')
    page.click("#judgment-form button[type=submit]")
    page.wait_for_load_state()
    assert "Saved." in page.locator(".messages").inner_text()
    assert current_assignment(page) != first
    # Skip works too: open the panel, pick a reason, submit.
    second = current_assignment(page)
    page.click("#skip-panel summary")
    page.select_option("#skip-reason", "broken")
    page.click("#skip-form button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("#item .done").is_visible()
    assert Judgment.objects.get(assignment_id=first).overall == 0
    assert Assignment.objects.get(pk=second).status == "skipped"
    context.close()
