"""Executing one TrainingRun: the body of the Celery task and of `training.launch`.

    claim the run (run_start) -> start the heartbeat thread
      -> one process:   validate config -> resolve data -> trainer run() with DB hooks -> run_finish
      -> N processes:   `accelerate launch --multi_gpu --num_processes N -m training.launch <id>`;
                        every rank does the same steps on its share of each batch (data
                        parallel, see training/trainers/distributed.py) and rank 0 records;
                        this process only heartbeats and watches them
    -> stop the heartbeat thread

Metrics reach `MetricPoint` in batches (one bulk insert per flush, at most
every TRAINING_FLUSH_S), progress goes to the run row with the same write;
`should_stop` reads the run's cancel flag after every optimizer step, so a
cancelled run stops within one step. Trainers are imported lazily through
`training.registry` (no torch at import time).

How to run GPU workers on other nodes: see the docstring of `training.tasks`.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections

from training.callbacks import RunHooks
from training.models import TrainingRun
from training.registry import KINDS, Kind
from training.services_runs import (
    flush_interval_s,
    heartbeat_interval_s,
    run_artifacts_path,
    run_fail_stale,
    run_finish,
    run_heartbeat,
    run_record_progress,
    run_start,
    run_stop_requested,
    split_launch_options,
    stale_after_s,
)

log = logging.getLogger(__name__)
Status = TrainingRun.Status


class RunSetupError(ValueError):
    """The run cannot start: unknown kind, deleted export, ... (the message says which)."""


# --- hooks: the loop's callbacks, writing to the database -------------------------
class DbHooks:
    """RunHooks callables that stream a run's metrics and progress to the database.

    Points are buffered and written with one bulk insert per flush (never a
    query per metric); `should_stop` is one small read per step. `write=False`
    (ranks other than 0 of a multi-process run) keeps only `should_stop`.
    """

    def __init__(self, run_id: int, *, flush_every_s: float, write: bool = True) -> None:
        self.run_id = run_id
        self.flush_every_s = flush_every_s
        self.write = write
        self.points: list[tuple[int, str, float]] = []
        self.step = 0
        self.total = 0
        self._last_flush = time.monotonic()
        self._dirty = False

    def on_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        if self.write:
            self.points.extend((step, name, float(value)) for name, value in metrics.items())
            self._dirty = True
            self._maybe_flush()

    def on_progress(self, step: int, total: int) -> None:
        if self.write:
            self.step, self.total, self._dirty = step, total, True
            self._maybe_flush(force=step >= total)

    def should_stop(self) -> bool:
        return run_stop_requested(run_id=self.run_id)

    def _maybe_flush(self, *, force: bool = False) -> None:
        if force or time.monotonic() - self._last_flush >= self.flush_every_s or len(self.points) >= 2000:
            self.flush()

    def flush(self) -> None:
        if self.write and self._dirty:
            run_record_progress(run_id=self.run_id, step=self.step, total=self.total, points=self.points)
            self.points, self._dirty = [], False
        self._last_flush = time.monotonic()

    def hooks(self) -> RunHooks:
        return RunHooks(on_metrics=self.on_metrics, on_progress=self.on_progress, should_stop=self.should_stop)


class Heartbeat(threading.Thread):
    """Writes `heartbeat_at` every `interval_s` while the run trains, and reaps other lost runs.

    A daemon thread: a worker killed with SIGKILL takes it along, the beats
    stop, and `run_fail_stale` (run by anyone) fails the run.
    """

    def __init__(self, run_id: int, *, interval_s: float, stale_after: float) -> None:
        super().__init__(name=f"heartbeat-run-{run_id}", daemon=True)
        self.run_id = run_id
        self.interval_s = interval_s
        self.stale_after = stale_after
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.wait(self.interval_s):
                try:
                    run_heartbeat(run_id=self.run_id)
                    run_fail_stale(older_than_s=self.stale_after)
                except Exception:  # a busy database must not kill the beat; the next one retries
                    log.exception("run %s: heartbeat failed", self.run_id)
        finally:
            connections.close_all()  # this thread's own connections

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)


# --- the parts of a run ------------------------------------------------------------------
def data_spec(run: TrainingRun) -> str:
    if run.export_id is not None:
        return f"export:{run.export_id}"
    if run.data_path:
        return run.data_path
    raise RunSetupError("the run has no data: its export was deleted and it has no data path")


def num_processes(run: TrainingRun) -> int:
    """GPU processes for this run: its config's `num_gpus`, else the TRAINING_NUM_GPUS setting, else 1."""
    _, from_config = split_launch_options(run.config)
    if "num_gpus" in run.config:
        return from_config
    default = getattr(settings, "TRAINING_NUM_GPUS", None) or os.environ.get("TRAINING_NUM_GPUS") or 1
    return max(1, int(default))


def launch_mode() -> str:
    """"auto" (a subprocess only for N > 1 processes) or "accelerate" (always a subprocess)."""
    mode = getattr(settings, "TRAINING_LAUNCH", None) or os.environ.get("TRAINING_LAUNCH") or "auto"
    if mode not in ("auto", "accelerate"):
        raise RunSetupError(f"TRAINING_LAUNCH={mode!r}: use auto or accelerate")
    return mode


