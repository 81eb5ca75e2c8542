"""Celery tasks of the training app: one task per training run, on the training queue.

`run_training` is routed to `settings.TRAINING_QUEUE` ("gpu" by default) by
`CELERY_TASK_ROUTES` ("training.tasks.*"); the demo worker consumes
`celery,gpu`, GPU nodes only `gpu` (see below). It is an adapter over
`training.run_job.execute_run`.

Training is never retried automatically: no autoretry, `max_retries=0`,
`acks_late=False` (a message is acknowledged when the worker takes it, so a
worker killed mid-run does not get the run redelivered; the stale-run reaper
fails it instead and a person decides whether to launch it again).

Running GPU workers on other nodes
----------------------------------
Every node needs the same code and environment, and three shared things:
the broker (`CELERY_BROKER_URL`, e.g. redis://broker:6379/0), the database
(`DATABASE_URL`, PostgreSQL) and the artifacts folder (`ARTIFACTS_ROOT`, a
network file system mounted at the same path everywhere: exports are read
from it and run outputs written to it; nothing else is shared on disk). On
each GPU node::

    export DATABASE_URL=postgres://... CELERY_BROKER_URL=redis://... ARTIFACTS_ROOT=/mnt/artifacts
    export SECRET_KEY=...  TRAINING_QUEUE=gpu           # the queue the web side routes runs to
    celery -A config worker -Q gpu --pool=solo --concurrency=1 -n gpu@%h

One run at a time per worker (`--pool=solo`): a run owns the node's GPUs.
A run whose config has `num_gpus: N > 1` (or every run, with the setting
TRAINING_NUM_GPUS=N on that node) is launched as `accelerate launch
--multi_gpu --num_processes N --main_process_port 0 -m training.launch <run
id>` on that node and trained data parallel, one rank per GPU: each rank
computes its slice of every global batch and DDP averages the gradients;
rank 0 evaluates and writes files, metrics, progress and the outcome; the
ranks agree on the cancel flag (see training/launch.py and
training/trainers/distributed.py).
TRAINING_LAUNCH=accelerate sends even one-process
runs through a subprocess (GPU memory is returned when it exits, and a
crashing trainer cannot take the worker down). Keep the nodes' clocks in
sync (NTP): a run whose heartbeat (TRAINING_HEARTBEAT_S, default 10 s) is
older than TRAINING_STALE_AFTER_S (default 120 s) is failed as "worker lost".

Reaping lost runs needs no beat scheduler: every running task's heartbeat
thread, a worker starting up, the runs list page and API list, and
`python manage.py runs_reap` (cron-friendly) all call
`training.services_runs.run_fail_stale`.
"""
from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.signals import worker_ready

from training.run_job import execute_run
from training.services_runs import run_fail_stale, stale_after_s

log = logging.getLogger(__name__)


@shared_task(name="training.tasks.run_training", bind=True, acks_late=False, max_retries=0, ignore_result=False)
def run_training(self: Any, run_id: int) -> str:
    """Train run `run_id` and record its outcome; returns the run's final status."""
    return execute_run(int(run_id), task_id=str(self.request.id or ""))


@worker_ready.connect
def reap_stale_runs_on_start(**_: Any) -> None:
    """A worker that starts (often: restarts after a crash) fails the runs nobody heartbeats any more."""
    try:
        failed = run_fail_stale(older_than_s=stale_after_s())
    except Exception:  # the worker must come up even when the database is briefly unavailable
        log.exception("could not reap stale training runs at worker start")
        return
    if failed:
        log.warning("failed %d training run(s) whose worker was lost: %s", len(failed), failed)
