"""Exports and training runs over the API."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from types import SimpleNamespace

import pytest

from tests.api.conftest import World
from training import services
from training.models import DatasetExport, TrainingRun


def _body(response) -> bytes:
    return b"".join(response.streaming_content)


def test_export_create_list_detail_download(world: World) -> None:
    ml = world.client("ml")
    created = ml.post(
        "/api/v1/projects/demo/exports/",
        {"format": "hf", "policy": "all", "ties": "keep", "eval_fraction": 0.0},
        format="json",
    )
    assert created.status_code == 201, created.data
    export = DatasetExport.objects.get(pk=created.data["id"])
    assert created.data["created_by"] == "mia" and created.data["params"]["policy"] == "all"
    # 3 judgments: bob's two and alice's one, ties kept -> 3 records, all in train.
    assert (created.data["n_train"], created.data["n_eval"]) == (3, 0)
    assert "dataset_dict.json" in created.data["files"]
    listed = ml.get("/api/v1/projects/demo/exports/").data
    assert [e["id"] for e in listed["results"]] == [export.pk, world.export.pk]
    assert ml.get(f"/api/v1/exports/{export.pk}/").data["files"] == export.files

    zipped = ml.get(created.data["download_url"])
    assert zipped.status_code == 200 and zipped["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(_body(zipped))).namelist()
    assert sorted(names) == sorted(export.files)
    one = ml.get(created.data["download_url"], {"file": "manifest.json"})
    assert json.loads(_body(one))["params"]["ties"] == "keep"
    for bad in ("../manifest.json", "/etc/passwd", "nope.jsonl"):
        assert ml.get(created.data["download_url"], {"file": bad}).status_code == 404


@pytest.mark.parametrize(
    "body,field",
    [
        ({"format": "xml"}, "format"),
        ({"axis": "speed"}, "axis"),
        ({"policy": "vote"}, "policy"),
        ({"min_judgments": 0}, "min_judgments"),
        ({"eval_fraction": 1.5}, "eval_fraction"),
        ({"exclude_annotators": ["nobody"]}, "exclude_annotators"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_export_bad_input_is_400_and_writes_nothing(
    world: World, body: dict, field: str, artifacts
) -> None:
    before = sorted(p.name for p in (artifacts / "exports").iterdir())
    response = world.client("ml").post("/api/v1/projects/demo/exports/", body, format="json")
    assert response.status_code == 400 and field in response.data, response.data
    assert DatasetExport.objects.count() == 1
    assert sorted(p.name for p in (artifacts / "exports").iterdir()) == before


def test_run_create_queues_and_enqueues_after_commit(
    world: World, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = world.client("ml").post(
            "/api/v1/runs/",
            {"kind": "dpo", "export": world.export.pk, "config": {"beta": 0.1}, "name": "try"},
            format="json",
        )
    assert response.status_code == 201, response.data
    run = TrainingRun.objects.get(pk=response.data["id"])
    assert (run.status, run.kind, run.project, run.export, run.config["beta"]) == (
        "queued",
        "dpo",
        world.project,
        world.export,
        0.1,
    )
    # The stored config is the validated one, every default written out.
    assert run.config["variant"] == "sigmoid" and "lr" in run.config
    assert len(callbacks) == 1  # the enqueue, which must wait for the commit


def test_enqueue_without_a_tasks_module_leaves_the_run_queued(world: World, monkeypatch) -> None:
    # None in sys.modules makes the lazy import fail as if the module were absent.
    monkeypatch.setitem(sys.modules, "training.tasks", None)
    assert services.run_enqueue(run_id=world.run.pk) is None
    world.run.refresh_from_db()
    assert world.run.status == "queued" and world.run.celery_task_id == ""


def test_enqueue_sends_the_run_id_to_the_task_and_records_its_id(world: World, monkeypatch) -> None:
    sent: list[int] = []

    class FakeTask:
        @staticmethod
        def delay(run_id: int) -> SimpleNamespace:
            sent.append(run_id)
            return SimpleNamespace(id="task-123")

    monkeypatch.setitem(sys.modules, "training.tasks", SimpleNamespace(run_training=FakeTask))
    assert services.run_enqueue(run_id=world.run.pk) == "task-123"
    world.run.refresh_from_db()
    assert sent == [world.run.pk] and world.run.celery_task_id == "task-123"


@pytest.mark.parametrize(
    "body,field,status",
    [
        ({"kind": "sft", "export": 1}, "kind", 400),
        ({"kind": "reward"}, "project", 400),
        ({"kind": "reward", "project": "demo"}, "export", 400),
        ({"kind": "reward", "project": "demo", "data_path": "/etc/passwd"}, "data_path", 400),
        ({"kind": "reward", "project": "demo", "export": 1, "config": [1]}, "config", 400),
    ],
)
def test_run_bad_input(world: World, body: dict, field: str, status: int) -> None:
    if body.get("export") == 1:
        body = {**body, "export": world.export.pk}
    response = world.client("ml").post("/api/v1/runs/", body, format="json")
    assert response.status_code == status and field in response.data, response.data
    assert TrainingRun.objects.count() == 1


def test_staff_may_train_on_a_server_path_without_a_project(world: World) -> None:
    response = world.client("staff").post(
        "/api/v1/runs/", {"kind": "reward", "data_path": "/data/pairs.jsonl"}, format="json"
    )
    assert response.status_code == 201 and response.data["project"] is None
    # ... and such a run is invisible to ML members of projects.
    assert world.client("ml").get(f"/api/v1/runs/{response.data['id']}/").status_code == 404


def test_an_export_of_another_project_cannot_be_used(world: World) -> None:
    from training.services import export_create

    other_export = export_create(project=world.other, user=None)
    response = world.client("ml").post(
        "/api/v1/runs/", {"kind": "reward", "export": other_export.pk}, format="json"
    )
    assert response.status_code == 404
    response = world.client("staff").post(
        "/api/v1/runs/",
        {"kind": "reward", "project": "demo", "export": other_export.pk},
        format="json",
    )
    assert response.status_code == 400 and "export" in response.data


def test_list_filters_metrics_and_cancel(world: World) -> None:
    ml = world.client("ml")
    assert ml.get("/api/v1/runs/", {"status": "queued"}).data["count"] == 1
    assert ml.get("/api/v1/runs/", {"status": "running"}).data["count"] == 0
    assert ml.get("/api/v1/runs/", {"status": "weird"}).status_code == 400
    metrics = ml.get(f"/api/v1/runs/{world.run.pk}/metrics/").data
    assert metrics["series"]["loss"] == [[0, 1.0], [1, 0.5], [2, 1 / 3]]
    polled = ml.get(f"/api/v1/runs/{world.run.pk}/metrics/", {"name": "loss", "after_step": 0}).data
    assert list(polled["series"]) == ["loss"] and [p[0] for p in polled["series"]["loss"]] == [1, 2]
    cancelled = ml.post(f"/api/v1/runs/{world.run.pk}/cancel/")
    assert cancelled.data["status"] == "cancelled" and cancelled.data["cancel_requested"] is True
    assert cancelled.data["finished_at"] is not None


def test_cancel_of_a_running_run_only_raises_the_flag(world: World) -> None:
    TrainingRun.objects.filter(pk=world.run.pk).update(status="running")
    data = world.client("ml").post(f"/api/v1/runs/{world.run.pk}/cancel/").data
    assert data["status"] == "running" and data["cancel_requested"] is True
    TrainingRun.objects.filter(pk=world.run.pk).update(status="succeeded", cancel_requested=False)
    data = world.client("ml").post(f"/api/v1/runs/{world.run.pk}/cancel/").data
    assert data["status"] == "succeeded" and data["cancel_requested"] is False


def test_run_create_with_a_bad_config_is_400_naming_the_field(world: World) -> None:
    before = TrainingRun.objects.count()
    response = world.client("ml").post(
        "/api/v1/runs/",
        {"kind": "dpo", "export": world.export.pk, "config": {"beta": -1, "learning_rate": 0.1}},
        format="json",
    )
    assert response.status_code == 400
    errors = response.data["config"]
    assert set(errors) == {"beta", "learning_rate"} and errors["learning_rate"] == ["unknown field"]
    assert TrainingRun.objects.count() == before


def test_run_artifacts_download_zips_the_run_folder(world: World, artifacts) -> None:
    folder = artifacts / "runs" / str(world.run.pk)
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "eval_report.json").write_text('{"accuracy": 0.7}')
    (folder / "checkpoints" / "step-5.pt").write_bytes(b"x")
    TrainingRun.objects.filter(pk=world.run.pk).update(artifacts_dir=f"runs/{world.run.pk}")
    response = world.client("ml").get(f"/api/v1/runs/{world.run.pk}/artifacts/")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(_body(response))).namelist()
    assert "eval_report.json" in names and not any(n.startswith("checkpoints") for n in names)
