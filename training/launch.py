"""`accelerate launch [...] -m training.launch <run_id>`: one process of a launched training run.

The Celery task (`training.run_job.execute_run`) has already claimed the run
and keeps its heartbeat; it starts `accelerate launch --multi_gpu
--num_processes N --main_process_port 0 -m training.launch <id>` (N > 1, or
one process with TRAINING_LAUNCH=accelerate). Each process started here sets
Django up, then trains the run with `train_and_record`.

With N processes the run is data parallel (`training/trainers/distributed.py`,
used by the shared loop in `training/trainers/base.py`): every rank builds the
same plan of global micro-batches and computes its strided slice of each, DDP
averages the gradients (NCCL on GPUs, LOCAL_RANK picking the device; gloo for
`device: cpu`), so the N ranks take the same optimizer steps one process would
on the same global batch size. Rank 0 (the RANK accelerate sets; a single
process has none) evaluates, writes the run folder, streams the all-reduced
metrics and progress, and records the outcome; every rank reads the cancel
flag and the ranks agree on it, so all stop after the same step. PPO ranks
sample their share of each rollout (see `training/trainers/ppo.py`).

Exit status: 0 when the run succeeded or was cancelled, 1 when it failed, 2 on
bad arguments. A rank that fails exits 1, and accelerate (torch elastic) then
stops the others; the Celery task records the failure with the end of
launch.log when rank 0 could not.
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
    try:
        outcome = train_and_record(run_id, main_process=rank == 0)
    finally:
        from training.trainers.distributed import shutdown  # lazy: torch only in training processes

        shutdown()  # leave the process group the trainer joined (a no-op for one process)
    return 1 if outcome == TrainingRun.Status.FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
