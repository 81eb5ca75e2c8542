"""Reading a project's judgments into the frames `annotate.agreement` works on.

A lead's refresh over a million judgments must stay within seconds, so the
reads avoid per-row work in Python (measured by
`benchmarks/agreement_scale.py --from-db`):

* three narrow queries instead of one wide join: the judgments (ids, small
  integers, the axes JSON text), the project's comparisons (gold and the
  stored lengths `Comparison.len_a`/`len_b`: once per comparison, not once
  per judgment, and no text measured) and the annotators' names (a few
  hundred rows); the frame joins them in numpy;
* no column the database driver converts row by row: no datetimes (the
  wall clock is computed exactly by PostgreSQL; SQLite hands back the stored
  text, which numpy parses in bulk), no booleans (packed with the overall
  preference into one integer); rows go into a numpy record array in one C
  call, and PostgreSQL streams them so that it produces while we convert;
* the rubric choices are parsed once per distinct axes document (a project
  has a few dozen), not once per judgment.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from itertools import islice
from typing import Any

import numpy as np
import pandas as pd
from django.db import NotSupportedError, connection
from django.db.backends.utils import CursorDebugWrapper
from django.db.models import (
    BigIntegerField,
    Case,
    Count,
    F,
    Func,
    IntegerField,
    Q,
    QuerySet,
    When,
)
from django.db.models.functions import Cast

from annotate import agreement
from annotate.models import Assignment, Comparison, Judgment, Project, User

# Annotator ids per `IN (...)` query: SQLite's historical parameter limit.
_IDS_PER_QUERY = 999
# Rows per chunk when PostgreSQL streams a result.
_CHUNK_ROWS = 10_000


class MicrosBetween(Func):
    """Exact microseconds from the first timestamp to the second, as a bigint (PostgreSQL)."""

    arity = 2
    output_field = BigIntegerField()

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        raise NotSupportedError("MicrosBetween is written for PostgreSQL only")

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        (start, start_params), (end, end_params) = (
            compiler.compile(e) for e in self.get_source_expressions()
        )
        # EXTRACT(EPOCH FROM interval) is numeric (exact) since PostgreSQL 14.
        return (
            f"CAST(EXTRACT(EPOCH FROM ({end} - {start})) * 1000000 AS bigint)",
            [*end_params, *start_params],
        )


def judgments_query(*, project: Project) -> QuerySet[Judgment, dict[str, Any]]:
    """The project's current judgments, one narrow row each (see `judgments_frame`).

    Columns: comparison_id, annotator_id, ``codes`` (overall * 4 + swapped * 2
    + over_budget: one integer instead of three values to convert), active_ms,
    axes (JSON text), then the wall clock where no browser time exists
    (imported verdicts carry no real timing: the importer stamps both times):
    on PostgreSQL ``wall_us``, computed by the server; on SQLite the stored
    texts ``shown_text`` and ``submitted_text``, which numpy parses in bulk
    (SQLite's own date functions took ~0.6 s per million rows; numpy parses
    the texts in ~0.05 s).
    """
    wall = Q(active_ms__isnull=True) & ~Q(source=Judgment.Source.IMPORT)
    if connection.vendor == "postgresql":
        clock = {
            "wall_us": Case(
                When(wall, then=MicrosBetween("shown_at", "submitted_at")),
                default=None,
                output_field=BigIntegerField(),
            )
        }
    else:
        # A CASE has no declared type, so the driver hands back the text as stored.
        clock = {
            f"{name}_text": Case(When(wall, then=F(f"{name}_at")), default=None)
            for name in ("shown", "submitted")
        }
    return (
        Judgment.objects.filter(project=project, superseded_at__isnull=True)
        .values(
            "comparison_id",
            "annotator_id",
            "active_ms",
            "axes",
            codes=F("overall") * 4
            + Cast("swapped", IntegerField()) * 2
            + Cast("over_budget", IntegerField()),
            **clock,
        )
        .order_by()
    )


# numpy types of the columns read (by their names in the SQL).
_JUDGMENT_TYPES = {
    "comparison_id": "i8",
    "annotator_id": "i8",
    "codes": "i8",
    "active_ms": "f8",  # NULL -> NaN
    "axes": "O",
    "wall_us": "f8",  # NULL -> NaN; exact below 2**53 us (285 years)
    "shown_text": "O",
    "submitted_text": "O",
}
_COMPARISON_TYPES = {"id": "i8", "gold": "f8", "len_a": "i8", "len_b": "i8"}


def _wall_micros(rows: dict[str, np.ndarray]) -> np.ndarray:
    """submitted_at - shown_at in microseconds (float, NaN where not wanted or unknown)."""
    if "wall_us" in rows:
        return rows["wall_us"]
    shown, submitted = rows["shown_text"], rows["submitted_text"]
    known = ~(pd.isna(shown) | pd.isna(submitted))
    wall = np.full(len(shown), np.nan)
    # SQLite stores 'YYYY-MM-DD HH:MM:SS[.ffffff]' in UTC: numpy reads it exactly.
    wall[known] = (
        submitted[known].astype("datetime64[us]") - shown[known].astype("datetime64[us]")
    ).astype(np.int64)
    return wall


def _records(queryset: QuerySet[Any, Any], types: dict[str, str]) -> dict[str, np.ndarray]:
    """Run a `.values()` query; its columns as numpy arrays, by name.

    Rows go into a numpy record array in one C call (``types`` gives each
    column's numpy type; NULL becomes NaN in "f8"). PostgreSQL streams the
    result and each chunk is converted as it arrives, while the server
    produces the next: a plain fetch waits for the whole result first,
    which doubled the wall time at a million rows.
    """
    query = queryset.query
    # The column order of a `.values()` query, as Django's ValuesIterable reads it.
    names = [*query.extra_select, *query.values_select, *query.annotation_select]
    dtype = np.dtype([(name, types[name]) for name in names])
    sql, params = query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The raw psycopg cursor streams; log the query as Django's own
            # execute would (query counts in tests and debug tooling see it).
            logged = (
                cursor.debug_sql(sql, params)
                if isinstance(cursor, CursorDebugWrapper)
                else nullcontext()
            )
            with logged, connection.wrap_database_errors:
                stream = cursor.cursor.stream(sql, params, size=_CHUNK_ROWS)
                parts = [np.array(chunk, dtype) for chunk in _batched(stream)]
            table = np.concatenate(parts) if parts else np.empty(0, dtype)
        else:
            # In-process: nothing to overlap, so one call converts everything.
            cursor.execute(sql, params)
            table = np.array(cursor.fetchall(), dtype)
    return {name: table[name] for name in names}


def _batched(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    while chunk := list(islice(rows, _CHUNK_ROWS)):
        yield chunk


def _side_codes(axes_json: np.ndarray, axes: Sequence[str]) -> dict[str, np.ndarray]:
    """Per axis, the code (0 A, 1 tie, 2 B, -1 not given) of each judgment's choice.

    Naive loop: ``[SIDE[json.loads(doc).get(axis)] for doc in axes_json]``;
    the documents repeat (27 kinds with three axes), so each distinct one is
    parsed once and the codes are gathered by index.
    """
    which, docs = pd.factorize(axes_json, use_na_sentinel=False)
    sides = {name: code for code, name in enumerate(agreement.SIDES)}
    table = np.full((len(docs), len(axes)), -1, np.int8)
    for d, doc in enumerate(docs):
        parsed = json.loads(doc) if isinstance(doc, str) else doc
        if isinstance(parsed, dict):
            for k, axis in enumerate(axes):
                choice = parsed.get(axis)
                # JSON true/1 must not pass for a side: only the exact strings count.
                if isinstance(choice, str):
                    table[d, k] = sides.get(choice, -1)
    return {axis: table[which, k] for k, axis in enumerate(axes)}


def _usernames(ids: np.ndarray) -> dict[int, str]:
    names: dict[int, str] = {}
    for start in range(0, len(ids), _IDS_PER_QUERY):
        chunk = ids[start : start + _IDS_PER_QUERY].tolist()
        names.update(User.objects.filter(pk__in=chunk).values_list("pk", "username"))
    return names


def judgments_frame(*, project: Project) -> pd.DataFrame:
    """The project's current judgments, one row each, in `annotate.agreement`'s schema.

    ``seconds`` is the client-measured active time when the browser sent it,
    else submitted_at - shown_at; NaN for imported verdicts (no real timing).
    Axis columns are categoricals of "A" / "tie" / "B" (NaN: not given).
    """
    axes = list(project.rubric_axes)
    rows = _records(judgments_query(project=project), _JUDGMENT_TYPES)
    if len(rows["comparison_id"]) == 0:
        return agreement.empty_frame(axes)
    comparisons = _records(
        Comparison.objects.filter(project=project)
        .values("id", "gold", "len_a", "len_b")
        .order_by(),
        _COMPARISON_TYPES,
    )
    at = pd.Index(comparisons["id"]).get_indexer(rows["comparison_id"])
    if (at < 0).any():  # a judgment on another project's comparison: read those too
        missing = np.unique(rows["comparison_id"][at < 0]).tolist()
        extra = _records(
            Comparison.objects.filter(pk__in=missing)
            .values("id", "gold", "len_a", "len_b")
            .order_by(),
            _COMPARISON_TYPES,
        )
        comparisons = {c: np.concatenate([comparisons[c], extra[c]]) for c in comparisons}
        at = pd.Index(comparisons["id"]).get_indexer(rows["comparison_id"])
    # Annotators: sorted usernames as categories, as pd.Categorical(usernames) would give.
    code, ids = pd.factorize(rows["annotator_id"])
    names = _usernames(ids)
    by_name = sorted(range(len(ids)), key=lambda i: names[int(ids[i])])
    rank = np.empty(len(ids), np.int64)
    rank[by_name] = np.arange(len(ids))
    annotator = pd.Categorical.from_codes(
        rank[code], categories=[names[int(ids[i])] for i in by_name]
    )
    # Seconds exactly as pandas computed them from datetimes before:
    # active_ms / 1000, else whole seconds + the microsecond remainder / 1e6.
    whole, micro = np.divmod(_wall_micros(rows), 1e6)
    seconds = np.where(np.isnan(rows["active_ms"]), whole + micro / 1e6, rows["active_ms"] / 1000.0)
    codes = rows["codes"]  # overall * 4 + swapped * 2 + over_budget; >> floors negatives
    frame = pd.DataFrame(
        {
            "comparison": rows["comparison_id"],
            "annotator": annotator,
            "overall": codes >> 2,
            "swapped": (codes & 2).astype(bool),
            "seconds": seconds,
            "over_budget": (codes & 1).astype(bool),
            "len_a": comparisons["len_a"][at],
            "len_b": comparisons["len_b"][at],
            "gold": comparisons["gold"][at],
        },
        copy=False,  # the arrays are ours: no second copy into pandas blocks
    )
    sides = pd.Index(agreement.SIDES)
    for axis, side in _side_codes(rows["axes"], axes).items():
        frame[agreement.axis_column(axis)] = pd.Categorical.from_codes(side, categories=sides)
    return frame


def assignments_frame(*, project: Project) -> pd.DataFrame:
    """Assignment counts per (annotator, status), for skip rates.

    The index on (project, annotator, status) answers it without reading
    the assignments themselves.
    """
    rows = (
        Assignment.objects.filter(project=project)
        .values(annotator_name=F("annotator__username"), state=F("status"))
        .annotate(n=Count("id"))
        .order_by()
    )
    frame = pd.DataFrame.from_records(list(rows), columns=["annotator_name", "state", "n"])
    return frame.rename(columns={"annotator_name": "annotator", "state": "status"})
