"""The ML run pages: who gets in, the launch form, the live fragment, charts, compare, artifacts, cancel."""
from __future__ import annotations

import io
import re
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotate.models import Membership
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.training.runs_helpers import export_of
from training.config import RewardConfig
from training.models import MetricPoint, TrainingRun
from training.services_runs import run_start

pytestmark = pytest.mark.django_db
Status = TrainingRun.Status


@pytest.fixture(autouse=True)
def page_settings(settings, tmp_path: Path) -> None:
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def users(project, alice, lee, mia):
    other = ProjectFactory(slug="other")
    nina = UserFactory(username="nina")  # ML staff of ANOTHER project
    MembershipFactory(project=other, user=nina, role=Membership.Role.ML)
    return {"annotator": alice, "lead": lee, "ml": mia, "staff": UserFactory(username="sam", is_staff=True),
            "nonmember": nina}


@pytest.fixture
def export(project, mia):
    return export_of(project, mia, n=8)


@pytest.fixture
def run(project, mia, export, settings):
    run = TrainingRun.objects.create(project=project, kind="reward", export=export, created_by=mia, name="first",
                                     config=RewardConfig(lr=1e-3).to_dict())
    run_start(run_id=run.pk, worker_host="gpu-1:42")
    MetricPoint.objects.bulk_create(
        [MetricPoint(run=run, step=s, name="train/loss", value=1.0 / s) for s in range(1, 11)]
        + [MetricPoint(run=run, step=s, name="train/accuracy", value=0.5 + s / 40) for s in range(1, 11)]
        + [MetricPoint(run=run, step=10, name="eval/length_flip_gap", value=0.12),
           MetricPoint(run=run, step=10, name="objective/kl", value=0.3),
           MetricPoint(run=run, step=10, name="train/lr", value=1e-3)])
    TrainingRun.objects.filter(pk=run.pk).update(step=10, total_steps=40, progress=0.25)
    run.refresh_from_db()
    out = Path(settings.ARTIFACTS_ROOT) / run.artifacts_dir
    (out / "checkpoints").mkdir(parents=True)
    (out / "config.json").write_text('{"model_type": "bert"}')
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    (out / "checkpoints" / "step-0000010.pt").write_bytes(b"x" * 100)
    (out / "leak").symlink_to("/etc/hostname")
    run.refresh_from_db()
    return run


