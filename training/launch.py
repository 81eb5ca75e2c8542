"""`accelerate launch [...] -m training.launch <run_id>`: one process of a launched training run.

The Celery task (`training.run_job.execute_run`) has already claimed the run
and keeps its heartbeat; each process started here sets Django up, then
trains it with `train_and_record`. Rank 0 (the `RANK` accelerate sets; a
single process has none) streams metrics and progress and records the
outcome; other ranks only read the cancel flag, so every rank stops at the
same step. Exit status: 0 when the run succeeded or was cancelled, 1 when it
failed, 2 on bad arguments.

The shared loop (`training/trainers/base.py`) does not wrap the model for
data parallelism yet: until it does, ranks > 0 train replicas whose files go
to a scratch folder that is deleted at the end.
"""
from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m training.launch <run_id>", file=sys.stderr)
        return 2
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from training.models import TrainingRun
    from training.run_job import train_and_record

    run_id = int(args[0])
    status = TrainingRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
    if status != TrainingRun.Status.RUNNING:
        print(f"run {run_id} is {status or 'missing'}, not running: nothing to do", file=sys.stderr)
        return 1
    rank = int(os.environ.get("RANK", "0"))
    outcome = train_and_record(run_id, main_process=rank == 0)
    return 1 if outcome == TrainingRun.Status.FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
