"""The import service: the single path for getting comparisons (and judgments) in.

`comparisons_import` reads and validates the whole file first (no database),
then writes everything in one transaction with bulk inserts: one bad record
means nothing is written. Re-importing a file creates nothing.

Matching: a record with an explicit ``id`` matches the comparison with that
external id in the project (different content under the same id is an error);
a record without one matches on content (``content_hash``), so a second
judge's AlpacaEval file adds judgments to the SAME comparisons. When a match
stores A and B the other way round, the verdict is flipped to its orientation.

Imported judgments are written like submitted work: an AI-kind annotator
(created with an unusable password and an annotator membership), a submitted,
unswapped assignment (one per comparison and annotator, so a re-import cannot
duplicate it) and a judgment with ``source="import"``. ``slots_taken`` grows
with each new assignment so the assignment service's counter stays exact;
imported judgments may fill a comparison beyond the project's overlap.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from annotate.importers import (
    ImportValidationError,
    ParsedFile,
    Record,
    Verdict,
    group_records,
    parse_file,
)
from annotate.models import Assignment, Comparison, Judgment, Membership, Project, User

__all__ = ["DEFAULT_STRENGTH", "ImportResult", "ImportValidationError", "comparisons_import"]

# Strength given to a decisive preference whose strength the source does not
# say ("A"/"B", HH-RLHF chosen, AlpacaEval 1/2): "better" on the default scale.
DEFAULT_STRENGTH = 2
_CHUNK = 500  # ids per IN (...) query: stays under SQLite's bound-parameter limit
T = TypeVar("T")


@dataclass(frozen=True)
class ImportResult:
    project_slug: str
    project_created: bool
    file: str
    format: str
    records: int  # records read from the file
    comparisons_created: int
    comparisons_existing: int  # matched an existing comparison (by id or content)
    duplicates_in_file: int  # records that repeated an earlier one in the same file
    judgments_created: int
    judgments_existing: int  # that annotator already had a (submitted) assignment there
    records_without_verdict: int  # an annotator gave no verdict (e.g. AlpacaEval null)
    verdicts_ignored: int  # preferences in the file not imported (with_judgments=False)
    annotators_created: int
    annotators: tuple[str, ...]  # AI annotators whose verdicts the file carries

    @property
    def nothing_new(self) -> bool:
        return not (self.project_created or self.comparisons_created or self.judgments_created)


def comparisons_import(
    *,
    project_slug: str,
    path: Path | None = None,
    stream: IO[bytes] | None = None,
    filename: str = "",
    fmt: str = "auto",
    with_judgments: bool = False,
    created_by: User | None = None,
) -> ImportResult:
    """Import a file (``path``) or an upload (``stream`` + ``filename``) into a project.

    Creates the project with defaults when it does not exist (``created_by``,
    if given, becomes its ML member). Raises `ImportValidationError` (naming
    file, line or record, field) and writes nothing on any invalid input.
    """
    data, name = _read_input(path=path, stream=stream, filename=filename)
    parsed = parse_file(data, filename=name, fmt=fmt, with_judgments=with_judgments)
    # Parsing runs outside the transaction on purpose: on SQLite the
    # transaction holds the database write lock, which annotators need too.
    try:
        with transaction.atomic():
            return _write(parsed, project_slug=project_slug, created_by=created_by)
    except IntegrityError as exc:
        # Only a concurrent writer can get here (everything else was checked
        # first): the same rows were inserted meanwhile. Re-running is safe.
        raise ImportValidationError(
            f"another import into project {project_slug} wrote the same records meanwhile; "
            "nothing was imported, run it again",
            file=name,
        ) from exc


def _read_input(*, path: Path | None, stream: IO[bytes] | None, filename: str) -> tuple[bytes, str]:
    if (path is None) == (stream is None):
        raise TypeError("pass exactly one of path= or stream=")
    if path is not None:
        name = filename or str(path)
        try:
            return Path(path).read_bytes(), name
        except OSError as exc:
            raise ImportValidationError(
                f"cannot read the file: {exc.strerror or exc}", file=name
            ) from exc
    data = stream.read()  # type: ignore[union-attr]
    if not isinstance(data, bytes):
        raise TypeError("stream must be opened in binary mode")
    return data, filename or "<upload>"


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _project(slug: str, file: str, created_by: User | None) -> tuple[Project, bool]:
    project = Project.objects.filter(slug=slug).first()
    if project is not None:
        return project, False
    try:
        validate_slug(slug)
    except ValidationError as exc:
        raise ImportValidationError(
            f"{slug!r} is not a valid project slug (letters, digits, - and _)",
            file=file,
            field="project",
        ) from exc
    project = Project.objects.create(slug=slug, name=slug)
    if created_by is not None:
        Membership.objects.create(project=project, user=created_by, role=Membership.Role.ML)
    return project, True


def _ai_annotators(
    names: dict[str, int], parsed: ParsedFile, project: Project
) -> tuple[dict[str, User], int]:
    """AI accounts for the judges named in the file (name -> where it first appears)."""
    users = {u.username: u for u in User.objects.filter(username__in=list(names))}
    for name, where in names.items():
        unit = {parsed.unit: where}
        try:
            UnicodeUsernameValidator()(name)
        except ValidationError as exc:
            raise ImportValidationError(
                f"{name!r} is not a valid account name (letters, digits, @.+-_)",
                file=parsed.file,
                field="annotator",
                **unit,
            ) from exc
        if name in users and not users[name].is_ai:
            raise ImportValidationError(
                f"{name!r} is a human account; imported judgments belong to AI annotators, "
                "rename the judge",
                file=parsed.file,
                field="annotator",
                **unit,
            )
    created = 0
    for name in names:
        if name not in users:
            user = User(username=name, kind=User.Kind.AI)
            user.set_unusable_password()
            user.save()
            users[name] = user
            created += 1
        Membership.objects.get_or_create(
            project=project, user=users[name], role=Membership.Role.ANNOTATOR
        )
    return users, created


def _existing(project: Project, field: str, values: Iterable[str]) -> dict[str, Comparison]:
    found: dict[str, Comparison] = {}
    for chunk in _chunks(sorted(set(values))):
        rows = (
            Comparison.objects.filter(project=project, **{f"{field}__in": chunk})
            .only("id", "external_id", "content_hash", "response_a")
            .order_by("id")
        )
        for comparison in rows:
            found.setdefault(getattr(comparison, field), comparison)
    return found


def _overall(
    verdict: Verdict, flip: bool, max_strength: int, parsed: ParsedFile, where: int
) -> int:
    strength = min(DEFAULT_STRENGTH, max_strength) if verdict.strength is None else verdict.strength
    if strength > max_strength:
        raise ImportValidationError(
            f"strength {strength} is beyond the project's scale (at most {max_strength})",
            file=parsed.file,
            field="preference",
            **{parsed.unit: where},
        )
    side = -verdict.side if flip else verdict.side
    return side * strength


def _write(parsed: ParsedFile, *, project_slug: str, created_by: User | None) -> ImportResult:
    groups, duplicates = group_records(parsed)
    project, project_created = _project(project_slug, parsed.file, created_by)
    by_id = _existing(project, "external_id", (g.record.external_id for g in groups))
    by_hash = _existing(
        project, "content_hash", (g.record.content_hash for g in groups if not g.record.explicit_id)
    )

    # Resolve every group to an existing comparison or a new one (validation only).
    targets: list[Comparison | None] = []
    for group in groups:
        rec = group.record
        match = by_hash.get(rec.content_hash) if not rec.explicit_id else None
        clash = by_id.get(rec.external_id)
        if match is None and clash is not None and clash.content_hash != rec.content_hash:
            raise ImportValidationError(
                f"id {rec.external_id!r} already exists in project {project.slug} "
                "with other content",
                file=parsed.file,
                field="id",
                **{parsed.unit: rec.where},
            )
        targets.append(match or clash)

    names: dict[str, int] = {}
    for group in groups:
        for where, verdict in group.verdicts:
            names.setdefault(verdict.annotator, where)
    users, annotators_created = _ai_annotators(names, parsed, project) if names else ({}, 0)
    taken: set[tuple[int, int]] = set()
    existing_ids = [t.pk for t in targets if t is not None]
    if users and existing_ids:
        user_ids = [u.pk for u in users.values()]
        for chunk in _chunks(existing_ids):
            taken.update(
                Assignment.objects.filter(
                    comparison_id__in=chunk, annotator_id__in=user_ids
                ).values_list("comparison_id", "annotator_id")
            )

    # Plan the judgments: (group index, annotator, signed overall in the target's orientation).
    planned: list[tuple[int, User, int]] = []
    judgments_existing = 0
    for index, (group, target) in enumerate(zip(groups, targets, strict=True)):
        flip = target is not None and target.response_a != group.record.response_a
        for where, verdict in group.verdicts:
            user = users[verdict.annotator]
            overall = _overall(verdict, flip, project.max_strength, parsed, where)
            if target is not None and (target.pk, user.pk) in taken:
                judgments_existing += 1
                continue
            planned.append((index, user, overall))

    # --- writes ---------------------------------------------------------------
    per_group = Counter(index for index, _, _ in planned)
    new = [
        (index, _new_comparison(project, group.record, per_group[index]))
        for index, (group, target) in enumerate(zip(groups, targets, strict=True))
        if target is None
    ]
    Comparison.objects.bulk_create([c for _, c in new], batch_size=_CHUNK)
    if any(c.pk is None for _, c in new):  # backends without RETURNING
        pks = dict(Comparison.objects.filter(project=project).values_list("external_id", "id"))
        for _, comparison in new:
            comparison.pk = pks[comparison.external_id]
    pk_of = {index: c.pk for index, c in new}
    pk_of.update({i: t.pk for i, t in enumerate(targets) if t is not None})

    now = timezone.now()
    assignments = [
        Assignment(
            project=project,
            comparison_id=pk_of[i],
            annotator=user,
            swapped=False,
            status=Assignment.Status.SUBMITTED,
            shown_at=now,
            closed_at=now,
            lease_expires_at=None,
        )
        for i, user, _ in planned
    ]
    Assignment.objects.bulk_create(assignments, batch_size=_CHUNK)
    _fill_assignment_pks(assignments)
    Judgment.objects.bulk_create(
        [
            Judgment(
                project=project,
                comparison_id=a.comparison_id,
                assignment=a,
                annotator=a.annotator,
                overall=overall,
                swapped=False,
                source=Judgment.Source.IMPORT,
                shown_at=now,
                submitted_at=now,
            )
            for a, (_, _, overall) in zip(assignments, planned, strict=True)
        ],
        batch_size=_CHUNK,
    )
    _bump_slots(Counter(pk_of[i] for i, _, _ in planned if targets[i] is not None))

    return ImportResult(
        project_slug=project.slug,
        project_created=project_created,
        file=parsed.file,
        format=parsed.format,
        records=len(parsed.records),
        comparisons_created=len(new),
        comparisons_existing=sum(t is not None for t in targets),
        duplicates_in_file=duplicates,
        judgments_created=len(planned),
        judgments_existing=judgments_existing,
        records_without_verdict=sum(r.verdict_null for r in parsed.records),
        verdicts_ignored=parsed.verdicts_ignored,
        annotators_created=annotators_created,
        annotators=tuple(names),
    )


def _new_comparison(project: Project, rec: Record, slots: int) -> Comparison:
    return Comparison(
        project=project,
        external_id=rec.external_id,
        content_hash=rec.content_hash,
        prompt=rec.prompt,
        prompt_messages=rec.prompt_messages,
        response_a=rec.response_a,
        response_b=rec.response_b,
        model_a=rec.model_a,
        model_b=rec.model_b,
        metadata=rec.metadata,
        gold=rec.gold,
        slots_taken=slots,
    )


def _fill_assignment_pks(assignments: list[Assignment]) -> None:
    if not any(a.pk is None for a in assignments):
        return
    wanted = defaultdict(list)
    for a in assignments:
        wanted[a.annotator_id].append(a.comparison_id)
    pks: dict[tuple[int, int], int] = {}
    for annotator_id, comparison_ids in wanted.items():
        for chunk in _chunks(comparison_ids):
            pks.update(
                ((c, annotator_id), pk)
                for pk, c in Assignment.objects.filter(
                    annotator_id=annotator_id, comparison_id__in=chunk
                ).values_list("id", "comparison_id")
            )
    for a in assignments:
        a.pk = pks[(a.comparison_id, a.annotator_id)]


def _bump_slots(increments: Counter[int]) -> None:
    """slots_taken += n on existing comparisons: one UPDATE per distinct n, not per row."""
    by_amount: dict[int, list[int]] = defaultdict(list)
    for pk, amount in increments.items():
        by_amount[amount].append(pk)
    for amount, pks in by_amount.items():
        for chunk in _chunks(pks):
            Comparison.objects.filter(pk__in=chunk).update(slots_taken=F("slots_taken") + amount)