def client_for(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def urls(run: TrainingRun) -> dict[str, tuple[str, str]]:
    return {
        "list": ("get", reverse("ml-runs")),
        "new": ("get", reverse("ml-run-new", args=["demo"])),
        "create": ("post", reverse("ml-run-new", args=["demo"])),
        "detail": ("get", reverse("ml-run", args=[run.pk])),
        "live": ("get", reverse("ml-run-live", args=[run.pk])),
        "artifacts": ("get", reverse("ml-run-artifacts", args=[run.pk])),
        "compare": ("get", reverse("ml-run-compare") + f"?a={run.pk}&b={run.pk}"),
        "cancel": ("post", reverse("ml-run-cancel", args=[run.pk])),
    }


# role -> expected status per URL; 302 for create/cancel is the redirect after success.
EXPECTED = {
    "annotator": dict.fromkeys(("list", "new", "create", "detail", "live", "artifacts", "compare", "cancel"), 403),
    "lead": dict.fromkeys(("list", "new", "create", "detail", "live", "artifacts", "compare", "cancel"), 403),
    "nonmember": {"list": 200, "new": 404, "create": 404, "detail": 404, "live": 404, "artifacts": 404,
                  "compare": 404, "cancel": 404},
    "ml": {"list": 200, "new": 200, "create": 302, "detail": 200, "live": 200, "artifacts": 200, "compare": 200,
           "cancel": 302},
    "staff": {"list": 200, "new": 200, "create": 302, "detail": 200, "live": 200, "artifacts": 200,
              "compare": 200, "cancel": 302},
}


@pytest.mark.parametrize("role", list(EXPECTED))
def test_every_run_url_checks_role_and_membership(role, users, run, export, django_capture_on_commit_callbacks):
    client = client_for(users[role])
    for name, (method, url) in urls(run).items():
        body = {"kind": "reward", "export": export.pk, "num_gpus": 1, "cfg_max_steps": "3"}
        with django_capture_on_commit_callbacks(execute=False):
            response = client.post(url, body) if method == "post" else client.get(url)
        assert response.status_code == EXPECTED[role][name], (role, name, response.status_code)
    run.refresh_from_db()
    # Leads and annotators can neither cancel nor launch; ML members and staff did both.
    launched = TrainingRun.objects.exclude(pk=run.pk).count()
    if role in ("annotator", "lead", "nonmember"):
        assert not run.cancel_requested and launched == 0
    else:
        assert run.cancel_requested and launched == 1


def test_anonymous_users_are_sent_to_log_in(run) -> None:
    for method, url in urls(run).values():
        response = getattr(Client(), method)(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_the_list_shows_only_runs_of_projects_where_the_user_is_ml(users, run) -> None:
    page = client_for(users["ml"]).get(reverse("ml-runs")).content.decode()
    assert f'data-run="{run.pk}"' in page and "first" in page
    assert f'data-run="{run.pk}"' not in client_for(users["nonmember"]).get(reverse("ml-runs")).content.decode()


def test_the_form_shows_every_hyperparameter_with_its_default_and_help(users, export) -> None:
    page = client_for(users["ml"]).get(reverse("ml-run-new", args=["demo"])).content.decode()
    defaults = RewardConfig()
    assert re.search(rf'name="cfg_lr"[^>]*value="{defaults.lr}"', page)
    assert RewardConfig.field_help()["lr"] in page and f"Default: {defaults.lr}." in page
    assert re.search(rf'name="cfg_batch_size"[^>]*value="{defaults.batch_size}"', page)
    assert 'name="cfg_model"' in page and 'value="all-MiniLM-L6-v2"' in page  # the base model, packaged
    assert f'<option value="{export.pk}" selected>' in page
    assert 'name="data_path"' not in page  # a server path is for staff only
    assert 'name="data_path"' in client_for(users["staff"]).get(reverse("ml-run-new", args=["demo"])).content.decode()
    # Switching kind with htmx fetches the same page; the fieldset of that kind is what gets swapped in.
    swapped = client_for(users["ml"]).get(reverse("ml-run-new", args=["demo"]), {"kind": "reward"},
                                          HTTP_HX_REQUEST="true").content.decode()
    assert 'id="hyper"' in swapped and "Hyperparameters (reward)" in swapped


def test_launching_stores_the_validated_full_config_and_enqueues_after_commit(users, export,
                                                                              django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client_for(users["ml"]).post(reverse("ml-run-new", args=["demo"]), {
            "name": "small lr", "kind": "reward", "export": export.pk, "num_gpus": 1, "cfg_lr": "1e-4",
            "cfg_max_steps": "12", "cfg_use_margin": "false", "cfg_model": "all-MiniLM-L6-v2", "cfg_schedule": "cosine",
        })
    run = TrainingRun.objects.get(name="small lr")
    assert response.status_code == 302 and response["Location"] == reverse("ml-run", args=[run.pk])
    assert (run.status, run.kind, run.export, run.created_by.username) == (Status.QUEUED, "reward", export, "mia")
    assert run.config == RewardConfig(lr=1e-4, max_steps=12, use_margin=False, schedule="cosine").to_dict()
    assert len(callbacks) == 1


def test_bad_hyperparameters_are_shown_next_to_their_fields(users, export) -> None:
    response = client_for(users["ml"]).post(reverse("ml-run-new", args=["demo"]), {
        "kind": "reward", "export": export.pk, "num_gpus": 1, "cfg_lr": "-1", "cfg_batch_size": "many",
        "cfg_schedule": "linear"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "must be &gt; 0.0; got -1.0" in page and "expected an integer, got &#x27;many&#x27;" in page
    assert page.count('class="field invalid"') == 2
    no_data = client_for(users["ml"]).post(reverse("ml-run-new", args=["demo"]),
                                           {"kind": "reward", "num_gpus": 1, "cfg_schedule": "linear"})
    assert no_data.status_code == 400 and "give exactly one of export or data_path" in no_data.content.decode()
    assert TrainingRun.objects.count() == 0


def test_the_live_fragment_polls_while_active_and_draws_each_panel(users, run) -> None:
    client = client_for(users["ml"])
    live = client.get(reverse("ml-run-live", args=[run.pk])).content.decode()
    assert live.startswith('<div id="live"') and 'hx-trigger="every 1s"' in live
    assert '<progress id="progress" max="100" value="25"' in live and ">25%<" in live
    panels = dict(re.findall(r'data-panel="(\w+)" data-lines="(\d+)"', live))
    assert panels == {"loss": "1", "kl": "1", "accuracy": "1", "length": "1"}
    loss = re.search(r'<polyline points="([^"]+)"[^>]*data-name="train/loss"', live).group(1)
    assert len(loss.split()) == 10  # one vertex per logged step
    ys = [float(p.split(",")[1]) for p in loss.split()]
    assert ys == sorted(ys)  # a falling loss goes down the chart (SVG y grows downwards)
    assert "train/lr" not in live  # only the four diagnostic panels are drawn
    page = client.get(reverse("ml-run", args=[run.pk])).content.decode()
    assert 'id="cancel"' in page and "gpu-1:42" in page and "Download artifacts" not in page

    TrainingRun.objects.filter(pk=run.pk).update(status=Status.SUCCEEDED, progress=1.0, step=40,
                                                 summary={"eval": {"accuracy": 0.75}})
    done = client.get(reverse("ml-run-live", args=[run.pk])).content.decode()
    assert "hx-trigger" not in done and ">100%<" in done and 'id="artifacts"' in done and 'id="cancel"' not in done
    assert "0.7500" in done


def test_a_run_whose_worker_died_shows_as_failed(users, run, settings) -> None:
    settings.TRAINING_STALE_AFTER_S = 30
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    live = client_for(users["ml"]).get(reverse("ml-run-live", args=[run.pk])).content.decode()
    assert 'data-status="failed"' in live and "worker lost (no heartbeat since" in live
    assert "hx-trigger" not in live


def test_artifacts_download_as_a_zip_without_checkpoints_or_links(users, run) -> None:
    TrainingRun.objects.filter(pk=run.pk).update(status=Status.SUCCEEDED)
    client = client_for(users["ml"])
    response = client.get(reverse("ml-run-artifacts", args=[run.pk]))
    assert response["Content-Type"] == "application/zip"
    assert f'filename="run-{run.pk}-reward-artifacts.zip"' in response["Content-Disposition"]
    names = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist()
    assert names == ["config.json", "metrics.jsonl"]
    full = client.get(reverse("ml-run-artifacts", args=[run.pk]), {"checkpoints": "1"})
    names = zipfile.ZipFile(io.BytesIO(b"".join(full.streaming_content))).namelist()
    assert "checkpoints/step-0000010.pt" in names and "leak" not in names
    queued = TrainingRun.objects.create(project=run.project, kind="reward", export=run.export, created_by=run.created_by)
    assert client.get(reverse("ml-run-artifacts", args=[queued.pk])).status_code == 404


def test_compare_puts_two_runs_side_by_side(users, run, export) -> None:
    TrainingRun.objects.filter(pk=run.pk).update(status=Status.SUCCEEDED,
                                                 summary={"eval": {"accuracy": 0.6, "length_flip_gap": 0.2}})
    other = TrainingRun.objects.create(project=run.project, kind="reward", export=export, created_by=run.created_by,
                                       name="second", status=Status.SUCCEEDED, step=20, total_steps=20,
                                       config=RewardConfig(lr=1e-4).to_dict(),
                                       summary={"eval": {"accuracy": 0.7, "length_flip_gap": 0.05}})
    MetricPoint.objects.create(run=other, step=20, name="train/loss", value=0.2)
    page = client_for(users["ml"]).get(reverse("ml-run-compare"), {"a": run.pk, "b": other.pk}).content.decode()
    row = re.search(r"<th scope=\"row\">accuracy</th>(.*?)</tr>", page, re.S).group(1)
    assert re.findall(r">([-\d.]+)<", row) == ["0.6000", "0.7000", "0.1000"]
    assert re.search(r'<tr class="differs"><th scope="row">lr</th>', page)
    assert page.count('data-panel="loss"') == 2  # the same panel for A and for B
    assert client_for(users["ml"]).get(reverse("ml-run-compare"), {"a": "x"}).status_code == 400


def test_names_errors_and_metric_names_are_escaped(users, run) -> None:
    TrainingRun.objects.filter(pk=run.pk).update(name="<script>alert(1)</script>", status=Status.FAILED,
                                                 error="ValueError: <img src=x onerror=alert(2)>\n\nTraceback")
    MetricPoint.objects.create(run=run, step=3, name='train/<b onmouseover="x">loss', value=1.0)
    page = client_for(users["ml"]).get(reverse("ml-run", args=[run.pk])).content.decode()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert '<b onmouseover="x">' not in page


def test_every_registered_kind_has_a_form_built_from_its_config(users, export) -> None:
    from training.registry import KINDS

    client = client_for(users["ml"])
    for name, kind in KINDS.items():
        page = client.get(reverse("ml-run-new", args=["demo"]), {"kind": name}).content.decode()
        assert f"Hyperparameters ({name})" in page
        for field in kind.config.field_help():
            assert f'name="cfg_{field}"' in page, (name, field)


def test_count_metrics_stay_out_of_the_length_panel() -> None:
    from training.run_charts import panel_of

    assert panel_of("eval/n_equal_length") is None and panel_of("eval/pair_len_corr") == "length"
    assert panel_of("eval/acc_chosen_longer") == "accuracy" and panel_of("objective/kl_k3") == "kl"
