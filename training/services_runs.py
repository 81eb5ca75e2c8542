"""Business rules of a training run's life: launch, start, progress, heartbeat, finish, reaping.

`training.services.run_create` records a queued run; everything after that
lives here. The Celery task (`training.tasks`) and the accelerate entry point
(`training.launch`) are adapters over these functions; so are the run pages.

State machine (only these transitions happen, each a conditional write so two
processes never both win):

    queued --run_start--> running --run_finish--> succeeded | failed | cancelled
    queued --run_cancel (services.py)--> cancelled
    running --run_fail_stale (no heartbeat for N s)--> failed ("worker lost ...")

No torch here: the web pages import this module.
"""
from __future__ import annotations

import io
import math
import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotate.models import Project, User
from training.config import ConfigError
from training.models import DatasetExport, MetricPoint, TrainingRun
from training.registry import KINDS, Kind
from training.services import run_create

Status = TrainingRun.Status
# Launch options stored next to the trainer's fields in `TrainingRun.config`
# (they say how to run the trainer, not what it computes).
LAUNCH_KEYS = ("num_gpus",)


# --- tunables (settings first, then the environment, then the default) -------
def _seconds(name: str, default: float) -> float:
    value: Any = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ImproperlyConfigured(f"{name}={value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ImproperlyConfigured(f"{name}={value!r} must be a positive number of seconds")
    return seconds


def heartbeat_interval_s() -> float:
    """How often a running task writes `heartbeat_at` (TRAINING_HEARTBEAT_S, default 10)."""
    return _seconds("TRAINING_HEARTBEAT_S", 10.0)


def stale_after_s() -> float:
    """A running run without a heartbeat for this long is failed (TRAINING_STALE_AFTER_S, default 120)."""
    return _seconds("TRAINING_STALE_AFTER_S", 120.0)


def flush_interval_s() -> float:
    """Metrics and progress are written at most this often (TRAINING_FLUSH_S, default 0.5)."""
    return _seconds("TRAINING_FLUSH_S", 0.5)


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become None (PostgreSQL's jsonb rejects them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# --- launch --------------------------------------------------------------------
def kind_for(name: str) -> Kind:
    """The registered trainer kind `name`; ValidationError names the known ones."""
    kind = KINDS.get(name)
    if kind is None:
        raise ValidationError({"kind": [f"no trainer is registered for {name!r} (known: {', '.join(KINDS)})"]})
    return kind


def run_validate_config(*, kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The full, validated config (defaults filled in, launch options kept); ValidationError per field."""
    trainer_fields, num_gpus = split_launch_options(config)
    try:
        validated = kind_for(kind).config.from_dict(trainer_fields).to_dict()
    except ConfigError as exc:
        raise ValidationError({name: [msg] for name, msg in exc.errors.items()}) from exc
    if num_gpus != 1:
        validated["num_gpus"] = num_gpus
    return validated


def split_launch_options(config: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """(trainer fields, number of GPU processes); ValidationError on a bad `num_gpus`."""
    fields = dict(config)
    raw = fields.pop("num_gpus", None)
    if raw is None or raw == "":
        return fields, 1
    try:
        num_gpus = int(raw)
    except (TypeError, ValueError):
        num_gpus = 0
    if isinstance(raw, bool) or num_gpus < 1 or num_gpus > 64 or str(num_gpus) != str(raw).strip():
        raise ValidationError({"num_gpus": [f"expected a whole number of GPUs from 1 to 64, got {raw!r}"]})
    return fields, num_gpus


@transaction.atomic
def run_launch(
    *, user: User, kind: str, project: Project | None, export: DatasetExport | None, data_path: str = "",
    config: Mapping[str, Any], name: str = "",
) -> TrainingRun:
    """Validate the hyperparameters with the kind's config dataclass, then queue the run.

    The stored config is the complete validated one (every default written
    out), so the run page shows exactly what was trained.
    """
    validated = run_validate_config(kind=kind, config=config)
    return run_create(user=user, kind=kind, project=project, export=export, data_path=data_path,
                      config=validated, name=name)


# --- a worker's side -------------------------------------------------------------
@transaction.atomic
def run_start(*, run_id: int, worker_host: str, task_id: str = "") -> TrainingRun | None:
    """Claim a queued run for this worker; None when it is not (or no longer) startable.

    A run cancelled while queued, or already claimed (a redelivered message),
    is left alone: training is never run twice.
    """
    now = timezone.now()
    claimed = TrainingRun.objects.filter(pk=run_id, status=Status.QUEUED, cancel_requested=False).update(
        status=Status.RUNNING, started_at=now, heartbeat_at=now, worker_host=worker_host[:200],
        celery_task_id=task_id[:64] if task_id else F("celery_task_id"), artifacts_dir=f"runs/{run_id}",
        step=0, progress=0.0, error="",
    )
    if not claimed:
        # Queued with the flag raised (cancel raced the enqueue): settle it here.
        TrainingRun.objects.filter(pk=run_id, status=Status.QUEUED, cancel_requested=True).update(
            status=Status.CANCELLED, finished_at=now)
        return None
    return TrainingRun.objects.get(pk=run_id)


def run_heartbeat(*, run_id: int) -> bool:
    """Mark the run alive; False when it is no longer running (finished, cancelled, reaped)."""
    return bool(TrainingRun.objects.filter(pk=run_id, status=Status.RUNNING).update(heartbeat_at=timezone.now()))


@transaction.atomic
def run_record_progress(
    *, run_id: int, step: int, total: int, points: Sequence[tuple[int, str, float]] = (),
) -> None:
    """One batch: the metric points logged since the last batch (one bulk insert) and the progress."""
    if points:
        MetricPoint.objects.bulk_create(
            [MetricPoint(run_id=run_id, step=s, name=n[:100], value=v) for s, n, v in points], batch_size=500)
    if total > 0:
        TrainingRun.objects.filter(pk=run_id, status=Status.RUNNING).update(
            step=step, total_steps=total, progress=min(1.0, step / total), heartbeat_at=timezone.now())


def run_stop_requested(*, run_id: int) -> bool:
    """True when the loop must stop after this step: cancel asked, or the run is no longer running.

    One indexed single-row read, cheap enough for every optimizer step.
    """
    row = TrainingRun.objects.filter(pk=run_id).values_list("cancel_requested", "status").first()
    return row is None or row[0] or row[1] != Status.RUNNING


@transaction.atomic
def run_finish(
    *, run_id: int, status: str, summary: Mapping[str, Any] | None = None, error: str = "",
) -> TrainingRun | None:
    """Record the outcome of a running run. A run already settled (reaped as lost) keeps its status."""
    if status not in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED):
        raise ValueError(f"not a final status: {status!r}")
    now = timezone.now()
    changes: dict[str, Any] = {"status": status, "finished_at": now, "heartbeat_at": now}
    if summary is not None:
        changes["summary"] = _finite(dict(summary))
    if error:
        changes["error"] = error
    if status == Status.SUCCEEDED:
        changes["progress"] = 1.0
    if not TrainingRun.objects.filter(pk=run_id, status=Status.RUNNING).update(**changes):
        return None
    return TrainingRun.objects.get(pk=run_id)


@transaction.atomic
def run_fail_stale(*, older_than_s: float) -> list[int]:
    """Fail running runs whose last heartbeat is older than `older_than_s`; returns their ids.

    Called from every heartbeat of other runs, on worker start-up, from the
    run pages and the API list, and by `manage.py runs_reap`: whichever comes
    first after a worker dies. Each write is conditional on the heartbeat
    still being the one read, so a worker that beats in between is kept.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than_s)
    stale = (TrainingRun.objects.filter(status=Status.RUNNING)
             .annotate(last_seen=Coalesce("heartbeat_at", "started_at", "created_at"))
             .filter(last_seen__lt=cutoff).values_list("pk", "heartbeat_at", "last_seen", "worker_host"))
    failed = []
    for pk, heartbeat_at, last_seen, host in stale:
        reason = (f"worker lost (no heartbeat since {last_seen.isoformat(timespec='seconds')}; "
                  f"limit {older_than_s:g} s; worker {host or 'unknown'})")
        if TrainingRun.objects.filter(pk=pk, status=Status.RUNNING, heartbeat_at=heartbeat_at).update(
                status=Status.FAILED, finished_at=now, error=reason):
            failed.append(pk)
    return failed


# --- artifacts -----------------------------------------------------------------
def run_artifacts_path(run: TrainingRun) -> Path | None:
    """Absolute folder of the run's outputs, or None before a worker claimed it."""
    if not run.artifacts_dir:
        return None
    path = Path(run.artifacts_dir)
    return path if path.is_absolute() else Path(settings.ARTIFACTS_ROOT) / path


def artifact_files(root: Path, *, checkpoints: bool = False) -> Iterable[Path]:
    """Regular files under `root` (never symlinks: nothing outside the run folder leaves the server).

    Resumable checkpoints (optimizer state, several times the model) are left
    out unless asked for.
    """
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        if not checkpoints and path.relative_to(root).parts[0] == "checkpoints":
            continue
        yield path


def run_artifacts_zip(run: TrainingRun, *, checkpoints: bool = False) -> IO[bytes]:
    """A zip of the run folder (a rewound temp file that spills to disk past 32 MB)."""
    import tempfile

    root = run_artifacts_path(run)
    if root is None or not root.is_dir():
        raise FileNotFoundError(f"run {run.pk} has no artifacts folder")
    buf: io.BufferedRandom | Any = tempfile.SpooledTemporaryFile(max_size=32 << 20)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in artifact_files(root, checkpoints=checkpoints):
            zf.write(path, arcname=path.relative_to(root).as_posix())
    buf.seek(0)
    return buf
