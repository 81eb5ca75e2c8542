"""The shape of imported data, shared by every format reader. Pure: no database.

`Record` is one validated comparison (plus, optionally, one annotator's
verdict) as read from a file; `group_records` folds a file's records into one
`Group` per comparison. `ImportValidationError` names the file, the line (or
record number of a JSON list) and the field of the first invalid input.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


class ImportValidationError(Exception):
    """Bad input; names the file, the line or record, and the field."""

    def __init__(
        self,
        message: str,
        *,
        file: str,
        line: int | None = None,
        record: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message, self.file, self.line, self.record, self.field = (
            message,
            file,
            line,
            record,
            field,
        )
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [self.file or "<input>"]
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.field:
            where.append(f"field '{self.field}'")
        return f"{', '.join(where)}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "record": self.record,
            "field": self.field,
            "message": self.message,
        }


def comparison_content_hash(prompt: str, a: str, b: str) -> str:
    """sha256 of the prompt and both responses, independent of their order."""
    return hashlib.sha256("\x00".join([prompt, *sorted([a, b])]).encode()).hexdigest()


@dataclass(frozen=True)
class Verdict:
    """One annotator's preference, oriented like the record it came with."""

    annotator: str
    side: int  # -1 A, 0 tie, +1 B
    strength: int | None  # None: unknown, stored as "better" (see module docstring)


@dataclass(frozen=True)
class Record:
    where: int  # line number, or record number for JSON lists
    external_id: str
    explicit_id: bool  # False: derived from the content hash
    prompt: str
    response_a: str
    response_b: str
    content_hash: str
    prompt_messages: list[dict[str, str]] | None = None
    model_a: str = ""
    model_b: str = ""
    gold: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    verdict: Verdict | None = None
    verdict_null: bool = False  # an annotator gave no verdict (e.g. AlpacaEval null)


@dataclass(frozen=True)
class ParsedFile:
    file: str
    format: str
    unit: str  # "line" or "record": how `Record.where` counts
    records: list[Record]
    verdicts_ignored: int = 0  # preferences present but not read (no --with-judgments)


@dataclass
class Group:
    """The records of one file that describe the same comparison."""

    record: Record  # the first one; its A/B order is the group's orientation
    verdicts: list[tuple[int, Verdict]] = field(
        default_factory=list
    )  # (where, oriented like `record`)


@dataclass
class Ctx:
    file: str
    unit: str = "line"

    def err(self, where: int | None, fld: str | None, message: str) -> ImportValidationError:
        key = "line" if self.unit == "line" else "record"
        return ImportValidationError(message, file=self.file, field=fld, **{key: where})


# --- bytes -> text -----------------------------------------------------------


