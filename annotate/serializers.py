"""DRF serializers of the labeling app, and the API's shared pagination.

Gold answers are only in serializers that leads, ML staff and staff get
(`ComparisonSerializer`); what an annotator receives (`AssignmentSerializer`)
never carries them.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination

from annotate.models import Assignment, Comparison, Judgment, Membership, Project

IMPORT_FORMATS = ("auto", "jsonl", "csv", "hh-rlhf", "alpaca-eval")
BODY_FORMATS = ("jsonl", "hh-rlhf", "alpaca-eval")


class Pagination(LimitOffsetPagination):
    """Limit/offset with bounds: no unbounded pages, no offsets past SQLite's integers."""

    default_limit = 100
    max_limit = 1000

    def get_offset(self, request: Any) -> int:
        return min(super().get_offset(request), 2**62)


class ProjectSerializer(serializers.ModelSerializer):
    roles = serializers.SerializerMethodField(help_text="The caller's roles in this project.")
    rubric_axes = serializers.ListField(child=serializers.CharField(), read_only=True)
    scale = serializers.ListField(child=serializers.CharField(), read_only=True)
    flags = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Project
        fields = [
            "slug",
            "name",
            "guidelines",
            "rubric_axes",
            "scale",
            "flags",
            "time_budget_s",
            "lease_grace_s",
            "overlap",
            "gold_rate",
            "require_rationale",
            "created_at",
            "roles",
        ]
        read_only_fields = fields

    def get_roles(self, obj: Project) -> list[str]:
        user = self.context["request"].user
        return (
            sorted(m.role for m in Membership.objects.filter(project=obj, user=user))
            if user.is_authenticated
            else []
        )


class ComparisonSerializer(serializers.ModelSerializer):
    n_judgments = serializers.IntegerField(
        read_only=True, help_text="Current (not superseded) judgments."
    )
    prompt_messages = serializers.ListField(
        child=serializers.DictField(), allow_null=True, read_only=True
    )
    metadata = serializers.DictField(read_only=True)

    class Meta:
        model = Comparison
        fields = [
            "id",
            "external_id",
            "prompt",
            "prompt_messages",
            "response_a",
            "response_b",
            "model_a",
            "model_b",
            "metadata",
            "gold",
            "extra_overlap",
            "slots_taken",
            "resolved_at",
            "created_at",
            "n_judgments",
        ]
        read_only_fields = fields


class ComparisonQuerySerializer(serializers.Serializer):
    external_id = serializers.CharField(required=False, max_length=200)
    model = serializers.CharField(
        required=False, max_length=200, help_text="Matches model_a or model_b."
    )
    search = serializers.CharField(
        required=False, max_length=200, help_text="Substring of the prompt."
    )
    judged = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="true: with at least one current judgment; false: none yet.",
    )


class ComparisonBodyImportSerializer(serializers.Serializer):
    """JSON body of a bulk create: the same records a file would hold."""

    format = serializers.ChoiceField(choices=BODY_FORMATS, default="jsonl")
    with_judgments = serializers.BooleanField(default=False)
    items = serializers.ListField(
        child=serializers.DictField(),
        min_length=1,
        max_length=100_000,
        help_text="Records: jsonl columns (prompt, response_a, response_b, ...), "
        "hh-rlhf {chosen, rejected} or alpaca-eval objects.",
    )


class ComparisonFileImportSerializer(serializers.Serializer):
    """Multipart upload of a whole file (`.gz` is read transparently)."""

    file = serializers.FileField(
        help_text=f"At most MAX_UPLOAD_MB ({settings.MAX_UPLOAD_MB} MB by default)."
    )
    format = serializers.ChoiceField(choices=IMPORT_FORMATS, default="auto")
    with_judgments = serializers.BooleanField(default=False)


class ImportResultSerializer(serializers.Serializer):
    """`annotate.services.imports.ImportResult`, plus a one-line message."""

    project_slug = serializers.CharField()
    project_created = serializers.BooleanField()
    file = serializers.CharField()
    format = serializers.CharField()
    records = serializers.IntegerField()
    comparisons_created = serializers.IntegerField()
    comparisons_existing = serializers.IntegerField()
    duplicates_in_file = serializers.IntegerField()
    judgments_created = serializers.IntegerField()
    judgments_existing = serializers.IntegerField()
    records_without_verdict = serializers.IntegerField()
    verdicts_ignored = serializers.IntegerField()
    annotators_created = serializers.IntegerField()
    annotators = serializers.ListField(child=serializers.CharField())
    message = serializers.CharField()


