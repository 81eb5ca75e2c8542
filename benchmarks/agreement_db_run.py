"""`agreement_scale.py --from-db`: a lead's refresh timed end to end on a real database.

For each size: write the synthetic judgments (`agreement_db.build_project`),
then, --repeat times, `agreement_report(project=..., refresh=True)` end to end
(cache cleared first), and the same work by part: load (fingerprint query +
judgments frame + assignment counts) and compute (`project_report`). Wall
seconds, this process's CPU seconds and, on PostgreSQL, the server backend's
CPU seconds (SQLite runs in this process: its work is in ours).

Peers, same run, same rows, the same SQL our loader sends (`judgments_query`):
- `pandas.read_sql` on the DBAPI connection (pandas' usual entry point);
- plain ORM: `pd.DataFrame(list(queryset))` over the same `.values()` query.
Both stop at a raw frame of that query's rows; ours (`judgments_frame`) also
reads the comparisons and names and shapes the report's frame. Best of two
runs each; ratio = peer wall / ours wall. The report computed from the database is
checked against the one computed from the in-memory frame (same values).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from annotate import agreement

try:  # run as a script (benchmarks/ on sys.path) or imported from the repo root
    import agreement_db as adb
except ImportError:  # pragma: no cover
    from benchmarks import agreement_db as adb


def _measure(fn: Callable[[], Any], db_cpu: Callable[[], float]) -> tuple[float, float, float, Any]:
    """(wall s, our CPU s, database backend CPU s, result) of one call."""
    w, c = adb.clock()
    d = db_cpu()
    out = fn()
    w2, c2 = adb.clock()
    return w2 - w, c2 - c, db_cpu() - d, out


def _best(fn: Callable[[], Any], db_cpu: Callable[[], float]) -> tuple[float, float, float, Any]:
    return min((_measure(fn, db_cpu) for _ in range(2)), key=lambda t: t[0])


def _peer_read_sql(project: Any) -> pd.DataFrame:
    from django.db import connection

    from annotate.services.reports import judgments_query

    sql, params = judgments_query(project=project).query.sql_with_params()
    connection.ensure_connection()
    if connection.vendor == "sqlite":
        # The sqlite3 module takes qmark parameters (Django converts the same way).
        sql = re.sub(r"(?<!%)%s", "?", sql).replace("%%", "%")
    with warnings.catch_warnings():
        # pandas asks for SQLAlchemy for non-sqlite3 DBAPI connections; it works without.
        warnings.simplefilter("ignore", UserWarning)
        return pd.read_sql(sql, connection.connection, params=params)


def _peer_orm(project: Any) -> pd.DataFrame:
    from annotate.services.reports import judgments_query

    return pd.DataFrame(list(judgments_query(project=project)))


def _check(db_report: dict[str, Any], expected: pd.DataFrame, project: Any) -> None:
    """The database round trip must not change a figure."""
    ref = agreement.project_report(
        expected, project=project.slug, axes=list(project.rubric_axes), max_strength=3
    )
    ours, theirs = dict(db_report["summary"]), dict(ref["summary"])
    # Wall times come back as timestamp differences: equal to the microsecond.
    assert np.isclose(ours.pop("median_seconds"), theirs.pop("median_seconds"), atol=1e-6)
    assert ours == theirs | {"skip_rate": 0.0}, (ours, theirs)
    for axis, figures in ref["axes"].items():
        ours = db_report["axes"][axis]
        assert ours["pairwise_agreement"]["value"] == figures["pairwise_agreement"]["value"]
        for key in ("krippendorff_alpha_nominal", "len_logit_coef", "len_only_auc"):
            assert np.isclose(ours[key], figures[key], rtol=1e-9, atol=1e-12), (axis, key)
        assert ours["fleiss_kappa"] == figures["fleiss_kappa"]
        assert ours["left_chosen_rate"] == figures["left_chosen_rate"]
        assert ours["longer_chosen_rate"] == figures["longer_chosen_rate"]


def run(
    sizes: list[int],
    *,
    repeat: int,
    frame_for: Callable[[int], pd.DataFrame],
    keep_db: bool,
    peers: bool,
) -> None:
    cleanup = adb.setup_django()
    try:
        _run(sizes, repeat=repeat, frame_for=frame_for, peers=peers)
    finally:
        if not keep_db:
            cleanup()


def _run(
    sizes: list[int], *, repeat: int, frame_for: Callable[[int], pd.DataFrame], peers: bool
) -> None:
    print(f"database: {adb.describe_database()}")
    print(
        "times: wall s (this process's CPU s) [database server CPU s, PostgreSQL only]; "
        "load = fingerprint + judgments frame + assignment counts"
    )
    for n in sizes:
        frame = frame_for(n)
        w, _ = adb.clock()
        project, expected = adb.build_project(frame, slug=f"bench-{n}")
        took = adb.clock()[0] - w
        print(f"\nwrote {len(frame)} judgments (+ comparisons, assignments) in {took:.1f} s")
        _one_size(project, expected, repeat=repeat, peers=peers)
    print("\nthe report read from the database equals the in-memory one (checked).")
    print(f"peak RSS {adb.rss_mib():.0f} MiB")


def _cell(t: tuple[float, ...], db: bool = True) -> str:
    extra = f" [{t[2]:.2f}]" if db and np.isfinite(t[2]) and t[2] else ""
    return f"{t[0]:.2f} ({t[1]:.2f}){extra}"


def _one_size(project: Any, expected: pd.DataFrame, *, repeat: int, peers: bool) -> None:
    from django.core.cache import cache

    from annotate.services import reports

    n = len(expected)
    db_cpu = adb.backend_cpu()
    print(
        f"{'judgments':>10} {'run':>3} {'load1':>5}  {'fingerprint':>17} {'frame':>17} "
        f"{'load':>17} {'compute':>13} {'total (e2e)':>17}"
    )

    def compute(frame: pd.DataFrame, assignments: pd.DataFrame) -> dict[str, Any]:
        return agreement.project_report(
            frame,
            project=project.slug,
            axes=list(project.rubric_axes),
            max_strength=project.max_strength,
            assignments=assignments,
        )

    for r in range(repeat):
        cache.clear()
        e2e = _measure(lambda: reports.agreement_report(project=project, refresh=True), db_cpu)
        fp = _measure(lambda: reports._fingerprint(project), db_cpu)
        fr = _measure(lambda: reports.judgments_frame(project=project), db_cpu)
        asg = _measure(lambda: reports.assignments_frame(project=project), db_cpu)
        comp = _measure(lambda f=fr[3], a=asg[3]: compute(f, a), db_cpu)
        load = tuple(fp[i] + fr[i] + asg[i] for i in range(3))
        print(
            f"{n:>10} {r + 1:>3} {os.getloadavg()[0]:>5.1f}  {_cell(fp):>17} {_cell(fr):>17} "
            f"{_cell(load):>17} {_cell(comp, False):>13} {_cell(e2e):>17}"
        )
        if r == 0:
            _check(e2e[3], expected, project)
    if peers:
        # Best of two for each side: the first pandas.read_sql call also pays imports.
        ours = _best(lambda: reports.judgments_frame(project=project), db_cpu)
        for name, fn in (
            ("pandas.read_sql, same SQL", _peer_read_sql),
            ("ORM .values() list -> DataFrame", _peer_orm),
        ):
            peer = _best(lambda f=fn: f(project), db_cpu)
            assert len(peer[3]) == len(ours[3]) == n
            print(
                f"{'':>10} load peer: {name:<32} {peer[0]:>6.2f} s ({peer[1]:.2f}) vs ours "
                f"{ours[0]:.2f} s ({ours[1]:.2f}): {peer[0] / ours[0]:.1f}x"
            )
