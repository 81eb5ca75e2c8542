"""The database half of `agreement_scale.py --from-db`: a scratch database filled fast.

A lead's refresh is `annotate.services.reports.agreement_report(refresh=True)`:
fingerprint query, judgments frame and assignment counts read from the
database, then `annotate.agreement.project_report`. This module writes the
synthetic judgments of `agreement_scale.synthetic_frame` as real rows
(comparisons with responses of the frame's lengths, one submitted assignment
and one judgment per row) and times that call end to end and by part.

Writes bypass the ORM on purpose (a million model instances would take
minutes): SQLite gets one `executemany` per table, PostgreSQL a `COPY`.
The database is a scratch one:
- SQLite: the file named by DATABASE_URL (it must not exist yet), else a file
  in a fresh folder under /tmp; removed at the end unless --keep-db;
- PostgreSQL (DATABASE_URL=postgres://...): Django's test database machinery
  creates `test_<name>` on that server, migrates it and drops it at the end.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

AXES = ("helpful", "truthful", "harmless")
# Share of judgments whose browser sent an active time; the rest fall back to
# submitted - shown, so both branches of the loader are exercised.
ACTIVE_SHARE = 0.7


def setup_django() -> Callable[[], None]:
    """Point Django at a scratch database, migrate it; return the clean-up function."""
    import django

    url = os.environ.get("DATABASE_URL", "")
    tmp = tempfile.mkdtemp(prefix="agreement-bench-")
    if not url.startswith("postgres"):
        path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
        path = path or f"{tmp}/bench.sqlite3"
        if Path(path).exists():
            raise SystemExit(f"{path} exists: --from-db writes only into a new scratch file")
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "1")
    os.environ["VAR_DIR"] = tmp  # the settings create folders there
    django.setup()
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor == "postgresql":
        old_name = connection.settings_dict["NAME"]
        connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)

        def cleanup() -> None:
            connection.creation.destroy_test_db(old_name, verbosity=0)
            shutil.rmtree(tmp, ignore_errors=True)

        return cleanup
    call_command("migrate", verbosity=0)
    db_file = Path(connection.settings_dict["NAME"])

    def cleanup_sqlite() -> None:
        connection.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_file}{suffix}").unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)

    return cleanup_sqlite


def describe_database() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            return f"PostgreSQL {cursor.fetchone()[0]} ({connection.settings_dict['NAME']})"
        cursor.execute("SELECT sqlite_version()")
        return f"SQLite {cursor.fetchone()[0]} ({connection.settings_dict['NAME']})"


def _insert(model: Any, columns: dict[str, Sequence[Any]]) -> None:
    """Write whole columns (Python values, None = NULL) into `model`'s table."""
    from django.db import connection, transaction

    table = connection.ops.quote_name(model._meta.db_table)
    names = ", ".join(connection.ops.quote_name(c) for c in columns)
    rows: Iterable[tuple[Any, ...]] = zip(*columns.values(), strict=True)
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join(["%s"] * len(columns))
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)


def _next_id(model: Any) -> int:
    from django.db.models import Max

    return (model.objects.aggregate(m=Max("pk"))["m"] or 0) + 1


def _timestamps(base: np.datetime64, offsets_us: np.ndarray, vendor: str) -> list[str]:
    """ISO text as each backend stores it (SQLite: naive UTC text; PostgreSQL: timestamptz)."""
    text = np.datetime_as_string(base + offsets_us.astype("timedelta64[us]"), unit="us")
    text = np.char.replace(text, "T", " ")
    if vendor == "postgresql":
        text = np.char.add(text, "+00:00")
    return text.tolist()


