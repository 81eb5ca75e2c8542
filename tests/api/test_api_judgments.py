"""Judgments list with filters, the agreement report, authentication schemes and the schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from annotate.models import Judgment
from tests.api.conftest import World
from tests.conftest import PASSWORD

URL = "/api/v1/projects/demo/judgments/"


def _annotators(response) -> list[str]:
    return [j["annotator"] for j in response.data["results"]]


def test_filters_by_annotator_time_axis_and_side(world: World) -> None:
    lead = world.client("lead")
    assert _annotators(lead.get(URL)) == ["bob", "bob", "alice"]
    assert _annotators(lead.get(URL, {"annotator": "alice"})) == ["alice"]
    old = Judgment.objects.filter(annotator__username="bob").order_by("id").first()
    Judgment.objects.filter(pk=old.pk).update(
        submitted_at=timezone.now() - timezone.timedelta(days=3)
    )
    since = (timezone.now() - timezone.timedelta(days=1)).isoformat()
    assert lead.get(URL, {"submitted_after": since}).data["count"] == 2
    assert [j["id"] for j in lead.get(URL, {"submitted_before": since}).data["results"]] == [old.pk]
    # overall: bob +2 (B), bob -3 (A), alice -1 (A)
    assert lead.get(URL, {"axis": "overall", "side": "A"}).data["count"] == 2
    assert lead.get(URL, {"side": "B"}).data["count"] == 1
    # truthful: B, tie, A
    assert [
        j["axes"]["truthful"]
        for j in lead.get(URL, {"axis": "truthful", "side": "tie"}).data["results"]
    ] == ["tie"]
    assert lead.get(URL, {"axis": "harmless"}).data["count"] == 3
    assert lead.get(URL, {"comparison": world.comparisons[1].pk}).data["count"] == 2


@pytest.mark.parametrize(
    "params,field",
    [
        ({"axis": "speed"}, "axis"),
        ({"side": "left"}, "side"),
        ({"submitted_after": "yesterday"}, "submitted_after"),
        ({"comparison": "x"}, "comparison"),
    ],
)
def test_bad_filters_are_400(world: World, params: dict, field: str) -> None:
    response = world.client("lead").get(URL, params)
    assert response.status_code == 400 and field in response.data


def test_superseded_judgments_are_hidden_unless_asked(world: World) -> None:
    j = Judgment.objects.filter(annotator__username="alice").get()
    Judgment.objects.filter(pk=j.pk).update(superseded_at=timezone.now())
    lead = world.client("lead")
    assert lead.get(URL).data["count"] == 2
    assert lead.get(URL, {"include_superseded": "true"}).data["count"] == 3


def test_agreement_report(world: World) -> None:
    report = world.client("lead").get("/api/v1/projects/demo/agreement/").data
    assert report["project"] == "demo"
    assert report["summary"]["n_judgments"] == 3
    # comparison 1 has bob A and alice A: one agreeing pair on overall.
    assert report["axes"]["overall"]["pairwise_agreement"]["value"] == 1.0
    assert set(report["axes"]) == {"overall", "helpful", "truthful", "harmless"}


def test_session_auth_needs_csrf_and_token_does_not(world: World) -> None:
    session = APIClient(enforce_csrf_checks=True)
    assert session.login(username="mia", password=PASSWORD)
    assert session.get("/api/v1/projects/demo/").status_code == 200
    body = {"format": "jsonl", "seed": 2}
    assert session.post("/api/v1/projects/demo/exports/", body, format="json").status_code == 403
    session.get("/login/")  # sets the CSRF cookie
    token = session.cookies["csrftoken"].value
    response = session.post(
        "/api/v1/projects/demo/exports/", body, format="json", HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 201
    assert (
        world.client("ml").post("/api/v1/projects/demo/exports/", body, format="json").status_code
        == 201
    )
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert bad.get("/api/v1/projects/").status_code == 401


def test_token_endpoint_and_ai_annotators_cannot_get_in(world: World) -> None:
    from annotate.models import User

    anonymous = APIClient()
    got = anonymous.post("/api/v1/auth/token/", {"username": "lee", "password": PASSWORD})
    assert got.status_code == 200
    lee = APIClient()
    lee.credentials(HTTP_AUTHORIZATION=f"Token {got.data['token']}")
    assert lee.get("/api/v1/projects/demo/").data["roles"] == ["lead"]
    wrong = anonymous.post("/api/v1/auth/token/", {"username": "lee", "password": "nope"})
    assert wrong.status_code == 400 and "non_field_errors" in wrong.data
    judge = User.objects.create(username="judge", kind=User.Kind.AI)
    judge.set_password(PASSWORD)
    judge.save()
    assert not APIClient().login(username="judge", password=PASSWORD)
    denied = anonymous.post("/api/v1/auth/token/", {"username": "judge", "password": PASSWORD})
    assert denied.status_code == 400


def test_openapi_schema_is_valid_without_warnings(tmp_path: Path) -> None:
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    schema = yaml.safe_load(out.read_text())
    paths = schema["paths"]
    assert "/api/v1/projects/{slug}/comparisons/" in paths
    assert set(paths["/api/v1/projects/{slug}/comparisons/"]["post"]["requestBody"]["content"]) == {
        "application/json",
        "multipart/form-data",
    }
    assert "/api/v1/runs/{id}/cancel/" in paths
    assert {"tokenAuth", "cookieAuth"} <= set(schema["components"]["securitySchemes"])
