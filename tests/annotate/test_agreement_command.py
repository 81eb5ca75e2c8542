"""`manage.py agreement` and the cached report service on a small database project."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.utils import timezone

from annotate.models import Assignment, Comparison, Judgment
from annotate.services.reports import agreement_report, judgments_frame
from tests.factories import AssignmentFactory, ComparisonFactory, JudgmentFactory, UserFactory

pytestmark = pytest.mark.django_db


def judge(
    comparison, user, overall, *, axes=None, swapped=False, seconds=30.0, **kwargs
) -> Judgment:
    shown = timezone.now() - timedelta(seconds=seconds)
    assignment = AssignmentFactory(
        comparison=comparison, annotator=user, swapped=swapped, shown_at=shown
    )
    return JudgmentFactory(
        assignment=assignment,
        overall=overall,
        axes=axes or {},
        swapped=swapped,
        shown_at=shown,
        submitted_at=shown + timedelta(seconds=seconds),
        **kwargs,
    )


@pytest.fixture
def labelled(project):
    cache.clear()
    users = [UserFactory(username=n) for n in ("ann", "ben", "cat")]
    comparisons = [
        ComparisonFactory(project=project, response_a="short", response_b="a much longer answer")
        for _ in range(6)
    ]
    for i, c in enumerate(comparisons):
        for j, u in enumerate(users):
            overall = 2 if (i + j) % 3 else -1
            judge(
                c,
                u,
                overall,
                axes={"helpful": "B" if overall > 0 else "A", "harmless": "tie"},
                swapped=bool(j % 2),
                seconds=10 + 5 * i,
                active_ms=(1000 * (i + 1) if j == 0 else None),
            )
    return project, users, comparisons


def test_frame_is_loaded_in_three_queries_with_lengths_axes_and_times(
    labelled, django_assert_num_queries
) -> None:
    project, _, _ = labelled
    # Judgments, the project's comparisons, the annotators' names: a constant
    # number of queries whatever the project's size.
    with django_assert_num_queries(3):
        frame = judgments_frame(project=project)
    assert len(frame) == 18
    assert set(frame["len_a"]) == {5} and set(frame["len_b"]) == {len("a much longer answer")}
    assert set(frame["axis:helpful"]) == {"A", "B"} and set(frame["axis:harmless"]) == {"tie"}
    assert frame["axis:truthful"].isna().all()
    # Client active time wins over the wall clock when the browser sent it.
    ann = frame[frame["annotator"] == "ann"].sort_values("comparison")
    assert list(ann["seconds"]) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    ben = frame[frame["annotator"] == "ben"].sort_values("comparison")
    assert list(ben["seconds"]) == pytest.approx([10, 15, 20, 25, 30, 35])


def test_json_document_has_the_documented_shape(labelled) -> None:
    project, _, _ = labelled
    out = StringIO()
    call_command("agreement", project.slug, "--json", stdout=out)
    doc = json.loads(out.getvalue())
    assert {"project", "axes", "annotators", "summary", "cross_axis_conflict"} <= doc.keys()
    assert doc["project"] == project.slug and list(doc["axes"]) == ["overall", *project.rubric_axes]
    for name, axis in doc["axes"].items():
        for key in ("pairwise_agreement", "longer_chosen_rate", "left_chosen_rate"):
            assert {"value", "ci95"} <= axis[key].keys(), (name, key)
        for key in (
            "krippendorff_alpha_nominal",
            "fleiss_kappa",
            "cohen_kappa",
            "len_logit_coef",
            "len_only_auc",
            "longer_chosen_by_gap_quintile",
            "agreement_by_time_quartile",
        ):
            assert key in axis, (name, key)
    assert (
        "krippendorff_alpha_ordinal" in doc["axes"]["overall"]
        and "gold_accuracy" in doc["axes"]["overall"]
    )
    assert [a["username"] for a in doc["annotators"]] == ["ann", "ben", "cat"]
    for a in doc["annotators"]:
        assert {
            "judgments",
            "median_seconds",
            "over_budget_rate",
            "skip_rate",
            "loo_majority_agreement",
            "gold_accuracy",
            "longer_chosen_rate",
            "left_chosen_rate",
        } <= a.keys()
        assert a["judgments"] == 6
    # The same numbers as the service (the dashboard and the API read it too).
    assert doc["axes"] == json.loads(json.dumps(agreement_report(project=project)["axes"]))


def test_text_output_and_unknown_project(labelled) -> None:
    project, _, _ = labelled
    out = StringIO()
    call_command("agreement", project.slug, stdout=out)
    text = out.getvalue()
    assert "== overall" in text and "pairwise_agreement" in text and "lengths in characters" in text
    with pytest.raises(CommandError, match="no project"):
        call_command("agreement", "nope")


def test_report_is_cached_and_refreshed_when_judgments_arrive(
    labelled, django_assert_max_num_queries
) -> None:
    project, users, comparisons = labelled
    first = agreement_report(project=project)
    with django_assert_max_num_queries(3):  # fingerprint only: no reload, no recompute
        assert agreement_report(project=project) is not None
    assert agreement_report(project=project)["generated_at"] == first["generated_at"]
    judge(comparisons[0], UserFactory(username="dan"), 3)
    second = agreement_report(project=project)
    assert second["summary"]["n_judgments"] == first["summary"]["n_judgments"] + 1
    assert "dan" in {a["username"] for a in second["annotators"]}
    # A correction supersedes a judgment: same count of current ones, new numbers.
    old = Judgment.objects.filter(annotator=users[0], comparison=comparisons[1]).get()
    Judgment.objects.filter(pk=old.pk).update(superseded_at=timezone.now())
    JudgmentFactory(assignment=old.assignment, overall=-3, supersedes=old)
    third = agreement_report(project=project)
    assert third["summary"]["n_judgments"] == second["summary"]["n_judgments"]
    assert third["axes"]["overall"] != second["axes"]["overall"]
    # A skip changes the skip rate.
    AssignmentFactory(
        comparison=comparisons[2],
        annotator=UserFactory(username="eve"),
        status=Assignment.Status.SKIPPED,
    )
    fourth = agreement_report(project=project)
    assert fourth["summary"]["skip_rate"] == pytest.approx(1 / 20)  # 19 submitted + 1 skipped
    # A lead sets a gold answer (admin): no judgment arrives, the report still follows.
    Comparison.objects.filter(pk=comparisons[3].pk).update(gold=1)
    fifth = agreement_report(project=project)
    assert fifth["axes"]["overall"]["gold_accuracy"] != fourth["axes"]["overall"]["gold_accuracy"]
    assert fifth["axes"]["overall"]["gold_accuracy"]["n"] == 3  # the three judgments of that item
    # ... and moves it to another item: same count and value, another comparison.
    Comparison.objects.filter(pk=comparisons[3].pk).update(gold=None)
    Comparison.objects.filter(pk=comparisons[4].pk).update(gold=1)
    assert agreement_report(project=project)["generated_at"] != fifth["generated_at"]