def accelerate_command(run_id: int, processes: int, *, cpu: bool = False) -> list[str]:
    """The command line that trains run `run_id` in `processes` processes on this node.

    N > 1 always takes accelerate's `--multi_gpu` path (torch elastic: one process per rank with
    RANK/WORLD_SIZE/LOCAL_RANK set; a CPU run then trains over gloo): accelerate's `--cpu` with
    several processes needs MPI instead, and it refuses `--cpu` together with `--multi_gpu`.
    `--main_process_port 0` lets accelerate pick a free port, so runs on one node never collide.
    """
    script = Path(sys.executable).with_name("accelerate")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "accelerate.commands.accelerate_cli"]
    cmd = [*head, "launch", "--num_processes", str(processes), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no"]
    if processes > 1:
        cmd += ["--multi_gpu", "--main_process_port", "0"]
    elif cpu:
        cmd.append("--cpu")
    return [*cmd, "-m", "training.launch", str(run_id)]


def summary_of(result: Any, out_dir: Path) -> dict[str, Any]:
    """The run's summary: the trainer's eval report, final metrics and throughput."""
    import json

    report_path = out_dir / "eval_report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    checkpoint = getattr(result, "checkpoint", None)
    return {
        "result": result.status, "step": result.step, "total_steps": result.total_steps,
        "wall_time_s": round(result.wall_time_s, 3), "samples_per_s": result.samples_per_s,
        "eval": dict(result.eval_metrics), "train": dict(result.train_metrics), "report": report,
        "checkpoint": str(Path(checkpoint).relative_to(out_dir)) if checkpoint else "",
    }


def format_error(exc: BaseException) -> str:
    """First line the reason, then the traceback (shown on the run page)."""
    tb = "".join(traceback.format_exception(exc))
    return f"{type(exc).__name__}: {exc}\n\n{tb}"


def train_and_record(run_id: int, *, kinds: Mapping[str, Kind] = KINDS, main_process: bool = True) -> str:
    """Train a claimed (running) run in this process and record the outcome; returns the final status.

    Any error becomes a failed run with its traceback. `main_process=False`
    (ranks > 0 of a launched run) trains its share of every batch and obeys
    cancellation but writes nothing to the database; the shared loop keeps it
    from writing files (rank 0 writes the run folder).
    """
    run = TrainingRun.objects.get(pk=run_id)
    out_dir = run_artifacts_path(run)
    assert out_dir is not None, "run_start sets artifacts_dir"
    hooks = DbHooks(run_id, flush_every_s=flush_interval_s(), write=main_process)
    try:
        kind = kinds.get(run.kind)
        if kind is None:
            raise RunSetupError(f"no trainer is registered for kind {run.kind!r} (known: {', '.join(kinds)})")
        fields, _ = split_launch_options(run.config)
        config = kind.config.from_dict(fields)  # ConfigError names every bad field
        train, held, info = kind.resolve(data_spec(run))  # pairs, or prompts for PPO
        out_dir.mkdir(parents=True, exist_ok=True)
        result = kind.runner()(config, train_pairs=train, eval_pairs=held, out_dir=out_dir, hooks=hooks.hooks(),
                               resume_from=None, data_info=info)
        hooks.flush()
    except Exception as exc:
        log.exception("run %s failed", run_id)
        hooks.flush()
        if main_process:
            run_finish(run_id=run_id, status=Status.FAILED, error=format_error(exc))
        return Status.FAILED
    status = Status.SUCCEEDED if result.status == "completed" else Status.CANCELLED
    if main_process:
        run_finish(run_id=run_id, status=status, summary=summary_of(result, out_dir))
    return status


def _launch(run: TrainingRun, processes: int) -> str:
    """Run `training.launch` under accelerate, wait, and fail the run if the launcher died silently."""
    out_dir = run_artifacts_path(run)
    assert out_dir is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = accelerate_command(run.pk, processes, cpu=run.config.get("device") == "cpu")
    log.info("run %s: %s", run.pk, " ".join(cmd))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(settings.BASE_DIR),
                                                                     os.environ.get("PYTHONPATH")]))}
    with open(out_dir / "launch.log", "ab") as log_file:
        # Own session: cancelling or a worker shutdown stops accelerate and every rank together.
        child = subprocess.Popen(cmd, cwd=settings.BASE_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            while child.poll() is None:
                time.sleep(0.5)
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
    tail = (out_dir / "launch.log").read_text(errors="replace")[-4000:]
    settled = run_finish(run_id=run.pk, status=Status.FAILED,
                         error=f"accelerate launch exited with status {child.returncode} before recording an "
                               f"outcome; the end of launch.log:\n\n{tail}")
    return Status.FAILED if settled is not None else TrainingRun.objects.get(pk=run.pk).status


def execute_run(run_id: int, *, task_id: str = "", kinds: Mapping[str, Kind] = KINDS) -> str:
    """The Celery task's body: claim, heartbeat, train here or through accelerate, record. Returns the status."""
    host = f"{socket.gethostname()}:{os.getpid()}"
    run = run_start(run_id=run_id, worker_host=host, task_id=task_id)
    if run is None:
        status = TrainingRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
        log.info("run %s not started (status %s)", run_id, status or "missing")
        return status or "missing"
    beat = Heartbeat(run_id, interval_s=heartbeat_interval_s(), stale_after=stale_after_s())
    beat.start()
    try:
        try:
            processes = num_processes(run)
            subprocess_wanted = processes > 1 or launch_mode() == "accelerate"
        except (RunSetupError, ValueError) as exc:
            run_finish(run_id=run_id, status=Status.FAILED, error=format_error(exc))
            return Status.FAILED
        if subprocess_wanted:
            return _launch(run, processes)
        return train_and_record(run_id, kinds=kinds)
    finally:
        beat.stop()