def build_project(frame: pd.DataFrame, *, slug: str, seed: int = 0) -> tuple[Any, pd.DataFrame]:
    """Write `frame` as a project; return it and the frame the loader should read back.

    The returned frame has the database's comparison ids and the times as
    stored (microseconds, active time in milliseconds).
    """
    from django.db import connection

    from annotate.models import Assignment, Comparison, Judgment, Project, User

    rng = np.random.default_rng(seed)
    vendor = connection.vendor
    project = Project.objects.create(slug=slug, name=slug, rubric_axes=list(AXES))
    names = sorted(frame["annotator"].astype(str).unique())
    existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
    User.objects.bulk_create(
        [User(username=u, kind=User.Kind.AI) for u in names if u not in existing]
    )
    user_ids = dict(User.objects.filter(username__in=names).values_list("username", "pk"))

    # Comparisons: one per distinct synthetic comparison, responses of the
    # frame's lengths cut from one random text (not compressible to nothing).
    comps = frame.drop_duplicates("comparison")
    m = len(comps)
    first_comp = _next_id(Comparison)
    comp_ids = np.arange(first_comp, first_comp + m)
    comp_map = pd.Series(comp_ids, index=comps["comparison"].to_numpy())
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz     .,"))
    text = "".join(alphabet[rng.integers(0, len(alphabet), 200_000)].tolist())
    len_a, len_b = comps["len_a"].to_numpy(), comps["len_b"].to_numpy()
    starts = rng.integers(0, len(text) - max(len_a.max(), len_b.max()), (2, m)).tolist()
    gold = comps["gold"].to_numpy()
    now = np.datetime64("2026-11-27T12:00:00", "us")
    created = _timestamps(now, -rng.integers(10**9, 10**11, m), vendor)
    ext = [f"{slug}-{c}" for c in comps["comparison"].tolist()]
    _insert(
        Comparison,
        {
            "id": comp_ids.tolist(),
            "project_id": [project.pk] * m,
            "external_id": ext,
            "content_hash": ext,
            "prompt": ["Which answer is better?"] * m,
            "response_a": [text[s : s + n] for s, n in zip(starts[0], len_a.tolist(), strict=True)],
            "response_b": [text[s : s + n] for s, n in zip(starts[1], len_b.tolist(), strict=True)],
            "model_a": ["model-a"] * m,
            "model_b": ["model-b"] * m,
            "metadata": ["{}"] * m,
            "gold": [None if np.isnan(g) else int(g) for g in gold.tolist()],
            "extra_overlap": [0] * m,
            "slots_taken": comps["comparison"].map(frame["comparison"].value_counts()).tolist(),
            "created_at": created,
        },
    )

    n = len(frame)
    comparison_id = comp_map.loc[frame["comparison"].to_numpy()].to_numpy()
    annotator_id = frame["annotator"].astype(str).map(user_ids).to_numpy()
    submitted_us = -rng.integers(0, 30 * 86400 * 10**6, n)
    wall_us = np.round(frame["seconds"].to_numpy() * 1e6).astype(np.int64)
    shown = _timestamps(now, submitted_us - wall_us, vendor)
    submitted = _timestamps(now, submitted_us, vendor)
    active = rng.random(n) < ACTIVE_SHARE
    active_ms = np.round(frame["seconds"].to_numpy() * 1000).astype(np.int64)
    swapped = frame["swapped"].to_numpy(dtype=bool).tolist()
    first_assignment = _next_id(Assignment)
    assignment_ids = list(range(first_assignment, first_assignment + n))
    _insert(
        Assignment,
        {
            "id": assignment_ids,
            "project_id": [project.pk] * n,
            "comparison_id": comparison_id.tolist(),
            "annotator_id": annotator_id.tolist(),
            "swapped": swapped,
            "is_gold": [False] * n,
            "status": [Assignment.Status.SUBMITTED.value] * n,
            "shown_at": shown,
            "closed_at": submitted,
            "skip_reason": [""] * n,
        },
    )
    # The axes JSON as the ORM writes it, from the 27 possible documents.
    codes = np.zeros(n, np.int64)
    for axis in AXES:
        side = frame[f"axis:{axis}"].astype(str).map({"A": 0, "tie": 1, "B": 2}).to_numpy()
        codes = codes * 3 + side
    sides = ("A", "tie", "B")
    docs = [
        json.dumps(dict(zip(AXES, (sides[k // 9], sides[k // 3 % 3], sides[k % 3]), strict=True)))
        for k in range(27)
    ]
    _insert(
        Judgment,
        {
            "project_id": [project.pk] * n,
            "comparison_id": comparison_id.tolist(),
            "assignment_id": assignment_ids,
            "annotator_id": annotator_id.tolist(),
            "overall": frame["overall"].astype(int).tolist(),
            "axes": np.array(docs, dtype=object)[codes].tolist(),
            "flags": ["[]"] * n,
            "rationale": [""] * n,
            "swapped": swapped,
            "source": [Judgment.Source.WEB.value] * n,
            "shown_at": shown,
            "submitted_at": submitted,
            "active_ms": [
                a if ok else None for a, ok in zip(active_ms.tolist(), active.tolist(), strict=True)
            ],
            "over_budget": frame["over_budget"].to_numpy(dtype=bool).tolist(),
        },
    )
    with connection.cursor() as cursor:
        if vendor == "postgresql":
            from django.core.management.color import no_style

            # COPY with explicit ids leaves the sequences behind.
            for sql in connection.ops.sequence_reset_sql(
                no_style(), [Comparison, Assignment, Judgment]
            ):
                cursor.execute(sql)
        # Fresh statistics (and on PostgreSQL a visibility map, which index-only
        # scans need), as autovacuum gives a long-lived database after a load.
        cursor.execute("VACUUM ANALYZE" if vendor == "postgresql" else "ANALYZE")
    expected = frame.copy()
    expected["comparison"] = comparison_id
    expected["seconds"] = np.where(active, active_ms / 1000.0, wall_us / 1e6)
    return project, expected


def backend_cpu() -> Callable[[], float]:
    """CPU seconds used so far by the database server process serving us (PostgreSQL).

    SQLite runs inside this process, so its work is already in our own CPU time.
    """
    from django.db import connection

    if connection.vendor != "postgresql":
        return lambda: 0.0
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():  # a server on another machine: not measurable from here
        return lambda: float("nan")
    tick = os.sysconf("SC_CLK_TCK")

    def read() -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

    return read


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()
