"""Format readers: bytes of a file -> validated records. Pure: no database.

Every reader either returns *all* records of a file or raises
`ImportValidationError` naming the file, the line (or record number of a JSON
list) and the field, so the import service can stay all-or-nothing.

Formats (`FORMATS`; `auto` picks one from the extension, then the content):

- ``jsonl``: one JSON object a line (a single JSON list of objects also works).
  Keys: ``prompt`` (text, or chat turns ``[{"role", "content"}]``),
  ``response_a``, ``response_b`` (required); ``id``, ``model_a``, ``model_b``,
  ``gold`` (``A``/``B``/``tie`` or -1/0/1), ``metadata`` (an object) optional.
  With judgments: ``annotator`` and ``preference`` (``A``/``B``/``tie``, or a
  signed integer on the project's scale: negative = A better, the magnitude is
  the strength). Unknown keys are an error (a typo must not drop data).
  Rows may repeat an ``id`` only to carry judgments of *different* annotators
  on the same content (long format); any other repeated id is an error.
- ``csv``: a header line with the same column names; ``metadata`` holds a JSON
  object as text; an empty cell means "absent".
- ``hh-rlhf``: Anthropic HH-RLHF lines ``{"chosen": ..., "rejected": ...}``.
- ``alpaca-eval``: the JSON list of AlpacaEval annotations.

The two public-dataset readers live in `annotate.importers_public`.

A preference of unknown strength (``A``/``B`` in jsonl/csv, every HH-RLHF
pair, AlpacaEval 1 and 2) is stored as ``better`` (strength 2, clamped to the
project's scale). AlpacaEval soft preferences strictly between 1 and 1.5 (or
1.5 and 2) become ``slightly better`` (strength 1) for that side.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

from annotate.import_records import (
    Ctx,
    Group,
    ImportValidationError,
    ParsedFile,
    Record,
    Verdict,
    comparison_content_hash,
    decode_bytes,
    group_records,
    json_list,
    json_object,
    make_record,
    nonblank_lines,
    text_field,
)
from annotate.importers_public import (
    HH_MARKER,
    hh_messages,
    read_alpaca_eval,
    read_hh_rlhf,
    split_hh_pair,
)

__all__ = [
    "FORMATS",
    "HH_MARKER",
    "Group",
    "ImportValidationError",
    "ParsedFile",
    "Record",
    "Verdict",
    "comparison_content_hash",
    "decode_bytes",
    "detect_format",
    "group_records",
    "hh_messages",
    "parse_file",
    "split_hh_pair",
]

FORMATS = ("jsonl", "csv", "hh-rlhf", "alpaca-eval")
_COLUMNS = (
    "id",
    "prompt",
    "response_a",
    "response_b",
    "model_a",
    "model_b",
    "gold",
    "metadata",
    "annotator",
    "preference",
)
_ROLES = ("system", "user", "assistant")
_SIDES = {"a": -1, "tie": 0, "b": 1}


def detect_format(text: str, filename: str) -> str:
    """Extension first (``.gz`` ignored), then a peek at the content."""
    name = filename.lower().removesuffix(".gz")
    ext = os.path.splitext(name)[1]
    head = text.lstrip()[:1]
    if ext == ".csv":
        return "csv"
    if head == "[":
        sample = text[:65536]
        return "alpaca-eval" if '"output_1"' in sample and '"instruction"' in sample else "jsonl"
    if head == "{" or ext in (".jsonl", ".ndjson", ".json"):
        first = next(nonblank_lines(text), (0, ""))[1]
        try:
            keys = json.loads(first)
        except ValueError:
            return "jsonl"  # the jsonl reader reports the broken line
        return (
            "hh-rlhf"
            if isinstance(keys, dict) and {"chosen", "rejected"} <= keys.keys()
            else "jsonl"
        )
    if "prompt" in text.split("\n", 1)[0]:
        return "csv"
    raise ImportValidationError(
        f"cannot detect the format (extension '{ext or 'none'}'); "
        f"pass one of: {', '.join(FORMATS)}",
        file=filename,
        field="format",
    )


def _gold(ctx: Ctx, where: int, value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().lower() in _SIDES:
        return _SIDES[value.strip().lower()]
    if isinstance(value, str) and value.strip() in ("-1", "0", "1", "+1"):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value in (-1, 0, 1):
        return value
    raise ctx.err(where, "gold", f"must be A, B, tie, -1, 0 or 1, got {value!r}")


def _preference(ctx: Ctx, where: int, value: Any) -> tuple[int, int | None] | None:
    """-> (side, strength or None when unknown), or None for no verdict."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _SIDES:
            return _SIDES[word], None
        try:
            value = int(word)
        except ValueError:
            raise ctx.err(
                where, "preference", f"must be A, B, tie or a signed integer, got {value!r}"
            ) from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ctx.err(where, "preference", f"must be A, B, tie or a signed integer, got {value!r}")
    return (0, None) if value == 0 else ((1 if value > 0 else -1), abs(value))


def _messages(ctx: Ctx, where: int, value: list[Any]) -> list[dict[str, str]]:
    if not value:
        raise ctx.err(where, "prompt", "a chat prompt needs at least one turn")
    out = []
    for turn in value:
        if not isinstance(turn, dict) or turn.get("role") not in _ROLES:
            raise ctx.err(
                where, "prompt", f"chat turns are objects with a role in {_ROLES} and a content"
            )
        out.append(
            {"role": turn["role"], "content": text_field(ctx, where, "prompt", turn.get("content"))}
        )
    return out


