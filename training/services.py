"""Business rules of the training app: exports and training runs.

Keyword-only, typed, transactional functions named `<entity>_<action>`; views,
the API and commands only adapt their input to these.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from annotate.models import Judgment, Project, User
from training import export_files, exports
from training.models import DatasetExport, TrainingRun

log = logging.getLogger(__name__)


def export_dir(export: DatasetExport) -> Path:
    """Absolute directory of an export (`path` is relative to ARTIFACTS_ROOT unless absolute)."""
    path = Path(export.path)
    return path if path.is_absolute() else Path(settings.ARTIFACTS_ROOT) / path


@transaction.atomic
def export_create(
    *,
    project: Project,
    user: User | None,
    fmt: str = "jsonl",
    axis: str = "overall",
    policy: str = "majority",
    min_judgments: int = 1,
    ties: str = "drop",
    exclude_annotators: Iterable[str] = (),
    eval_fraction: float = 0.1,
    seed: int = 0,
    out_dir: Path | None = None,
) -> DatasetExport:
    """Write a preference dataset of `project` and record it.

    Files go to ARTIFACTS_ROOT/exports/<id> (or `out_dir`, used by the CLI,
    which must not exist yet or be empty). They are first written to a
    temporary sibling and renamed into place, and the row is created in the
    same transaction: a failure leaves neither files nor a row behind.
    Raises `ValidationError` (a field -> messages dict) on bad parameters.
    """
    params = exports.ExportParams(
        fmt=fmt,
        axis=axis,
        policy=policy,
        min_judgments=min_judgments,
        ties=ties,
        exclude_annotators=tuple(sorted(set(exclude_annotators))),
        eval_fraction=eval_fraction,
        seed=seed,
    )
    try:
        params.validate(axes=list(project.rubric_axes or []))
    except exports.ExportParamsError as exc:
        raise ValidationError(exc.errors) from exc
    unknown = set(params.exclude_annotators) - set(
        Judgment.objects.filter(
            project=project, annotator__username__in=params.exclude_annotators
        ).values_list("annotator__username", flat=True)
    )
    if unknown:
        # A typo would otherwise silently export the labels one meant to drop.
        raise ValidationError(
            {"exclude_annotators": [f"no judgments by: {', '.join(sorted(unknown))}"]}
        )
    if (
        out_dir is not None
        and out_dir.exists()
        and (not out_dir.is_dir() or any(out_dir.iterdir()))
    ):
        raise ValidationError({"out": [f"{out_dir} exists and is not an empty directory"]})

    comparisons = exports.load_comparisons(project)
    records, skipped = exports.build_records(comparisons, params, max_strength=project.max_strength)
    train, held_out = exports.split_by_prompt(
        records, eval_fraction=params.eval_fraction, seed=params.seed
    )
    stats = {
        "comparisons": len(comparisons),
        "judgments": sum(len(c.votes) for c in comparisons),
        "skipped": dict(sorted(skipped.items())),
    }

    export = DatasetExport.objects.create(
        project=project, created_by=user, format=params.fmt, params=params.as_dict(), path=""
    )
    root = Path(settings.ARTIFACTS_ROOT).resolve()
    final = Path(out_dir).resolve() if out_dir is not None else root / "exports" / str(export.pk)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.partial-{uuid.uuid4().hex}"
    placed = False
    try:
        files = export_files.write_export(
            tmp,
            train=train,
            held_out=held_out,
            params=params,
            project_slug=project.slug,
            max_strength=project.max_strength,
            stats=stats,
        )
        if final.exists():  # an empty directory given as --out
            final.rmdir()
        tmp.rename(final)
        placed = True
        export.path = str(final.relative_to(root)) if final.is_relative_to(root) else str(final)
        export.n_train = len(train)
        export.n_eval = len(held_out)
        export.files = files
        export.save(update_fields=["path", "n_train", "n_eval", "files"])
    except BaseException:
        # The row rolls back with this transaction; the files must go with it.
        shutil.rmtree(final if placed else tmp, ignore_errors=True)
        raise
    return export


@transaction.atomic
def run_create(
    *,
    user: User,
    kind: str,
    project: Project | None = None,
    export: DatasetExport | None = None,
    data_path: str = "",
    config: dict[str, Any] | None = None,
    name: str = "",
) -> TrainingRun:
    """Record a queued training run and enqueue it once the row is committed.

    The data is either an export of `project` or, for staff only, a JSONL
    path on the workers' disk (an arbitrary server path is not something a
    project member may point a job at). The config is stored as given; the
    trainers' config dataclasses validate it when the job starts.
    """
    errors: dict[str, list[str]] = {}
    if kind not in TrainingRun.Kind.values:
        errors["kind"] = [f"must be one of {', '.join(TrainingRun.Kind.values)}"]
    if (export is None) == (not data_path):
        errors["export"] = ["give exactly one of export or data_path"]
    if export is not None and project is not None and export.project_id != project.pk:
        errors["export"] = ["the export belongs to another project"]
    if data_path and not user.is_staff:
        errors["data_path"] = ["only staff may train on a server path; use an export"]
    if config is not None and not isinstance(config, dict):
        errors["config"] = ["must be a JSON object"]
    if errors:
        raise ValidationError(errors)
    run = TrainingRun.objects.create(
        project=project
        if project is not None
        else (export.project if export is not None else None),
        kind=kind,
        name=name,
        export=export,
        data_path=data_path,
        config=dict(config or {}),
        created_by=user,
    )
    # Enqueue after commit: a worker must never pick up a run it cannot read.
    transaction.on_commit(partial(run_enqueue, run_id=run.pk))
    return run


def run_enqueue(*, run_id: int) -> str | None:
    """Send a run to the Celery training queue; returns the task id.

    `training.tasks` is imported lazily (it pulls in the training stack's
    entry points); when it is not there the run simply stays queued.
    """
    try:
        from training.tasks import run_training  # type: ignore[attr-defined]
    except ImportError:
        log.warning("training.tasks.run_training is not available; run %s stays queued", run_id)
        return None
    result = run_training.delay(run_id)
    TrainingRun.objects.filter(pk=run_id).update(celery_task_id=str(result.id))
    return str(result.id)


@transaction.atomic
def run_cancel(*, run: TrainingRun, user: User) -> TrainingRun:
    """Ask a run to stop. The trainer reads the flag every step (cooperative:
    the embedded broker cannot revoke); a run no worker has started yet is
    cancelled at once."""
    run = TrainingRun.objects.select_for_update().get(pk=run.pk)
    if not run.is_active:
        return run
    run.cancel_requested = True
    fields = ["cancel_requested"]
    if run.status == TrainingRun.Status.QUEUED:
        run.status = TrainingRun.Status.CANCELLED
        run.finished_at = timezone.now()
        fields += ["status", "finished_at"]
    run.save(update_fields=fields)
    log.info("run %s: cancel requested by %s", run.pk, user)
    return run
