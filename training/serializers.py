"""DRF serializers for exports and training runs (input validation + output shape)."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from training import exports
from training.models import DatasetExport, MetricPoint, TrainingRun


class ExportCreateSerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=exports.FORMATS, default="jsonl")
    axis = serializers.CharField(default="overall", max_length=100)
    policy = serializers.ChoiceField(choices=exports.POLICIES, default="majority")
    min_judgments = serializers.IntegerField(default=1, min_value=1, max_value=1000)
    ties = serializers.ChoiceField(choices=exports.TIES, default="drop")
    exclude_annotators = serializers.ListField(
        child=serializers.CharField(max_length=150), default=list, max_length=1000
    )
    eval_fraction = serializers.FloatField(default=0.1, min_value=0.0, max_value=0.99)
    seed = serializers.IntegerField(default=0, min_value=0, max_value=2**31 - 1)


class DatasetExportSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    created_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    files = serializers.DictField(
        child=serializers.CharField(), read_only=True, help_text="{file: sha256}"
    )
    params = serializers.DictField(read_only=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = DatasetExport
        fields = [
            "id",
            "project",
            "created_by",
            "created_at",
            "format",
            "params",
            "n_train",
            "n_eval",
            "files",
            "download_url",
        ]
        read_only_fields = fields

    def get_download_url(self, obj: DatasetExport) -> str:
        return reverse("api-export-download", args=[obj.pk])


class ExportDownloadQuerySerializer(serializers.Serializer):
    file = serializers.CharField(
        required=False,
        max_length=500,
        help_text="One file of the export (a key of `files`); omitted: a zip of all.",
    )


class TrainingRunCreateSerializer(serializers.Serializer):
    project = serializers.SlugField(
        required=False, help_text="Project slug; implied by `export` when omitted."
    )
    kind = serializers.ChoiceField(choices=TrainingRun.Kind.choices)
    export = serializers.IntegerField(required=False, min_value=1, max_value=2**62)
    data_path = serializers.CharField(
        required=False,
        default="",
        allow_blank=True,
        max_length=500,
        help_text="Staff only: a JSONL path on the workers' disk.",
    )
    config = serializers.DictField(
        required=False, default=dict, help_text="Trainer hyperparameters."
    )
    name = serializers.CharField(required=False, default="", allow_blank=True, max_length=200)


class TrainingRunSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    created_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    config = serializers.DictField(read_only=True)
    summary = serializers.DictField(read_only=True)

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "project",
            "kind",
            "name",
            "export",
            "data_path",
            "config",
            "status",
            "progress",
            "step",
            "total_steps",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "heartbeat_at",
            "worker_host",
            "cancel_requested",
            "error",
            "artifacts_dir",
            "summary",
        ]
        read_only_fields = fields


class RunListQuerySerializer(serializers.Serializer):
    project = serializers.SlugField(required=False)
    status = serializers.ChoiceField(choices=TrainingRun.Status.choices, required=False)
    kind = serializers.ChoiceField(choices=TrainingRun.Kind.choices, required=False)


class MetricsQuerySerializer(serializers.Serializer):
    name = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        help_text="Only these metric names (repeatable).",
    )
    after_step = serializers.IntegerField(
        required=False,
        min_value=-1,
        max_value=2**31 - 1,
        default=-1,
        help_text="Only points with step > after_step (for polling).",
    )


@extend_schema_field(OpenApiTypes.OBJECT)
class SeriesField(serializers.Field):
    """{metric name: [[step, value], ...]} sorted by step."""

    def to_representation(self, value: Any) -> Any:
        return value


class RunMetricsSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    status = serializers.CharField()
    progress = serializers.FloatField()
    series = SeriesField()


class MetricPointSerializer(serializers.ModelSerializer):
    class Meta:
        model = MetricPoint
        fields = ["step", "name", "value"]
