"""`manage.py export_preferences PROJECT_SLUG --out PATH ...`: an adapter over `export_create`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.models import Project, User
from training import exports
from training.services import export_create


class Command(BaseCommand):
    help = (
        "Write a preference dataset (train + eval split by prompt) from a project's "
        "current judgments."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project_slug")
        parser.add_argument(
            "--out", required=True, type=Path, help="New (or empty) directory for the files."
        )
        parser.add_argument("--format", dest="fmt", choices=exports.FORMATS, default="jsonl")
        parser.add_argument(
            "--axis", default="overall", help="'overall' or one of the project's rubric axes."
        )
        parser.add_argument("--policy", choices=exports.POLICIES, default="majority")
        parser.add_argument("--min-judgments", type=int, default=1)
        parser.add_argument("--ties", choices=exports.TIES, default="drop")
        parser.add_argument(
            "--exclude-annotator",
            action="append",
            default=[],
            metavar="NAME",
            help="Drop this annotator's judgments (repeatable, or several names after one flag).",
            nargs="+",
        )
        parser.add_argument("--eval-fraction", type=float, default=0.1)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--user", help="Username recorded as the export's author.")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            project = Project.objects.get(slug=opts["project_slug"])
        except Project.DoesNotExist as exc:
            raise CommandError(f"no project with slug {opts['project_slug']!r}") from exc
        user = None
        if opts["user"]:
            user = User.objects.filter(username=opts["user"]).first()
            if user is None:
                raise CommandError(f"no user {opts['user']!r}")
        excluded = [name for group in opts["exclude_annotator"] for name in group]
        try:
            export = export_create(
                project=project,
                user=user,
                fmt=opts["fmt"],
                axis=opts["axis"],
                policy=opts["policy"],
                min_judgments=opts["min_judgments"],
                ties=opts["ties"],
                exclude_annotators=excluded,
                eval_fraction=opts["eval_fraction"],
                seed=opts["seed"],
                out_dir=opts["out"],
            )
        except ValidationError as exc:
            details = "; ".join(
                f"--{k.replace('_', '-')}: {' '.join(v)}" for k, v in exc.message_dict.items()
            )
            raise CommandError(f"invalid export parameters: {details}") from exc
        self.stdout.write(
            f"export {export.pk}: {export.n_train} train + {export.n_eval} eval records "
            f"({export.format}) written to {opts['out']}"
        )
        for name, sha in export.files.items():
            self.stdout.write(f"  {name}  sha256={sha}")
