"""Celery tasks of the training app: one task per training run, on the training queue.

`run_training` is routed to `settings.TRAINING_QUEUE` ("gpu" by default) by
`CELERY_TASK_ROUTES` ("training.tasks.*"); the demo worker consumes
`celery,gpu`, GPU nodes only `gpu` (see `training.run_job` for running
workers on other nodes). It is an adapter over `training.run_job.execute_run`.

Training is never retried automatically: no autoretry, `max_retries=0`,
`acks_late=False` (a message is acknowledged when the worker takes it, so a
worker killed mid-run does not get the run redelivered; the stale-run reaper
fails it instead and a person decides whether to launch it again).
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
