"""Every API endpoint x every role against ONE explicit table of status codes.

Roles: anonymous (no credentials), annotator (alice), lead (lee), ml (mia),
staff (sam: is_staff, no membership), nonmember (nina: ML staff of another
project). Auth is by token here; session auth is covered in test_api_auth.py.

Reading the table: 401 = no credentials; 404 = the project (or object) is
outside the caller's projects; 403 = a member whose role does not allow it.
Staff administer everything but do not label (labeling needs the annotator
role). A new endpoint must be added here: `test_table_covers_every_api_route`
fails otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.authtoken.models import Token

from tests.api.conftest import ROLES, World
from tests.conftest import PASSWORD

AXES = {"helpful": "A", "truthful": "tie", "harmless": "B"}

# endpoint -> (method, path builder, body builder or None)
Build = Callable[[World], Any]
ENDPOINTS: dict[str, tuple[str, Build, Build | None]] = {
    "schema": ("get", lambda w: "/api/v1/schema/", None),
    "auth.token": (
        "post",
        lambda w: "/api/v1/auth/token/",
        lambda w: {"username": "alice", "password": PASSWORD},
    ),
    "projects.list": ("get", lambda w: "/api/v1/projects/", None),
    "projects.detail": ("get", lambda w: "/api/v1/projects/demo/", None),
    "comparisons.list": ("get", lambda w: "/api/v1/projects/demo/comparisons/", None),
    "comparisons.import": (
        "post",
        lambda w: "/api/v1/projects/demo/comparisons/",
        lambda w: {
            "format": "jsonl",
            "items": [{"prompt": "p?", "response_a": "a", "response_b": "b"}],
        },
    ),
    "comparisons.detail": (
        "get",
        lambda w: f"/api/v1/projects/demo/comparisons/{w.comparisons[0].pk}/",
        None,
    ),
    "assignments.list": ("get", lambda w: "/api/v1/projects/demo/assignments/", None),
    "assignments.next": ("post", lambda w: "/api/v1/projects/demo/assignments/next/", None),
    "assignments.skip": (
        "post",
        lambda w: f"/api/v1/projects/demo/assignments/{w.open_assignment.pk}/skip/",
        lambda w: {"reason": "unclear"},
    ),
    "assignments.submit": (
        "post",
        lambda w: f"/api/v1/projects/demo/assignments/{w.open_assignment.pk}/judgment/",
        lambda w: {"overall": -2, "axes": AXES},
    ),
    "judgments.list": ("get", lambda w: "/api/v1/projects/demo/judgments/", None),
    "agreement": ("get", lambda w: "/api/v1/projects/demo/agreement/", None),
    "exports.list": ("get", lambda w: "/api/v1/projects/demo/exports/", None),
    "exports.create": (
        "post",
        lambda w: "/api/v1/projects/demo/exports/",
        lambda w: {"format": "jsonl", "seed": 1},
    ),
    "exports.detail": ("get", lambda w: f"/api/v1/exports/{w.export.pk}/", None),
    "exports.download": ("get", lambda w: f"/api/v1/exports/{w.export.pk}/download/", None),
    "runs.list": ("get", lambda w: "/api/v1/runs/", None),
    "runs.create": (
        "post",
        lambda w: "/api/v1/runs/",
        lambda w: {"kind": "reward", "export": w.export.pk},
    ),
    "runs.detail": ("get", lambda w: f"/api/v1/runs/{w.run.pk}/", None),
    "runs.metrics": ("get", lambda w: f"/api/v1/runs/{w.run.pk}/metrics/", None),
    "runs.cancel": ("post", lambda w: f"/api/v1/runs/{w.run.pk}/cancel/", None),
    # The world's run has not produced artifacts: allowed roles get the 404 that says so.
    "runs.artifacts": ("get", lambda w: f"/api/v1/runs/{w.run.pk}/artifacts/", None),
}

# THE table.            anonymous annotator lead  ml   staff nonmember
EXPECTED: dict[str, tuple[int, int, int, int, int, int]] = {
    "schema": (200, 200, 200, 200, 200, 200),
    # Public: the credentials are in the body (alice's here, whoever calls).
    "auth.token": (200, 200, 200, 200, 200, 200),
    "projects.list": (401, 200, 200, 200, 200, 200),
    "projects.detail": (401, 200, 200, 200, 200, 404),
    "comparisons.list": (401, 403, 200, 200, 200, 404),
    "comparisons.import": (401, 403, 403, 201, 201, 404),
    "comparisons.detail": (401, 403, 200, 200, 200, 404),
    "assignments.list": (401, 200, 200, 200, 200, 404),
    "assignments.next": (401, 200, 403, 403, 403, 404),
    "assignments.skip": (401, 200, 403, 403, 403, 404),
    "assignments.submit": (401, 201, 403, 403, 403, 404),
    "judgments.list": (401, 200, 200, 200, 200, 404),
    "agreement": (401, 403, 200, 200, 200, 404),
    "exports.list": (401, 403, 403, 200, 200, 404),
    "exports.create": (401, 403, 403, 201, 201, 404),
    "exports.detail": (401, 403, 403, 200, 200, 404),
    "exports.download": (401, 403, 403, 200, 200, 404),
    # nina is ML staff elsewhere: she may list runs (she sees none of demo's, below).
    "runs.list": (401, 403, 403, 200, 200, 200),
    "runs.create": (401, 403, 403, 201, 201, 404),
    "runs.detail": (401, 403, 403, 200, 200, 404),
    "runs.metrics": (401, 403, 403, 200, 200, 404),
    "runs.cancel": (401, 403, 403, 200, 200, 404),
    "runs.artifacts": (401, 403, 403, 404, 404, 404),
}

CASES = [
    (endpoint, role, EXPECTED[endpoint][i]) for endpoint in EXPECTED for i, role in enumerate(ROLES)
]


def test_table_and_endpoints_match() -> None:
    assert set(EXPECTED) == set(ENDPOINTS)


def _api_routes() -> set[str]:
    """Every (method-agnostic) route under /api/v1/, as a pattern string."""
    routes: set[str] = set()

    def walk(patterns: list, prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                routes.add(prefix + str(p.pattern))

    walk(get_resolver().url_patterns, "")
    return {r for r in routes if r.startswith("api/v1/") and "docs" not in r}


def test_table_covers_every_api_route() -> None:
    covered = {
        "api/v1/schema/",
        "api/v1/auth/token/",
        "api/v1/projects/",
        "api/v1/projects/<slug:slug>/",
        "api/v1/projects/<slug:slug>/comparisons/",
        "api/v1/projects/<slug:slug>/comparisons/<id:pk>/",
        "api/v1/projects/<slug:slug>/assignments/",
        "api/v1/projects/<slug:slug>/assignments/next/",
        "api/v1/projects/<slug:slug>/assignments/<id:pk>/skip/",
        "api/v1/projects/<slug:slug>/assignments/<id:pk>/judgment/",
        "api/v1/projects/<slug:slug>/judgments/",
        "api/v1/projects/<slug:slug>/agreement/",
        "api/v1/projects/<slug:slug>/exports/",
        "api/v1/exports/<id:pk>/",
        "api/v1/exports/<id:pk>/download/",
        "api/v1/runs/",
        "api/v1/runs/<id:pk>/",
        "api/v1/runs/<id:pk>/metrics/",
        "api/v1/runs/<id:pk>/cancel/",
        "api/v1/runs/<id:pk>/artifacts/",
    }
    assert _api_routes() == covered


@pytest.mark.parametrize("endpoint,role,expected", CASES, ids=[f"{e}-{r}" for e, r, _ in CASES])
def test_permission_matrix(world: World, endpoint: str, role: str, expected: int) -> None:
    method, path, body = ENDPOINTS[endpoint]
    client = world.client(role)
    if body is None:
        response = getattr(client, method)(path(world))
    else:
        response = getattr(client, method)(path(world), body(world), format="json")
    detail = getattr(response, "data", None) if response.status_code != expected else None
    assert response.status_code == expected, (
        f"{endpoint} as {role}: {response.status_code} {detail}"
    )
    if endpoint == "auth.token":
        assert response.data["token"] == Token.objects.get(user__username="alice").key
    if expected == 401:
        assert response["WWW-Authenticate"].startswith("Token")


def test_lists_only_show_what_the_role_may_see(world: World) -> None:
    # nina (ML elsewhere) sees no demo run and only her own project.
    nina = world.client("nonmember")
    assert [r["id"] for r in nina.get("/api/v1/runs/").data["results"]] == []
    assert [p["slug"] for p in nina.get("/api/v1/projects/").data["results"]] == ["other"]
    # staff see every project; alice sees only hers, and only her own judgments and assignments.
    assert [p["slug"] for p in world.client("staff").get("/api/v1/projects/").data["results"]] == [
        "demo",
        "other",
    ]
    alice = world.client("annotator")
    assert [p["slug"] for p in alice.get("/api/v1/projects/").data["results"]] == ["demo"]
    assert {
        j["annotator"] for j in alice.get("/api/v1/projects/demo/judgments/").data["results"]
    } == {"alice"}
    assert [a["id"] for a in alice.get("/api/v1/projects/demo/assignments/").data["results"]] == [
        a.pk for a in world.open_assignment.annotator.assignments.order_by("id")
    ]
    # The lead sees everyone's judgments.
    lead_view = world.client("lead").get("/api/v1/projects/demo/judgments/").data
    assert {j["annotator"] for j in lead_view["results"]} == {"alice", "bob"}
    assert world.client("ml").get("/api/v1/runs/").data["count"] == 1
