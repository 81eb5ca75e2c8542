"""`judgments_frame`: the fast reader behind the lead report gives the same values as before.

The reader computes times, sides and lengths without per-row Python (see
`annotate.services.report_frames`); these cases pin down what it must still
agree with: pandas' timedelta arithmetic to the microsecond, the JSON choices
as the old per-key extraction read them, and lengths that follow the texts.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from annotate.models import Comparison, Judgment
from annotate.services.report_frames import judgments_frame
from tests.factories import (
    AssignmentFactory,
    ComparisonFactory,
    JudgmentFactory,
    ProjectFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

BASE = datetime(2026, 11, 27, 9, 30, 0, tzinfo=UTC)


def judge(comparison, user, **fields) -> Judgment:
    assignment = AssignmentFactory(comparison=comparison, annotator=user)
    return JudgmentFactory(assignment=assignment, **fields)


def by_user(frame: pd.DataFrame) -> dict[str, pd.Series]:
    return {str(row["annotator"]): row for _, row in frame.iterrows()}


def test_wall_clock_seconds_match_pandas_to_the_microsecond(project) -> None:
    c = ComparisonFactory(project=project)
    cases = {
        # name: (shown_at, submitted_at, active_ms, source)
        "frac": (
            BASE.replace(microsecond=123456),
            BASE + timedelta(seconds=12.654321),
            None,
            "web",
        ),
        # A whole-second time is stored without a fraction on SQLite.
        "whole": (BASE, BASE + timedelta(seconds=7, microseconds=999999), None, "web"),
        "day": (BASE, BASE + timedelta(days=1, seconds=3, microseconds=1), None, "api"),
        "active": (BASE, BASE + timedelta(seconds=90), 41234, "web"),
        "imported": (BASE, BASE + timedelta(seconds=5), None, "import"),
        "no_shown": (None, BASE, None, "web"),
    }
    for name, (shown, submitted, active, source) in cases.items():
        judge(
            c,
            UserFactory(username=name),
            shown_at=shown,
            submitted_at=submitted,
            active_ms=active,
            source=source,
        )
    rows = by_user(judgments_frame(project=project))
    for name in ("frac", "whole", "day"):
        shown, submitted, _, _ = cases[name]
        # Exactly what the previous reader got from pandas datetimes.
        assert rows[name]["seconds"] == pd.Timedelta(submitted - shown).total_seconds(), name
    assert rows["active"]["seconds"] == 41234 / 1000.0  # the browser's time wins
    assert math.isnan(rows["imported"]["seconds"])  # imported verdicts carry no timing
    assert math.isnan(rows["no_shown"]["seconds"])


def test_axis_choices_only_count_the_exact_side_names(project) -> None:
    c = ComparisonFactory(project=project)
    judge(c, UserFactory(username="u1"), axes={"helpful": "A", "truthful": True, "harmless": "X"})
    judge(c, UserFactory(username="u2"), axes={})
    judge(c, UserFactory(username="u3"), axes={"helpful": "tie", "harmless": "B", "other": "A"})
    judge(c, UserFactory(username="u4"), axes={"helpful": "b", "truthful": 1, "harmless": None})
    rows = by_user(judgments_frame(project=project))
    got = {u: [r[f"axis:{a}"] for a in project.rubric_axes] for u, r in rows.items()}
    nan = [pd.isna(v) for v in got["u1"]]
    assert got["u1"][0] == "A" and nan[1:] == [True, True]
    assert all(pd.isna(v) for v in got["u2"]) and all(pd.isna(v) for v in got["u4"])
    assert got["u3"][0] == "tie" and pd.isna(got["u3"][1]) and got["u3"][2] == "B"


def test_flags_overall_and_annotator_names(project) -> None:
    c = ComparisonFactory(project=project)
    # Created in this order, so ids do not follow the names: categories must.
    zed, amy = UserFactory(username="zed"), UserFactory(username="amy")
    judge(c, zed, overall=-3, swapped=True, over_budget=False)
    judge(c, amy, overall=2, swapped=False, over_budget=True)
    frame = judgments_frame(project=project)
    assert list(frame["annotator"].cat.categories) == ["amy", "zed"]
    rows = by_user(frame)
    assert (rows["zed"]["overall"], rows["zed"]["swapped"], rows["zed"]["over_budget"]) == (
        -3,
        True,
        False,
    )
    assert (rows["amy"]["overall"], rows["amy"]["swapped"], rows["amy"]["over_budget"]) == (
        2,
        False,
        True,
    )


def test_lengths_follow_the_texts_and_gold_comes_along(project) -> None:
    c = ComparisonFactory(project=project, response_a="héllo", response_b="", gold=1)
    judge(c, UserFactory(username="u1"))
    row = by_user(judgments_frame(project=project))["u1"]
    assert (row["len_a"], row["len_b"], row["gold"]) == (5, 0, 1.0)  # characters, not bytes
    # The database keeps the stored lengths, whatever path edits the text.
    Comparison.objects.filter(pk=c.pk).update(response_a="x" * 42, gold=None)
    row = by_user(judgments_frame(project=project))["u1"]
    assert row["len_a"] == 42 and math.isnan(row["gold"])


def test_a_judgment_on_another_projects_comparison_still_gets_its_lengths(project) -> None:
    elsewhere = ComparisonFactory(project=ProjectFactory(slug="other"), response_a="abc")
    assignment = AssignmentFactory(comparison=elsewhere, annotator=UserFactory(username="u1"))
    JudgmentFactory(assignment=assignment, project=project)
    row = by_user(judgments_frame(project=project))["u1"]
    assert row["comparison"] == elsewhere.pk and row["len_a"] == 3


def test_an_empty_project_gives_an_empty_frame_with_the_columns(project) -> None:
    frame = judgments_frame(project=project)
    assert frame.empty
    assert {"comparison", "annotator", "seconds", "axis:helpful"} <= set(frame.columns)
