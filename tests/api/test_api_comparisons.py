"""Comparisons over the API: list and filter; bulk create through the import service."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotate.models import Comparison, Judgment
from tests.api.conftest import World
from tests.conftest import HH_RLHF

URL = "/api/v1/projects/demo/comparisons/"


def _items(n: int, start: int = 0) -> list[dict[str, str]]:
    return [
        {
            "id": f"api-{i}",
            "prompt": f"Prompt {i}?",
            "response_a": f"A{i}",
            "response_b": f"B{i}",
            "model_a": "alpha",
            "model_b": "beta",
        }
        for i in range(start, start + n)
    ]


def test_json_body_creates_then_reimport_creates_nothing(world: World) -> None:
    ml = world.client("ml")
    first = ml.post(URL, {"format": "jsonl", "items": _items(3)}, format="json")
    assert first.status_code == 201, first.data
    assert first.data["comparisons_created"] == 3 and first.data["project_slug"] == "demo"
    again = ml.post(URL, {"format": "jsonl", "items": _items(3)}, format="json")
    assert again.status_code == 200 and again.data["comparisons_created"] == 0
    assert again.data["message"] == "nothing new"
    assert (
        Comparison.objects.filter(project=world.project, external_id__startswith="api-").count()
        == 3
    )


def test_one_bad_item_writes_nothing_and_names_the_item_and_field(world: World) -> None:
    items = _items(5)
    del items[3]["response_b"]
    before = Comparison.objects.count()
    response = world.client("ml").post(URL, {"format": "jsonl", "items": items}, format="json")
    assert response.status_code == 400
    error = response.data["errors"][0]
    assert error["item"] == 3 and error["field"] == "response_b"
    assert Comparison.objects.count() == before


@pytest.mark.parametrize(
    "body,field",
    [
        ({"format": "jsonl"}, "items"),
        ({"format": "jsonl", "items": []}, "items"),
        ({"format": "jsonl", "items": "nope"}, "items"),
        ({"format": "yaml", "items": [{}]}, "format"),
        ({"format": "jsonl", "items": [1, 2]}, "items"),
        (
            {"format": "jsonl", "items": [{"prompt": "p"}], "with_judgments": "perhaps"},
            "with_judgments",
        ),
    ],
)
def test_malformed_bodies_are_400_with_field_errors(world: World, body: dict, field: str) -> None:
    response = world.client("ml").post(URL, body, format="json")
    assert response.status_code == 400
    assert field in response.data


def test_unparseable_json_is_400(world: World) -> None:
    response = world.client("ml").post(URL, b'{"items": [', content_type="application/json")
    assert response.status_code == 400


def test_file_upload_of_the_hh_sample_with_judgments(world: World) -> None:
    upload = SimpleUploadedFile(
        "hh.jsonl.gz", HH_RLHF.read_bytes(), content_type="application/gzip"
    )
    response = world.client("staff").post(
        URL, {"file": upload, "format": "hh-rlhf", "with_judgments": "true"}, format="multipart"
    )
    assert response.status_code == 201, response.data
    assert (
        response.data["comparisons_created"] == 1800 and response.data["judgments_created"] == 1800
    )
    assert response.data["annotators"] == ["hh-rlhf"]
    assert (
        Judgment.objects.filter(project=world.project, annotator__username="hh-rlhf").count()
        == 1800
    )


def test_broken_upload_writes_nothing_and_names_the_line(world: World) -> None:
    lines = [json.dumps(item) for item in _items(4)]
    lines[2] = lines[2][:-5]  # truncated JSON on line 3
    upload = SimpleUploadedFile("batch.jsonl", ("\n".join(lines) + "\n").encode())
    before = Comparison.objects.count()
    response = world.client("ml").post(URL, {"file": upload}, format="multipart")
    assert response.status_code == 400
    assert response.data["errors"][0]["line"] == 3 and "batch.jsonl" in response.data["detail"]
    assert Comparison.objects.count() == before


def test_missing_file_field_is_400(world: World) -> None:
    response = world.client("ml").post(URL, {"format": "jsonl"}, format="multipart")
    assert response.status_code == 400 and "file" in response.data


def test_oversized_uploads_get_413_and_write_nothing(world: World, settings) -> None:
    settings.MAX_UPLOAD_MB = 1
    body = "".join(json.dumps(item) + "\n" for item in _items(1)).encode() + b" " * (
        1024 * 1024 + 10
    )
    upload = SimpleUploadedFile("big.jsonl", body)
    before = Comparison.objects.count()
    response = world.client("ml").post(URL, {"file": upload}, format="multipart")
    assert response.status_code == 413
    items = [{**item, "prompt": item["prompt"] + "y" * 4000} for item in _items(300)]
    response = world.client("ml").post(URL, {"format": "jsonl", "items": items}, format="json")
    assert response.status_code == 413
    assert Comparison.objects.count() == before
    small = SimpleUploadedFile("ok.jsonl", json.dumps(_items(1)[0]).encode())
    assert world.client("ml").post(URL, {"file": small}, format="multipart").status_code == 201


def test_list_filters_and_counts(world: World) -> None:
    lead = world.client("lead")
    page = lead.get(URL).data
    assert page["count"] == 4 and [c["n_judgments"] for c in page["results"]] == [1, 2, 0, 0]
    assert "gold" in page["results"][0]
    judged = lead.get(URL, {"judged": "true"}).data
    assert [c["id"] for c in judged["results"]] == [c.pk for c in world.comparisons[:2]]
    assert lead.get(URL, {"judged": "false"}).data["count"] == 2
    ext = world.comparisons[3].external_id
    assert [c["external_id"] for c in lead.get(URL, {"external_id": ext}).data["results"]] == [ext]
    assert lead.get(URL, {"model": "m2"}).data["count"] == 4
    assert lead.get(URL, {"model": "zzz"}).data["count"] == 0
    assert (
        lead.get(URL, {"limit": 1, "offset": 3}).data["results"][0]["id"] == world.comparisons[3].pk
    )
    assert lead.get(URL, {"judged": "maybe"}).status_code == 400
    # Huge offsets and ids are harmless (no integer overflow in the database).
    assert lead.get(URL, {"offset": "9" * 30}).status_code == 200
    assert lead.get(f"{URL}{'9' * 30}/").status_code == 404
    assert lead.get(f"{URL}999999999/").status_code == 404