def decode_bytes(data: bytes, *, file: str) -> str:
    """gzip (by magic bytes, whatever the name) -> UTF-8 text without BOM; empty is an error."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ImportValidationError(f"not a valid gzip file ({exc})", file=file) from exc
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        hint = (
            " (it looks like UTF-16)"
            if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
            else ""
        )
        raise ImportValidationError(
            f"not valid UTF-8{hint}: byte 0x{data[exc.start]:02x} at column {column}; "
            "save the file as UTF-8",
            file=file,
            line=line,
        ) from exc
    if not text.strip():
        raise ImportValidationError("the file is empty: no records to import", file=file)
    return text


def nonblank_lines(text: str) -> Iterator[tuple[int, str]]:
    # Split on "\n" only: str.splitlines() would also split on U+2028 and
    # friends, which JSON allows unescaped inside strings.
    for number, line in enumerate(text.split("\n"), 1):
        if line.strip():
            yield number, line


def text_field(
    ctx: Ctx,
    where: int,
    fld: str,
    value: Any,
    *,
    required: bool = True,
    non_empty: bool = False,
    max_length: int | None = None,
) -> str:
    if value is None:
        if required:
            raise ctx.err(where, fld, "missing required field")
        return ""
    if not isinstance(value, str):
        raise ctx.err(where, fld, f"must be a string, got {type(value).__name__}")
    if (
        "\x00" in value
    ):  # PostgreSQL text cannot hold NUL, and the content hash uses it as separator
        raise ctx.err(where, fld, "contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ctx.err(where, fld, "contains an invalid \\u escape (lone surrogate)") from exc
    if non_empty and not value.strip():
        raise ctx.err(where, fld, "must not be empty")
    if max_length is not None and len(value) > max_length:
        raise ctx.err(where, fld, f"longer than {max_length} characters")
    return value


def json_object(ctx: Ctx, where: int, raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ctx.err(
            where, None, f"invalid JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}"
        ) from exc
    if not isinstance(value, dict):
        raise ctx.err(where, None, f"expected a JSON object, got {type(value).__name__}")
    return value


def make_record(
    ctx: Ctx,
    where: int,
    *,
    prompt: str,
    a: str,
    b: str,
    prefix: str,
    ext_id: str | None = None,
    **extra: Any,
) -> Record:
    digest = comparison_content_hash(prompt, a, b)
    return Record(
        where=where,
        external_id=ext_id or f"{prefix}-{digest[:16]}",
        explicit_id=ext_id is not None,
        prompt=prompt,
        response_a=a,
        response_b=b,
        content_hash=digest,
        **extra,
    )


def json_list(ctx: Ctx, text: str) -> list[Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportValidationError(
            f"invalid JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}",
            file=ctx.file,
            line=exc.lineno,
        ) from exc
    if not isinstance(data, list):
        raise ImportValidationError(
            f"expected a JSON list of records, got {type(data).__name__}", file=ctx.file
        )
    if not data:
        raise ImportValidationError(
            "the file is empty: the JSON list has no records", file=ctx.file
        )
    return data


def group_records(parsed: ParsedFile) -> tuple[list[Group], int]:
    """Records -> one group per comparison, and the number of records that added nothing.

    Records without an id share a group when their content is the same (a
    duplicate pair in a file is imported once; its first verdict per annotator
    wins). A repeated explicit id is allowed only to add another annotator's
    verdict on the same content.
    """
    ctx = Ctx(file=parsed.file, unit=parsed.unit)
    groups: dict[str, Group] = {}
    seen: dict[tuple[str, str], int] = {}  # (external id, annotator) -> where
    duplicates = 0
    for rec in parsed.records:
        group = groups.get(rec.external_id)
        if group is None:
            group = groups[rec.external_id] = Group(record=rec)
        else:
            first = group.record
            if first.content_hash != rec.content_hash:
                raise ctx.err(
                    rec.where,
                    "id",
                    f"id {rec.external_id!r} already used with other content "
                    f"at {parsed.unit} {first.where}",
                )
            if rec.explicit_id and rec.verdict is None and not rec.verdict_null:
                raise ctx.err(
                    rec.where,
                    "id",
                    f"duplicate id {rec.external_id!r} (first at {parsed.unit} "
                    f"{first.where}, again at {parsed.unit} {rec.where})",
                )
        if rec.verdict is None:
            duplicates += group.record is not rec and not rec.verdict_null
            continue
        key = (rec.external_id, rec.verdict.annotator)
        if key in seen:
            if rec.explicit_id:
                raise ctx.err(
                    rec.where,
                    "annotator",
                    f"annotator {rec.verdict.annotator!r} already judged id "
                    f"{rec.external_id!r} at {parsed.unit} {seen[key]}",
                )
            duplicates += 1
            continue
        seen[key] = rec.where
        flip = rec.response_a != group.record.response_a  # same content, other order
        verdict = Verdict(
            rec.verdict.annotator,
            -rec.verdict.side if flip else rec.verdict.side,
            rec.verdict.strength,
        )
        group.verdicts.append((rec.where, verdict))
    return list(groups.values()), duplicates
