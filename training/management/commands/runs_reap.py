"""`python manage.py runs_reap [--older-than SECONDS]`: fail running runs whose worker is lost.

A run whose heartbeat is older than the limit (default TRAINING_STALE_AFTER_S)
becomes failed with the reason "worker lost (no heartbeat since ...)". Safe to
run from cron at any time; workers also reap on start-up and at every heartbeat.
"""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from training.services_runs import run_fail_stale, stale_after_s


class Command(BaseCommand):
    help = "Fail training runs whose worker stopped sending heartbeats."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=float, default=None,
                            help="seconds without a heartbeat (default: TRAINING_STALE_AFTER_S, 120)")

    def handle(self, *args: Any, older_than: float | None, **options: Any) -> None:
        limit = stale_after_s() if older_than is None else older_than
        if limit <= 0:
            raise CommandError("--older-than must be positive")
        failed = run_fail_stale(older_than_s=limit)
        self.stdout.write(f"failed {len(failed)} run(s) with no heartbeat for {limit:g} s"
                          + (f": {', '.join(map(str, failed))}" if failed else ""))
