"""Exports of preference datasets and training runs with their metrics.

Nothing here imports torch: the trainers are imported lazily by tasks and
commands.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models


class DatasetExport(models.Model):
    """One written preference dataset: parameters, row counts and file hashes."""

    class Format(models.TextChoices):
        JSONL = "jsonl", "JSON lines"
        PARQUET = "parquet", "Parquet"
        HF = "hf", "Hugging Face DatasetDict"

    project = models.ForeignKey("annotate.Project", on_delete=models.CASCADE, related_name="exports")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    format = models.CharField(max_length=8, choices=Format.choices)
    params = models.JSONField(default=dict, help_text="axis, policy, ties, min_judgments, eval_fraction, seed, ...")
    path = models.CharField(max_length=500, help_text="Directory under ARTIFACTS_ROOT (relative) holding the files.")
    n_train = models.PositiveIntegerField(default=0)
    n_eval = models.PositiveIntegerField(default=0)
    files = models.JSONField(default=dict, help_text="{file name: sha256}")

    def __str__(self) -> str:
        return f"export {self.pk} of {self.project_id} ({self.format})"


class TrainingRun(models.Model):
    class Kind(models.TextChoices):
        REWARD = "reward", "Reward model"
        DPO = "dpo", "DPO"
        PPO = "ppo", "PPO"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    project = models.ForeignKey(
        "annotate.Project", null=True, blank=True, on_delete=models.CASCADE, related_name="training_runs"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    name = models.CharField(max_length=200, blank=True)
    export = models.ForeignKey(DatasetExport, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    data_path = models.CharField(max_length=500, blank=True, help_text="A JSONL path when not from an export.")
    config = models.JSONField(default=dict, help_text="Validated trainer config (the trainer's dataclass as a dict).")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0, help_text="0..1")
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker_host = models.CharField(max_length=200, blank=True)
    celery_task_id = models.CharField(max_length=64, blank=True)
    cancel_requested = models.BooleanField(default=False, help_text="Read by the trainer every step (cooperative).")
    error = models.TextField(blank=True, help_text="Reason and traceback when failed.")
    artifacts_dir = models.CharField(max_length=500, blank=True, help_text="Relative to ARTIFACTS_ROOT.")
    summary = models.JSONField(default=dict, blank=True, help_text="Final metrics / eval report.")

    class Meta:
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="run_status_heartbeat")]

    def __str__(self) -> str:
        return f"{self.kind} run {self.pk} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)


class MetricPoint(models.Model):
    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    value = models.FloatField()

    class Meta:
        indexes = [models.Index(fields=["run", "name", "step"], name="metric_run_name_step")]
