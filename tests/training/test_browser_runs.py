"""An ML user launches a training run from the page and watches it train, in a real browser.

Debian's Chromium through Playwright, against pytest-django's live_server,
with a REAL Celery worker process training a tiny random BERT: the form is
filled in and submitted, the run page's htmx poll swaps the live fragment in
place until the progress bar reads 100% and the charts hold the run's steps.
Screenshots land in test-output/.
"""
from __future__ import annotations

import os
import re
import time

import pytest
from django.test import Client

from annotate.models import Membership
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.training.runs_helpers import export_of, tiny_config, tiny_model_dir
from tests.training.worker_helpers import (
    embedded_urls,
    log_tail,
    producer_broker,
    shared_database,
    start_worker,
    stop_worker,
)
from training.models import MetricPoint, TrainingRun

# Playwright's sync API runs an event loop in this thread; Django refuses ORM
# calls from a thread with a running loop unless told this is deliberate.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright (Python) is not installed")
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
STEPS = 40


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def logged_in_context(browser, live_server, user, **kwargs):
    client = Client()
    client.force_login(user)
    context = browser.new_context(**kwargs)
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    return context


def test_ml_user_launches_a_run_and_sees_it_reach_100_percent_with_charts(browser, live_server, settings,
                                                                          tmp_path, test_output) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    model_dir = tiny_model_dir(tmp_path / "tiny-bert")
    urls = embedded_urls(tmp_path)
    log = tmp_path / "worker.log"
    with shared_database(tmp_path) as database_url:
        project = ProjectFactory(slug="demo", name="Demo")
        mia = UserFactory(username="mia")
        MembershipFactory(project=project, user=mia, role=Membership.Role.ML)
        export = export_of(project, mia, n=24)
        worker = start_worker(urls, database_url=database_url, artifacts=settings.ARTIFACTS_ROOT, log_path=log)
        try:
            with producer_broker(urls):
                context = logged_in_context(browser, live_server, mia, viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.goto(f"{live_server.url}/ml/runs/")
                page.click("text=New run in Demo")
                page.wait_for_selector("#run-form")
                assert page.locator("#id_export").input_value() == str(export.pk)  # the latest export
                page.fill("#id_name", "browser run")
                for name, value in tiny_config(model_dir, max_steps=STEPS, log_every=1).items():
                    field = page.locator(f"[name=cfg_{name}]")
                    text = str(value).lower() if isinstance(value, bool) else str(value)
                    if field.evaluate("el => el.tagName") == "SELECT":
                        field.select_option(text)
                    else:
                        field.fill(text)
                page.screenshot(path=str(test_output / "run_form.png"), full_page=True)
                page.click("button:has-text('Launch run')")
                page.wait_for_url(re.compile(r"/ml/runs/\d+/$"))
                run = TrainingRun.objects.get(name="browser run")
                page.evaluate("window.__sameDocument = true")

                seen: list[str] = []
                deadline = time.monotonic() + 150
                while time.monotonic() < deadline:
                    label = page.locator("#progress-label").inner_text().strip()
                    if not seen or seen[-1] != label:
                        seen.append(label)
                    if label == "100%" and page.locator('#live[data-status="succeeded"]').count():
                        break
                    page.wait_for_timeout(200)
                else:
                    pytest.fail(f"progress labels seen: {seen}; run: {TrainingRun.objects.get(pk=run.pk).__dict__}\n"
                                f"{log_tail(log)}")
                page.wait_for_selector("#artifacts")
                page.screenshot(path=str(test_output / "run_page_done.png"), full_page=True)
                # The page was never reloaded: htmx swapped the fragment in place.
                assert page.evaluate("window.__sameDocument") is True
                assert seen[0] != "100%" and seen[-1] == "100%", seen
                assert page.locator("#progress").get_attribute("value") == "100"
                assert page.locator("#run-status").inner_text().strip() == "Succeeded"
                loss = page.locator('figure[data-panel="loss"] polyline[data-name="train/loss"]')
                assert len(loss.get_attribute("points").split()) == STEPS  # one vertex per step
                accuracy = page.locator('figure[data-panel="accuracy"]')
                assert int(accuracy.get_attribute("data-lines")) >= 2  # train/accuracy and eval/accuracy
                assert page.locator('figure[data-panel="length"] circle').count() >= 1  # final length diagnostics
                assert page.locator("#summary").inner_text().count("accuracy") >= 1
                context.close()
        finally:
            stop_worker(worker)
        run.refresh_from_db()
        assert run.status == TrainingRun.Status.SUCCEEDED and run.step == STEPS
        assert MetricPoint.objects.filter(run=run, name="train/loss").count() == STEPS
