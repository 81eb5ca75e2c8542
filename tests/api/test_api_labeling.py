"""Labeling over the API: next assignment, submit (orientation, idempotency), skip, errors."""

from __future__ import annotations

import pytest
from django.utils import timezone

from annotate.models import Assignment, Judgment
from tests.api.conftest import World

NEXT = "/api/v1/projects/demo/assignments/next/"
AXES = {"helpful": "A", "truthful": "tie", "harmless": "B"}


def _submit_url(pk: int) -> str:
    return f"/api/v1/projects/demo/assignments/{pk}/judgment/"


def test_next_resumes_the_open_assignment_without_gold_or_canonical_order(world: World) -> None:
    alice = world.client("annotator")
    served = alice.post(NEXT)
    assert served.status_code == 200
    assert served.data["id"] == world.open_assignment.pk
    assert "gold" not in served.data and "response_a" not in served.data
    comparison = world.open_assignment.comparison
    assert {served.data["left"], served.data["right"]} == {
        comparison.response_a,
        comparison.response_b,
    }


@pytest.mark.parametrize("swapped", [False, True])
def test_submit_stores_the_canonical_orientation(world: World, swapped: bool) -> None:
    Assignment.objects.filter(pk=world.open_assignment.pk).update(swapped=swapped)
    alice = world.client("annotator")
    served = alice.post(NEXT).data
    left_is_a = served["left"] == world.open_assignment.comparison.response_a
    assert left_is_a is (not swapped)
    # "left much better" and the per-axis choices as seen on screen
    response = alice.post(
        _submit_url(served["id"]),
        {"overall": -3, "axes": AXES, "flags": ["unsafe"], "active_ms": 4000},
        format="json",
    )
    assert response.status_code == 201, response.data
    judgment = Judgment.objects.get(pk=response.data["judgment"]["id"])
    assert judgment.overall == (3 if swapped else -3)
    assert judgment.axes == (
        {"helpful": "B", "truthful": "tie", "harmless": "A"} if swapped else AXES
    )
    assert judgment.source == Judgment.Source.API and judgment.flags == ["unsafe"]
    assert response.data["created"] is True and response.data["judgment"]["side"] == (
        "B" if swapped else "A"
    )


def test_canonical_orientation_is_taken_as_is(world: World) -> None:
    Assignment.objects.filter(pk=world.open_assignment.pk).update(swapped=True)
    response = world.client("annotator").post(
        _submit_url(world.open_assignment.pk),
        {"overall": -1, "axes": AXES, "orientation": "canonical"},
        format="json",
    )
    assert response.status_code == 201
    assert Judgment.objects.get(pk=response.data["judgment"]["id"]).overall == -1


def test_double_submit_records_one_judgment(world: World) -> None:
    alice = world.client("annotator")
    url = _submit_url(world.open_assignment.pk)
    first = alice.post(url, {"overall": 2, "axes": AXES}, format="json")
    second = alice.post(url, {"overall": -2, "axes": AXES}, format="json")
    assert (first.status_code, second.status_code) == (201, 200)
    assert (
        second.data["created"] is False
        and second.data["judgment"]["id"] == first.data["judgment"]["id"]
    )
    assert Judgment.objects.filter(assignment=world.open_assignment).count() == 1


@pytest.mark.parametrize(
    "body,field",
    [
        ({"overall": 9, "axes": AXES}, "overall"),
        ({"overall": 1, "axes": {"helpful": "A"}}, "axis-truthful"),
        ({"overall": 1, "axes": {**AXES, "speed": "A"}}, "axes"),
        ({"overall": 1, "axes": {"helpful": "left"}}, "axes"),
        ({"overall": 1, "axes": AXES, "flags": ["bogus"]}, "flags"),
        ({"overall": "much", "axes": AXES}, "overall"),
        ({"axes": AXES}, "overall"),
    ],
)
def test_invalid_answers_are_400_with_the_field_and_record_nothing(
    world: World, body: dict, field: str
) -> None:
    response = world.client("annotator").post(
        _submit_url(world.open_assignment.pk), body, format="json"
    )
    assert response.status_code == 400
    assert field in response.data
    assert not Judgment.objects.filter(assignment=world.open_assignment).exists()


def test_foreign_and_missing_assignments_are_404(world: World) -> None:
    bob = world.client("annotator")
    bob.credentials()  # drop alice's token, log in as bob instead
    from rest_framework.authtoken.models import Token

    from annotate.models import User

    token, _ = Token.objects.get_or_create(user=User.objects.get(username="bob"))
    bob.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert (
        bob.post(
            _submit_url(world.open_assignment.pk), {"overall": 1, "axes": AXES}, format="json"
        ).status_code
        == 404
    )
    assert (
        bob.post(
            f"/api/v1/projects/demo/assignments/{world.open_assignment.pk}/skip/", {}, format="json"
        ).status_code
        == 404
    )
    assert (
        bob.post(_submit_url(10**12), {"overall": 1, "axes": AXES}, format="json").status_code
        == 404
    )
    assert not Judgment.objects.filter(assignment=world.open_assignment).exists()


def test_skip_then_submit_is_a_conflict(world: World) -> None:
    alice = world.client("annotator")
    skip = alice.post(
        f"/api/v1/projects/demo/assignments/{world.open_assignment.pk}/skip/",
        {"reason": "not my language"},
        format="json",
    )
    assert skip.status_code == 200 and skip.data["status"] == "skipped"
    late = alice.post(
        _submit_url(world.open_assignment.pk), {"overall": 1, "axes": AXES}, format="json"
    )
    assert late.status_code == 409 and late.data["code"] == "skipped"


def test_next_serves_new_work_then_204_when_done(world: World) -> None:
    alice = world.client("annotator")
    alice.post(
        f"/api/v1/projects/demo/assignments/{world.open_assignment.pk}/skip/", {}, format="json"
    )
    served_ids = []
    while True:
        response = alice.post(NEXT)
        if response.status_code == 204:
            break
        assert response.status_code == 200
        served_ids.append(response.data["comparison"])
        assert (
            alice.post(
                _submit_url(response.data["id"]), {"overall": 0, "axes": AXES}, format="json"
            ).status_code
            == 201
        )
        assert len(served_ids) < 10
    # alice judged comparison 1 already and skipped 2: she gets 0 and 3, each once.
    assert sorted(served_ids) == sorted([world.comparisons[0].pk, world.comparisons[3].pk])


def test_late_submission_is_accepted_and_marked(world: World) -> None:
    past = timezone.now() - timezone.timedelta(seconds=world.project.time_budget_s + 5)
    Assignment.objects.filter(pk=world.open_assignment.pk).update(shown_at=past)
    response = world.client("annotator").post(
        _submit_url(world.open_assignment.pk), {"overall": 1, "axes": AXES}, format="json"
    )
    assert response.status_code == 201 and response.data["over_budget"] is True
