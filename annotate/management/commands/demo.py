"""`python manage.py demo`: migrate, seed, start a Celery worker and the web server.

Ctrl-C stops both. The worker consumes the default queue and the training
queue from the embedded broker (or whatever CELERY_BROKER_URL says).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from annotate.services.demo import demo_seed


class Command(BaseCommand):
    help = "Migrate, seed the demo data and users, start a Celery worker and the web server."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument(
            "--no-worker", action="store_true", help="Do not start a Celery worker."
        )
        parser.add_argument("--seed-only", action="store_true", help="Migrate and seed, then exit.")

    def handle(
        self, *args: Any, port: int, host: str, no_worker: bool, seed_only: bool, **options: Any
    ) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        result = demo_seed(fixtures_dir=Path(settings.BASE_DIR) / "fixtures")
        if result.projects_created:
            self.stdout.write(
                f"Seeded {', '.join(result.projects_created)}: "
                f"{result.comparisons_created} comparisons, "
                f"{result.judgments_created} imported judgments."
            )
        else:
            self.stdout.write("Demo data already seeded.")
        self.stdout.write("Demo users (username / password):")
        for username, password in result.users.items():
            self.stdout.write(f"  {username:6s} / {password}")
        if seed_only:
            return

        worker = None if no_worker else self._start_worker()
        try:
            self.stdout.write(
                f"Web server on http://{host}:{port}/  (Ctrl-C stops the server and the worker)"
            )
            call_command("runserver", f"{host}:{port}", use_reloader=False)
        except KeyboardInterrupt:
            pass
        finally:
            if worker is not None:
                self.stdout.write("Stopping the Celery worker...")
                worker.terminate()
                try:
                    worker.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    worker.kill()

    def _start_worker(self) -> subprocess.Popen[bytes]:
        queues = f"celery,{settings.TRAINING_QUEUE}"
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=solo",
            "-Q",
            queues,
            "--loglevel=INFO",
            "--hostname",
            f"demo@{os.uname().nodename}",
        ]
        self.stdout.write(f"Starting a Celery worker: {' '.join(cmd[1:])}")
        # Solo pool: one job at a time, which is what a single CPU box wants for training.
        return subprocess.Popen(cmd, cwd=settings.BASE_DIR)
