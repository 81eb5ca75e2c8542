"""Preference export: record rules, split, `datasets` loading, determinism, CLI, ML pages."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import datasets
import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

from annotate.models import Comparison, Membership
from annotate.services.imports import comparisons_import
from tests.conftest import HH_RLHF, PASSWORD
from tests.factories import (
    AssignmentFactory,
    ComparisonFactory,
    JudgmentFactory,
    MembershipFactory,
    ProjectFactory,
    UserFactory,
)
from training import export_files, exports
from training.exports import ComparisonData, ExportParams, Vote, build_records, split_by_prompt
from training.models import DatasetExport
from training.services import export_create, export_dir

TRL_COLUMNS = {"prompt", "chosen", "rejected"}


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    # PBKDF2 costs ~1 s per user on this CPU; these tests are not about hashing.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _comparison(
    votes: list[tuple[str, int, dict[str, str] | None]], *, cid: int = 1, prompt: str = "p"
) -> ComparisonData:
    return ComparisonData(
        id=cid,
        external_id=f"x{cid}",
        prompt=prompt,
        messages=None,
        response_a="aaaa",
        response_b="bb",
        model_a="ma",
        model_b="mb",
        votes=tuple(
            Vote(judgment_id=i, annotator=name, overall=o, axes=axes or {})
            for i, (name, o, axes) in enumerate(votes)
        ),
    )


def _build(comparisons: list[ComparisonData], **params: object) -> tuple[list[dict], dict]:
    records, skipped = build_records(comparisons, ExportParams(**params), max_strength=3)
    return records, dict(skipped)


# --- record rules (pure) ------------------------------------------------------


def test_margin_follows_llama2_mapping_on_the_seven_point_scale() -> None:
    comps = [_comparison([("u", o, None)], cid=i) for i, o in enumerate([-3, -2, -1, 1, 2, 3])]
    records, _ = _build(comps)
    assert [r["margin"] for r in records] == [1.0, 2 / 3, 1 / 3, 1 / 3, 2 / 3, 1.0]
    # Sign decides the side: A wins for negative values, B for positive.
    assert [r["chosen"] for r in records] == ["aaaa"] * 3 + ["bb"] * 3
    assert records[3]["model_chosen"] == "mb" and records[3]["model_rejected"] == "ma"
    assert (records[3]["len_chosen"], records[3]["len_rejected"]) == (2, 4)


def test_majority_averages_the_margin_of_the_agreeing_judgments() -> None:
    comp = _comparison([("alice", -3, None), ("bob", -1, None), ("carl", 2, None)])
    (rec,), _ = _build([comp])
    assert rec["chosen"] == "aaaa" and rec["rejected"] == "bb"
    assert rec["margin"] == pytest.approx((1 + 1 / 3) / 2)
    assert rec["agreement"] == pytest.approx(2 / 3)
    assert rec["n_judgments"] == 3
    assert rec["annotators"] == ["alice", "bob"]


def test_majority_needs_a_strict_majority_and_drops_ties_by_default() -> None:
    split = _comparison([("a", -1, None), ("b", 1, None)], cid=1)
    three_way = _comparison([("a", -1, None), ("b", 1, None), ("c", 0, None)], cid=2)
    tie = _comparison([("a", 0, None), ("b", 0, None), ("c", -2, None)], cid=3)
    records, skipped = _build([split, three_way, tie])
    assert records == []
    assert skipped == {"no_majority": 2, "tie": 1}
    kept, _ = _build([tie], ties="keep")
    assert len(kept) == 1
    assert (
        kept[0]["margin"] == 0.0
        and kept[0]["chosen"] == "aaaa"
        and kept[0]["agreement"] == pytest.approx(2 / 3)
    )


def test_unanimous_keeps_only_full_agreement() -> None:
    agree = _comparison([("a", -1, None), ("b", -2, None)], cid=1)
    disagree = _comparison([("a", -1, None), ("b", -1, None), ("c", 1, None)], cid=2)
    records, skipped = _build([agree, disagree], policy="unanimous")
    assert [r["comparison_id"] for r in records] == [1]
    assert records[0]["agreement"] == 1.0 and records[0]["margin"] == pytest.approx(0.5)
    assert skipped == {"not_unanimous": 1}


def test_all_gives_one_record_per_judgment_sorted_by_annotator() -> None:
    comp = _comparison([("zed", 3, None), ("amy", -1, None), ("kim", 0, None)])
    records, skipped = _build([comp], policy="all")
    assert [r["annotators"] for r in records] == [["amy"], ["zed"]]
    assert [r["chosen"] for r in records] == ["aaaa", "bb"]
    assert all(r["n_judgments"] == 3 and r["agreement"] == pytest.approx(1 / 3) for r in records)
    assert skipped == {"tie_judgment": 1}
    with_ties, _ = _build([comp], policy="all", ties="keep")
    assert [r["annotators"] for r in with_ties] == [["amy"], ["kim"], ["zed"]]


def test_min_judgments_and_exclusions_count_only_remaining_judgments() -> None:
    comp = _comparison([("a", -1, None), ("b", -1, None), ("judge", 2, None)])
    assert _build([comp], min_judgments=4)[0] == []
    records, _ = _build([comp], min_judgments=2, exclude_annotators=("judge",))
    assert records[0]["n_judgments"] == 2 and records[0]["agreement"] == 1.0
    assert _build([comp], min_judgments=3, exclude_annotators=("judge",))[1] == {
        "too_few_judgments": 1
    }


def test_axis_export_uses_the_axis_choice_with_margin_one() -> None:
    comp = _comparison(
        [
            ("a", -3, {"harmless": "B"}),
            ("b", -3, {"harmless": "B"}),
            ("c", 1, {}),  # c gave no harmless choice
        ]
    )
    (rec,), _ = _build([comp], axis="harmless")
    assert rec["axis"] == "harmless" and rec["chosen"] == "bb" and rec["margin"] == 1.0
    assert rec["n_judgments"] == 2


def test_split_is_by_prompt_deterministic_and_stable_when_data_grows() -> None:
    comps = [_comparison([("u", -1, None)], cid=i, prompt=f"prompt {i % 700}") for i in range(2100)]
    records, _ = _build(comps)
    train, held = split_by_prompt(records, eval_fraction=0.1, seed=0)
    assert len(train) + len(held) == len(records)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}
    assert 0.06 < len({r["prompt"] for r in held}) / 700 < 0.14
    # A prompt's split does not depend on the other records.
    train_small, held_small = split_by_prompt(records[:300], eval_fraction=0.1, seed=0)
    held_prompts = {r["prompt"] for r in held}
    assert {r["prompt"] for r in held_small} == {r["prompt"] for r in records[:300]} & held_prompts
    other_train, other_held = split_by_prompt(records, eval_fraction=0.1, seed=1)
    assert {r["prompt"] for r in other_held} != held_prompts


@pytest.mark.parametrize(
    "field,value",
    [
        ("fmt", "csv"),
        ("policy", "vote"),
        ("ties", "maybe"),
        ("min_judgments", 0),
        ("eval_fraction", 1.0),
        ("axis", "speed"),
    ],
)
def test_params_are_validated_with_the_field_named(field: str, value: object) -> None:
    with pytest.raises(exports.ExportParamsError) as info:
        ExportParams(**{field: value}).validate(axes=["helpful"])
    assert field in info.value.errors


# --- files, determinism, service ------------------------------------------------


@pytest.fixture
def artifacts(settings, tmp_path: Path) -> Path:
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    return settings.ARTIFACTS_ROOT


@pytest.fixture
def labeled(db):
    """12 comparisons (one chat prompt), three annotators, a tie, a superseded judgment."""
    project = ProjectFactory(slug="labeled")
    people = [UserFactory(username=n) for n in ("ann", "ben", "cat")]
    for i in range(12):
        messages = [{"role": "user", "content": f"Question number {i}?"}] if i == 0 else None
        comp = ComparisonFactory(
            project=project,
            prompt=f"Question number {i}?",
            prompt_messages=messages,
            model_a="m1",
            model_b="m2",
        )
        for j, user in enumerate(people):
            overall = 0 if (i == 5 and j < 2) else (-(j + 1) if (i + j) % 3 else 2)
            JudgmentFactory(
                assignment=AssignmentFactory(comparison=comp, annotator=user),
                overall=overall,
                axes={"helpful": "A" if overall <= 0 else "B"},
            )
    # A superseded judgment must not count.
    old = JudgmentFactory(
        assignment=AssignmentFactory(
            comparison=Comparison.objects.filter(project=project).first(),
            annotator=UserFactory(username="dan"),
        ),
        overall=3,
    )
    old.superseded_at = old.submitted_at
    old.save()
    return project


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _load(export: DatasetExport) -> datasets.DatasetDict:
    root = export_dir(export)
    if export.format == "hf":
        return datasets.load_from_disk(str(root))
    builder = "json" if export.format == "jsonl" else "parquet"
    files = {
        "train": str(root / f"train.{export.format}"),
        "eval": str(root / f"eval.{export.format}"),
    }
    return datasets.load_dataset(
        builder, data_files=files, cache_dir=str(root.parent / ".hf-cache")
    )


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_export_loads_with_datasets_and_reexport_is_byte_identical(
    labeled, artifacts, fmt: str
) -> None:
    first = export_create(project=labeled, user=None, fmt=fmt, eval_fraction=0.3, seed=3)
    second = export_create(project=labeled, user=None, fmt=fmt, eval_fraction=0.3, seed=3)
    assert first.pk != second.pk and export_dir(first) != export_dir(second)
    a, b = _hashes(export_dir(first)), _hashes(export_dir(second))
    # Every file, manifest.json and (hf) state.json included, is identical.
    assert a == b
    assert a == first.files
    manifest = json.loads((export_dir(first) / "manifest.json").read_text())
    assert manifest["rows"] == {"train": first.n_train, "eval": first.n_eval}
    assert {name: f["sha256"] for name, f in manifest["files"].items()} == {
        k: v for k, v in first.files.items() if k != "manifest.json"
    }

    dd = _load(first)
    assert set(dd) == {"train", "eval"}
    assert TRL_COLUMNS <= set(dd["train"].column_names)
    assert set(dd["train"].column_names) == set(exports.COLUMNS)
    assert len(dd["train"]) == first.n_train and len(dd["eval"]) == first.n_eval
    # 12 comparisons, one is a 2-1 tie majority (dropped): 11 records.
    assert first.n_train + first.n_eval == 11
    assert not set(dd["train"]["prompt"]) & set(dd["eval"]["prompt"])
    rows = list(dd["train"]) + list(dd["eval"])
    chat = [r for r in rows if r["prompt_messages"]]
    assert len(chat) == 1 and chat[0]["prompt_messages"][0]["role"] == "user"
    assert all(r["n_judgments"] == 3 for r in rows)  # the superseded judgment is ignored


def test_export_create_refuses_bad_parameters_and_writes_nothing(labeled, artifacts) -> None:
    with pytest.raises(ValidationError) as info:
        export_create(project=labeled, user=None, axis="speed")
    assert "axis" in info.value.message_dict
    with pytest.raises(ValidationError) as info:
        export_create(project=labeled, user=None, exclude_annotators=["nobody"])
    assert "exclude_annotators" in info.value.message_dict
    assert DatasetExport.objects.count() == 0
    assert not (artifacts / "exports").exists() or not any((artifacts / "exports").iterdir())


def test_a_failing_write_leaves_no_row_and_no_files(labeled, artifacts, monkeypatch) -> None:
    real = export_files._write_split

    def fail_on_eval(out: Path, split: str, records, fmt: str) -> None:
        real(out, split, records, fmt)
        if split == "eval":
            raise OSError("disk full")

    monkeypatch.setattr(export_files, "_write_split", fail_on_eval)
    with pytest.raises(OSError):
        export_create(project=labeled, user=None, fmt="jsonl")
    assert DatasetExport.objects.count() == 0
    assert list((artifacts / "exports").iterdir()) == []


# --- the HH-RLHF sample through the import service and the command ---------------


@pytest.mark.django_db
def test_export_preferences_on_the_hh_rlhf_sample(tmp_path: Path, artifacts) -> None:
    result = comparisons_import(project_slug="hh", path=HH_RLHF, fmt="hh-rlhf", with_judgments=True)
    assert result.comparisons_created == result.judgments_created > 1000
    out = tmp_path / "hh-export"
    stdout = io.StringIO()
    call_command(
        "export_preferences",
        "hh",
        "--out",
        str(out),
        "--format",
        "jsonl",
        "--seed",
        "0",
        stdout=stdout,
    )
    assert "train" in stdout.getvalue()
    dd = datasets.load_dataset(
        "json",
        data_files={"train": str(out / "train.jsonl"), "eval": str(out / "eval.jsonl")},
        cache_dir=str(tmp_path / "cache"),
    )
    assert (
        len(dd["train"]) + len(dd["eval"])
        == Comparison.objects.filter(project__slug="hh").count()
        == 1800
    )
    assert not set(dd["train"]["prompt"]) & set(dd["eval"]["prompt"])
    assert 0.07 < len(dd["eval"]) / 1800 < 0.13
    assert TRL_COLUMNS <= set(dd["train"].column_names)
    # Every HH record has one judgment by the imported judge, so agreement is 1.
    assert set(dd["train"]["annotators"][0]) == {"hh-rlhf"} and set(dd["train"]["agreement"]) == {
        1.0
    }
    # The chosen reply of the original pair is the exported `chosen`.
    originals = {json.loads(line)["chosen"] for line in _gz_lines(HH_RLHF)}
    row = dd["train"][0]
    assert row["prompt"] + row["chosen"] in originals
    export = DatasetExport.objects.get()
    assert export.path == str(out.resolve()) and export.n_train == len(dd["train"])

    again = tmp_path / "hh-export-2"
    call_command("export_preferences", "hh", "--out", str(again), stdout=io.StringIO())
    assert _hashes(out) == _hashes(again)


def _gz_lines(path: Path) -> list[str]:
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [line for line in fh if line.strip()]


def test_command_reports_bad_input(labeled, artifacts, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no project"):
        call_command("export_preferences", "missing", "--out", str(tmp_path / "x"))
    with pytest.raises(CommandError, match="--axis"):
        call_command(
            "export_preferences", "labeled", "--out", str(tmp_path / "x"), "--axis", "speed"
        )
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(CommandError, match="not an empty directory"):
        call_command("export_preferences", "labeled", "--out", str(tmp_path / "full"))
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    call_command(
        "export_preferences",
        "labeled",
        "--out",
        str(tmp_path / "ok"),
        "--policy",
        "all",
        "--exclude-annotator",
        "ann",
        "ben",
        stdout=io.StringIO(),
    )
    rows = [
        json.loads(line)
        for f in ("train", "eval")
        for line in (tmp_path / "ok" / f"{f}.jsonl").open()
    ]
    assert rows and {r["annotators"][0] for r in rows} == {"cat"}


# --- ML pages -----------------------------------------------------------------------


def _login(client, project, role: str | None, username: str, *, staff: bool = False):
    user = UserFactory(username=username, is_staff=staff)
    if role:
        MembershipFactory(project=project, user=user, role=role)
    client.login(username=username, password=PASSWORD)
    return user


def test_ml_page_lists_creates_and_downloads(client, labeled, artifacts) -> None:
    _login(client, labeled, Membership.Role.ML, "mia")
    page = client.get(reverse("ml-project-exports", args=[labeled.slug]))
    assert page.status_code == 200 and b"No exports yet" in page.content
    bad = client.post(
        reverse("ml-project-exports", args=[labeled.slug]), {"format": "jsonl", "axis": "nope"}
    )
    assert bad.status_code == 400 and DatasetExport.objects.count() == 0
    form = {
        "format": "parquet",
        "axis": "overall",
        "policy": "majority",
        "min_judgments": 1,
        "ties": "drop",
        "eval_fraction": 0.2,
        "seed": 0,
        "exclude_annotators": ["cat"],
    }
    created = client.post(reverse("ml-project-exports", args=[labeled.slug]), form, follow=True)
    assert created.status_code == 200
    export = DatasetExport.objects.get()
    assert export.created_by.username == "mia" and export.params["exclude_annotators"] == ["cat"]
    assert reverse("ml-export-download", args=[export.pk]).encode() in created.content
    zipped = client.get(reverse("ml-export-download", args=[export.pk]))
    assert zipped.status_code == 200 and zipped["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(b"".join(zipped.streaming_content))).namelist()
    assert sorted(names) == ["eval.parquet", "manifest.json", "train.parquet"]
    one = client.get(reverse("ml-export-download", args=[export.pk]), {"file": "manifest.json"})
    assert json.loads(b"".join(one.streaming_content))["params"]["fmt"] == "parquet"
    assert (
        client.get(
            reverse("ml-export-download", args=[export.pk]), {"file": "../../etc/passwd"}
        ).status_code
        == 404
    )
    home = client.get(reverse("ml-home"))
    assert home.status_code == 200 and labeled.slug.encode() in home.content


@pytest.mark.parametrize(
    "role,staff,expected",
    [
        (Membership.Role.LEAD, False, 403),
        (Membership.Role.ANNOTATOR, False, 403),
        (None, False, 404),
        (None, True, 200),
    ],
)
def test_ml_pages_are_for_ml_members_and_staff(
    client, labeled, artifacts, role, staff, expected
) -> None:
    export = export_create(project=labeled, user=None)
    _login(client, labeled, role, "someone", staff=staff)
    assert client.get(reverse("ml-project-exports", args=[labeled.slug])).status_code == expected
    assert client.get(reverse("ml-export-download", args=[export.pk])).status_code == expected
    denied_post = client.post(
        reverse("ml-project-exports", args=[labeled.slug]), {"format": "jsonl"}
    )
    assert denied_post.status_code == (400 if expected == 200 else expected)


def test_ml_pages_send_anonymous_users_to_login(client, labeled) -> None:
    response = client.get(reverse("ml-project-exports", args=[labeled.slug]))
    assert response.status_code == 302 and reverse("login") in response["Location"]
