"""`import_comparisons PROJECT_SLUG FILE`: a thin adapter over `comparisons_import`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.importers import FORMATS
from annotate.models import Project
from annotate.services.imports import ImportResult, ImportValidationError, comparisons_import


class Command(BaseCommand):
    help = (
        "Import comparisons from a jsonl, csv, HH-RLHF or AlpacaEval file "
        "(.gz read transparently). "
        "All or nothing: one invalid record imports nothing. Re-importing creates nothing. "
        "Creates the project with defaults if it does not exist."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "project_slug", help="project to import into (created with defaults if missing)"
        )
        parser.add_argument("file", type=Path, help="the file to import")
        # No argparse `choices`: the service validates and names the valid
        # formats, so the command and the API give the same message.
        parser.add_argument(
            "--format",
            dest="fmt",
            default="auto",
            help=f"auto (default: by extension, then content) or one of: {', '.join(FORMATS)}",
        )
        parser.add_argument(
            "--with-judgments",
            action="store_true",
            help="also import the file's preferences as judgments by AI annotators",
        )

    def handle(
        self,
        *args: Any,
        project_slug: str,
        file: Path,
        fmt: str,
        with_judgments: bool,
        **options: Any,
    ) -> None:
        started = time.perf_counter()
        try:
            result = comparisons_import(
                project_slug=project_slug, path=file, fmt=fmt, with_judgments=with_judgments
            )
        except ImportValidationError as exc:
            raise CommandError(f"nothing imported: {exc}") from exc
        for line in describe(result):
            self.stdout.write(line)
        self.stdout.write(f"done in {time.perf_counter() - started:.2f} s")


def describe(result: ImportResult) -> list[str]:
    """Human-readable lines saying what an import did."""
    lines = []
    if result.project_created:
        project = Project.objects.get(slug=result.project_slug)
        lines.append(
            f"created project {project.slug} with defaults ({len(project.scale)}-point scale, "
            f"axes {', '.join(project.rubric_axes)}, overlap {project.overlap})"
        )
    lines.append(f"read {result.records} records from {result.file} as {result.format}")
    lines.append(
        f"{result.comparisons_created} new comparisons "
        f"({result.comparisons_existing} already present)"
    )
    if result.duplicates_in_file:
        lines.append(
            f"{result.duplicates_in_file} records repeated an earlier one in the file "
            "(first one kept)"
        )
    if result.annotators:
        n = len(result.annotators)
        lines.append(
            f"{result.judgments_created} new judgments "
            f"({result.judgments_existing} already present) "
            f"by {n} AI annotator{'s' if n > 1 else ''}: {', '.join(result.annotators)} "
            f"({result.annotators_created} new)"
        )
    if result.records_without_verdict:
        lines.append(
            f"{result.records_without_verdict} records without a verdict: no judgment for them"
        )
    if result.verdicts_ignored:
        lines.append(
            f"the file carries {result.verdicts_ignored} preferences; "
            "pass --with-judgments to import them as judgments"
        )
    if result.nothing_new:
        lines.append("nothing new: everything in the file was already imported")
    return lines