class ImportErrorItemSerializer(serializers.Serializer):
    file = serializers.CharField()
    line = serializers.IntegerField(allow_null=True)
    record = serializers.IntegerField(allow_null=True)
    item = serializers.IntegerField(
        required=False, allow_null=True, help_text="JSON body: index in `items`."
    )
    field = serializers.CharField(allow_null=True)
    message = serializers.CharField()


class ImportErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = ImportErrorItemSerializer(many=True)


class JudgmentSerializer(serializers.ModelSerializer):
    comparison = serializers.PrimaryKeyRelatedField(read_only=True)
    external_id = serializers.CharField(source="comparison.external_id", read_only=True)
    annotator = serializers.CharField(source="annotator.username", read_only=True)
    side = serializers.CharField(read_only=True, help_text="'A', 'tie' or 'B' (overall).")
    seconds = serializers.FloatField(read_only=True, allow_null=True)
    axes = serializers.DictField(child=serializers.CharField(), read_only=True)
    flags = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Judgment
        fields = [
            "id",
            "comparison",
            "external_id",
            "annotator",
            "overall",
            "side",
            "axes",
            "flags",
            "rationale",
            "swapped",
            "source",
            "shown_at",
            "submitted_at",
            "seconds",
            "active_ms",
            "over_budget",
            "supersedes",
        ]
        read_only_fields = fields


class JudgmentQuerySerializer(serializers.Serializer):
    annotator = serializers.CharField(required=False, max_length=150, help_text="Username.")
    submitted_after = serializers.DateTimeField(required=False)
    submitted_before = serializers.DateTimeField(required=False)
    axis = serializers.CharField(
        required=False,
        max_length=100,
        help_text="'overall' or a rubric axis: judgments with a choice on it.",
    )
    side = serializers.ChoiceField(
        choices=["A", "tie", "B"], required=False, help_text="Choice on `axis`."
    )
    comparison = serializers.IntegerField(required=False, min_value=1, max_value=2**62)
    include_superseded = serializers.BooleanField(default=False)


class AssignmentSerializer(serializers.ModelSerializer):
    """An assignment as its annotator sees it: left/right in display order, no gold."""

    prompt = serializers.CharField(source="comparison.prompt", read_only=True)
    prompt_messages = serializers.ListField(
        source="comparison.prompt_messages",
        child=serializers.DictField(),
        allow_null=True,
        read_only=True,
    )
    left = serializers.SerializerMethodField(help_text="Response shown on the left.")
    right = serializers.SerializerMethodField(help_text="Response shown on the right.")
    time_budget_s = serializers.IntegerField(source="project.time_budget_s", read_only=True)

    class Meta:
        model = Assignment
        fields = [
            "id",
            "comparison",
            "status",
            "shown_at",
            "lease_expires_at",
            "time_budget_s",
            "prompt",
            "prompt_messages",
            "left",
            "right",
        ]
        read_only_fields = fields

    def get_left(self, obj: Assignment) -> str:
        return obj.comparison.response_b if obj.swapped else obj.comparison.response_a

    def get_right(self, obj: Assignment) -> str:
        return obj.comparison.response_a if obj.swapped else obj.comparison.response_b


class AssignmentQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Assignment.Status.choices, required=False)


class SkipSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=200, allow_blank=True, default="")


class JudgmentSubmitSerializer(serializers.Serializer):
    overall = serializers.IntegerField(
        min_value=-50,
        max_value=50,
        help_text="Signed strength: <0 the first response better, 0 tie.",
    )
    axes = serializers.DictField(
        child=serializers.ChoiceField(choices=["A", "tie", "B"]),
        default=dict,
        help_text="{axis: 'A' | 'tie' | 'B'} for every rubric axis.",
    )
    flags = serializers.ListField(
        child=serializers.CharField(max_length=100), default=list, max_length=100
    )
    rationale = serializers.CharField(allow_blank=True, default="", max_length=20_000)
    active_ms = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=2**31 - 1
    )
    orientation = serializers.ChoiceField(
        choices=["displayed", "canonical"],
        default="displayed",
        help_text="displayed: A = `left` of the assignment as served; "
        "canonical: A = the comparison's response_a.",
    )


class SubmitResultSerializer(serializers.Serializer):
    judgment = JudgmentSerializer()
    created = serializers.BooleanField(
        help_text="False: a repeat of an earlier submit; nothing new stored."
    )
    over_budget = serializers.BooleanField()
    late = serializers.BooleanField()


class LabelingErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()


class ReportQuerySerializer(serializers.Serializer):
    refresh = serializers.BooleanField(
        default=False, help_text="Recompute even if a cached report is current."
    )


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send as `Authorization: Token <token>`.")
