"""The import service against the database: real files, atomicity, idempotence."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest
from django.db.models import Count

from annotate.importers import split_hh_pair
from annotate.models import Assignment, Comparison, Judgment, Membership, Project, User
from annotate.services.imports import ImportValidationError, comparisons_import
from tests.conftest import ALPACA_DIR, HH_RLHF, REPO
from tests.factories import ComparisonFactory, UserFactory

pytestmark = pytest.mark.django_db
MIXTRAL = sorted(ALPACA_DIR.glob("Mixtral-8x7B-Instruct-v0.1.*.annotations.json.gz"))


def hh_lines(n: int | None = None) -> list[str]:
    lines = [line for line in gzip.open(HH_RLHF, "rt", encoding="utf-8").read().split("\n") if line]
    return lines[:n] if n else lines


@pytest.fixture
def hh512(tmp_path: Path) -> Path:
    path = tmp_path / "hh512.jsonl"
    path.write_text("\n".join(hh_lines(512)) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def hh512_broken(tmp_path: Path) -> Path:
    lines = hh_lines(512)
    lines[255] = lines[255][:300]  # line 256: truncated JSON, in the middle of the file
    path = tmp_path / "hh512-broken.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def counts() -> tuple[int, int, int, int, int]:
    return (
        Project.objects.count(),
        Comparison.objects.count(),
        Assignment.objects.count(),
        Judgment.objects.count(),
        User.objects.count(),
    )


def test_hh_512_imports_512_then_0_and_a_broken_copy_imports_nothing(
    hh512: Path, hh512_broken: Path
) -> None:
    first = comparisons_import(project_slug="demo-hh", path=hh512, fmt="hh-rlhf")
    assert first.project_created and (first.comparisons_created, first.comparisons_existing) == (
        512,
        0,
    )
    assert Comparison.objects.filter(project__slug="demo-hh").count() == 512

    again = comparisons_import(project_slug="demo-hh", path=hh512, fmt="hh-rlhf")
    assert not again.project_created and (
        again.comparisons_created,
        again.comparisons_existing,
    ) == (0, 512)
    assert again.nothing_new

    before = counts()
    with pytest.raises(ImportValidationError) as info:
        comparisons_import(project_slug="demo-hh", path=hh512_broken, fmt="hh-rlhf")
    assert info.value.line == 256 and str(info.value).startswith(f"{hh512_broken}, line 256")
    assert counts() == before
    # Into a fresh project: not even the project is created.
    with pytest.raises(ImportValidationError):
        comparisons_import(project_slug="fresh", path=hh512_broken, with_judgments=True)
    assert counts() == before and not Project.objects.filter(slug="fresh").exists()


def test_full_hh_sample_imports_every_pair_with_judgments_fast(
    django_assert_max_num_queries,
) -> None:
    lines = hh_lines()
    # Bulk writes: no query per row. (SQLite caps a statement at 999 bound
    # parameters, so Django splits each bulk insert into ~70-row batches.)
    with django_assert_max_num_queries(len(lines) // 10):
        result = comparisons_import(project_slug="hh", path=HH_RLHF, with_judgments=True)
    assert (result.format, result.records, result.comparisons_created) == (
        "hh-rlhf",
        len(lines),
        len(lines),
    )
    assert (result.judgments_created, result.annotators_created, result.annotators) == (
        len(lines),
        1,
        ("hh-rlhf",),
    )

    judge = User.objects.get(username="hh-rlhf")
    assert judge.is_ai and not judge.has_usable_password()
    assert Membership.objects.filter(
        user=judge, project__slug="hh", role=Membership.Role.ANNOTATOR
    ).exists()
    assert set(Comparison.objects.values_list("slots_taken", flat=True)) == {1}
    assignment = Assignment.objects.first()
    assert (assignment.status, assignment.swapped, assignment.lease_expires_at) == (
        "submitted",
        False,
        None,
    )
    assert Judgment.objects.filter(source="import", overall__in=(-2, 2)).count() == len(lines)

    # Every judgment prefers exactly the reply the data marks as chosen.
    by_prompt_pair = {}
    for line in lines:
        pair = json.loads(line)
        prompt, chosen, rejected = split_hh_pair(pair["chosen"], pair["rejected"])
        by_prompt_pair[(prompt, frozenset((chosen, rejected)))] = chosen
    for j in Judgment.objects.select_related("comparison"):
        c = j.comparison
        preferred = c.response_a if j.overall < 0 else c.response_b
        assert by_prompt_pair[(c.prompt, frozenset((c.response_a, c.response_b)))] == preferred
    a_wins = Judgment.objects.filter(overall__lt=0).count()
    assert 0.4 < a_wins / len(lines) < 0.6  # shuffled: chosen is not always A

    again = comparisons_import(project_slug="hh", path=HH_RLHF, with_judgments=True)
    assert (again.comparisons_created, again.judgments_created, again.judgments_existing) == (
        0,
        0,
        len(lines),
    )
    assert Judgment.objects.count() == len(lines)


def test_two_mixtral_judges_give_805_comparisons_two_ai_judges_one_judgment_per_verdict() -> None:
    assert len(MIXTRAL) == 2
    non_null = {}
    for path in MIXTRAL:
        records = json.loads(gzip.decompress(path.read_bytes()))
        non_null[records[0]["annotator"]] = sum(r["preference"] is not None for r in records)
        comparisons_import(project_slug="ae", path=path, with_judgments=True)
    assert Comparison.objects.filter(project__slug="ae").count() == 805
    judges = User.objects.filter(kind=User.Kind.AI)
    assert sorted(judges.values_list("username", flat=True)) == sorted(non_null)
    per_judge = dict(Judgment.objects.values_list("annotator__username").annotate(n=Count("id")))
    assert per_judge == non_null
    # The second file added judgments to the SAME comparisons.
    assert set(Comparison.objects.annotate(n=Count("judgments")).values_list("n", flat=True)) == {2}
    assert set(Comparison.objects.values_list("slots_taken", flat=True)) == {2}
    assert (
        Comparison.objects.filter(
            model_a="gpt4_1106_preview", model_b__startswith="Mixtral"
        ).count()
        == 805
    )

    # Spot-check the sign mapping against the first file, record by record.
    records = json.loads(gzip.decompress(MIXTRAL[0].read_bytes()))
    judge = records[0]["annotator"]
    expected = {1.0: -2, 2.0: 2, 1.5: 0}
    for r in records[:50]:
        c = Comparison.objects.get(
            project__slug="ae", prompt=r["instruction"], response_a=r["output_1"]
        )
        assert c.judgments.get(annotator__username=judge).overall == expected[r["preference"]]

    for path in MIXTRAL:  # re-import: nothing new
        result = comparisons_import(project_slug="ae", path=path, with_judgments=True)
        assert (result.comparisons_created, result.judgments_created) == (0, 0)


def test_demo_fixtures_import() -> None:
    hh = comparisons_import(
        project_slug="demo-hh",
        path=REPO / "fixtures" / "hh-rlhf-demo.jsonl.gz",
        with_judgments=True,
    )
    assert (hh.comparisons_created, hh.judgments_created) == (120, 120)
    demo = sorted((REPO / "fixtures" / "alpaca-eval-demo").glob("*.annotations.json.gz"))
    results = [
        comparisons_import(project_slug="demo-ae", path=p, with_judgments=True) for p in demo
    ]
    assert [r.comparisons_created for r in results] == [60, 0] and sum(
        r.judgments_created for r in results
    ) == 120
    assert (REPO / "fixtures" / "LICENSE.hh-rlhf").exists()
    assert (REPO / "fixtures" / "alpaca-eval-demo" / "LICENSE.alpaca-eval").exists()


def test_upload_stream_with_filename_and_created_by_membership() -> None:
    mia = UserFactory(username="mia")
    data = b'id,prompt,response_a,response_b,gold,metadata\nq1,p,a,b,A,"{""src"": ""x""}"\n'
    result = comparisons_import(
        project_slug="api-proj", stream=io.BytesIO(data), filename="batch.csv", created_by=mia
    )
    assert result.project_created and result.format == "csv" and result.file == "batch.csv"
    c = Comparison.objects.get(project__slug="api-proj", external_id="q1")
    assert (c.gold, c.metadata) == (-1, {"src": "x"})
    assert Membership.objects.filter(user=mia, project__slug="api-proj", role="ml").exists()


def test_judgments_on_existing_comparisons_bump_slots_and_follow_stored_orientation(
    project,
) -> None:
    stored = ComparisonFactory(
        project=project,
        prompt="P",
        response_a="first",
        response_b="second",
        external_id="c1",
        slots_taken=1,
    )
    # Same content, listed the other way round, no id: matched on content.
    rows = [
        {
            "prompt": "P",
            "response_a": "second",
            "response_b": "first",
            "annotator": "judge-x",
            "preference": -3,
        },
        {
            "prompt": "P",
            "response_a": "second",
            "response_b": "first",
            "annotator": "judge-y",
            "preference": "tie",
        },
    ]
    data = ("\n".join(json.dumps(r) for r in rows)).encode()
    result = comparisons_import(
        project_slug=project.slug, stream=io.BytesIO(data), filename="j.jsonl", with_judgments=True
    )
    assert (result.comparisons_created, result.comparisons_existing, result.judgments_created) == (
        0,
        1,
        2,
    )
    stored.refresh_from_db()
    assert stored.slots_taken == 3
    assert dict(stored.judgments.values_list("annotator__username", "overall")) == {
        "judge-x": 3,
        "judge-y": 0,
    }


def test_strength_beyond_the_project_scale_rolls_everything_back() -> None:
    Project.objects.create(slug="three", name="three", scale=["A better", "Tie", "B better"])
    rows = [
        {
            "prompt": f"p{i}",
            "response_a": "a",
            "response_b": "b",
            "annotator": "j",
            "preference": "B",
        }
        for i in range(3)
    ] + [{"prompt": "p9", "response_a": "a", "response_b": "b", "annotator": "j", "preference": 2}]
    data = ("\n".join(json.dumps(r) for r in rows)).encode()
    before = counts()
    with pytest.raises(ImportValidationError) as info:
        comparisons_import(
            project_slug="three", stream=io.BytesIO(data), filename="s.jsonl", with_judgments=True
        )
    assert (info.value.line, info.value.field) == (
        4,
        "preference",
    ) and "at most 1" in info.value.message
    assert counts() == before
    # Without the bad row, unknown strengths are clamped to the 3-point scale.
    ok = ("\n".join(json.dumps(r) for r in rows[:3])).encode()
    comparisons_import(
        project_slug="three", stream=io.BytesIO(ok), filename="s.jsonl", with_judgments=True
    )
    assert set(Judgment.objects.values_list("overall", flat=True)) == {1}


def test_a_judge_named_like_a_human_is_refused(project, alice) -> None:
    data = json.dumps(
        {
            "prompt": "p",
            "response_a": "a",
            "response_b": "b",
            "annotator": "alice",
            "preference": "A",
        }
    ).encode()
    before = counts()
    with pytest.raises(ImportValidationError, match="human account") as info:
        comparisons_import(
            project_slug="new-one", stream=io.BytesIO(data), filename="h.jsonl", with_judgments=True
        )
    assert (info.value.line, info.value.field) == (1, "annotator")
    assert counts() == before


def test_an_existing_id_with_other_content_is_refused(project) -> None:
    ComparisonFactory(project=project, external_id="q1", prompt="old")
    data = json.dumps({"id": "q1", "prompt": "new", "response_a": "a", "response_b": "b"}).encode()
    with pytest.raises(
        ImportValidationError, match="already exists in project demo with other content"
    ):
        comparisons_import(project_slug="demo", stream=io.BytesIO(data), filename="q.jsonl")


def test_missing_file_and_bad_slug_are_validation_errors(tmp_path: Path, hh512: Path) -> None:
    with pytest.raises(ImportValidationError, match="cannot read"):
        comparisons_import(project_slug="x", path=tmp_path / "nope.jsonl")
    with pytest.raises(ImportValidationError) as info:
        comparisons_import(project_slug="not a slug!", path=hh512)
    assert info.value.field == "project" and not Comparison.objects.exists()