# --- readers -----------------------------------------------------------------------


def _generic(
    ctx: Ctx, where: int, obj: dict[str, Any], *, from_csv: bool, with_judgments: bool
) -> Record:
    unknown = sorted(set(obj) - set(_COLUMNS))
    if unknown:
        raise ctx.err(
            where,
            unknown[0],
            f"unknown {'column' if from_csv else 'key'}; known: {', '.join(_COLUMNS)}",
        )
    if from_csv:  # an empty cell is an absent optional value
        obj = {
            k: (None if v == "" and k not in ("response_a", "response_b") else v)
            for k, v in obj.items()
        }
    raw_prompt, messages = obj.get("prompt"), None
    if isinstance(raw_prompt, list):
        messages = _messages(ctx, where, raw_prompt)
        prompt = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
    else:
        prompt = text_field(ctx, where, "prompt", raw_prompt, non_empty=True)
    a = text_field(ctx, where, "response_a", obj.get("response_a"))
    b = text_field(ctx, where, "response_b", obj.get("response_b"))
    ext_id = obj.get("id")
    if isinstance(ext_id, int) and not isinstance(ext_id, bool):
        ext_id = str(ext_id)
    if ext_id is not None:
        ext_id = text_field(ctx, where, "id", ext_id, non_empty=True, max_length=200).strip()
    metadata = obj.get("metadata")
    if from_csv and metadata is not None:
        try:
            metadata = json.loads(metadata)
        except json.JSONDecodeError as exc:
            raise ctx.err(where, "metadata", f"not valid JSON: {exc.msg}") from exc
    if metadata is not None and not isinstance(metadata, dict):
        raise ctx.err(where, "metadata", f"must be a JSON object, got {type(metadata).__name__}")
    verdict, verdict_null = None, False
    if with_judgments and (obj.get("annotator") is not None or obj.get("preference") is not None):
        annotator = text_field(
            ctx, where, "annotator", obj.get("annotator"), non_empty=True, max_length=150
        ).strip()
        pref = _preference(ctx, where, obj.get("preference"))
        verdict_null = pref is None
        verdict = None if pref is None else Verdict(annotator, pref[0], pref[1])
    return make_record(
        ctx,
        where,
        prompt=prompt,
        a=a,
        b=b,
        prefix="sha",
        ext_id=ext_id,
        prompt_messages=messages,
        model_a=text_field(
            ctx, where, "model_a", obj.get("model_a"), required=False, max_length=200
        ),
        model_b=text_field(
            ctx, where, "model_b", obj.get("model_b"), required=False, max_length=200
        ),
        gold=_gold(ctx, where, obj.get("gold")),
        metadata=metadata or {},
        verdict=verdict,
        verdict_null=verdict_null,
    )


def _read_jsonl(ctx: Ctx, text: str, with_judgments: bool) -> list[Record]:
    if text.lstrip().startswith("["):  # one JSON list of the same objects
        ctx.unit = "record"
        return [
            _generic(ctx, n, obj, from_csv=False, with_judgments=with_judgments)
            for n, obj in enumerate(json_list(ctx, text), 1)
        ]
    return [
        _generic(ctx, n, json_object(ctx, n, raw), from_csv=False, with_judgments=with_judgments)
        for n, raw in nonblank_lines(text)
    ]


def _read_csv(ctx: Ctx, text: str, with_judgments: bool) -> list[Record]:
    # One cell may legitimately hold megabytes (a long answer); the module's
    # default cap is 128 KiB. The limit is process-wide, so only ever raise it.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
        for required in ("prompt", "response_a", "response_b"):
            if required not in header:
                raise ctx.err(1, required, "missing required column in the header")
        records, start = [], reader.line_num + 1
        for row in reader:
            if row and any(cell.strip() for cell in row):
                if len(row) != len(header):
                    raise ctx.err(
                        start, None, f"expected {len(header)} cells like the header, got {len(row)}"
                    )
                records.append(
                    _generic(
                        ctx,
                        start,
                        dict(zip(header, row, strict=True)),
                        from_csv=True,
                        with_judgments=with_judgments,
                    )
                )
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ctx.err(reader.line_num, None, f"malformed CSV: {exc}") from exc
    return records


def parse_file(
    data: bytes, *, filename: str, fmt: str = "auto", with_judgments: bool = False
) -> ParsedFile:
    """Decode, detect and read a whole file; raises on the first invalid record."""
    if fmt not in ("auto", *FORMATS):
        raise ImportValidationError(
            f"unknown format {fmt!r}; valid formats: auto, {', '.join(FORMATS)}",
            file=filename,
            field="format",
        )
    text = decode_bytes(data, file=filename)
    fmt = detect_format(text, filename) if fmt == "auto" else fmt
    ctx, ignored = Ctx(file=filename), 0
    if fmt == "alpaca-eval":
        records, ignored = read_alpaca_eval(ctx, text, with_judgments)
    elif fmt == "hh-rlhf":
        records = read_hh_rlhf(ctx, text, with_judgments)
        ignored = 0 if with_judgments else len(records)
    elif fmt == "csv":
        records = _read_csv(ctx, text, with_judgments)
    else:
        records = _read_jsonl(ctx, text, with_judgments)
    if not records:
        raise ImportValidationError("the file has no records", file=filename)
    return ParsedFile(
        file=filename, format=fmt, unit=ctx.unit, records=records, verdicts_ignored=ignored
    )
