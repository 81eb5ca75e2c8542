"""Labeling domain: who labels what, and what they said.

Orientation convention (used everywhere): a comparison stores its two
responses in *canonical* order A, B. An assignment may show them swapped (B on
the left); judgments are always stored canonically. Preferences are signed
integers: negative favours A, positive favours B, 0 is a tie, and the absolute
value is the strength (1 = slightly, 2 = better, 3 = much better on the
default 7-point scale).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.db.models.functions import Length

DEFAULT_AXES = ["helpful", "truthful", "harmless"]
DEFAULT_SCALE = [
    "A much better",
    "A better",
    "A slightly better",
    "Tie",
    "B slightly better",
    "B better",
    "B much better",
]
DEFAULT_FLAGS = [
    "hallucination",
    "unsafe",
    "fails_instruction",
    "refusal",
    "off_topic",
    "broken_formatting",
]
AXIS_CHOICES = ("A", "tie", "B")


def default_axes() -> list[str]:
    return list(DEFAULT_AXES)


def default_scale() -> list[str]:
    return list(DEFAULT_SCALE)


def default_flags() -> list[str]:
    return list(DEFAULT_FLAGS)


class User(AbstractUser):
    """An account. AI annotators (imported judges) are accounts that cannot log in."""

    class Kind(models.TextChoices):
        HUMAN = "human", "Human"
        AI = "ai", "AI judge"

    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.HUMAN)

    @property
    def is_ai(self) -> bool:
        return self.kind == self.Kind.AI


class Project(models.Model):
    slug = models.SlugField(max_length=80, unique=True)
    name = models.CharField(max_length=200)
    guidelines = models.TextField(
        blank=True, help_text="Markdown shown (collapsible) above every comparison."
    )
    rubric_axes = models.JSONField(default=default_axes, help_text="Per-axis A / tie / B choices.")
    scale = models.JSONField(
        default=default_scale,
        help_text="Labels of the overall preference scale, A side first; "
        "odd length, the middle is the tie.",
    )
    flags = models.JSONField(default=default_flags, help_text="Flags an annotator may raise.")
    time_budget_s = models.PositiveIntegerField(
        default=60, help_text="Visible time budget per comparison."
    )
    lease_grace_s = models.PositiveIntegerField(
        default=120, help_text="Extra seconds after the budget before the slot returns to the pool."
    )
    overlap = models.PositiveSmallIntegerField(
        default=3, help_text="Judgments wanted per comparison."
    )
    gold_rate = models.FloatField(
        default=0.0, help_text="Share of served items that are gold checks (0-1)."
    )
    require_rationale = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=1), name="project_gold_rate_0_1"
            ),
            models.CheckConstraint(condition=Q(overlap__gte=1), name="project_overlap_ge_1"),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def max_strength(self) -> int:
        return len(self.scale) // 2

    @property
    def lease_s(self) -> int:
        return self.time_budget_s + self.lease_grace_s

    def clean(self) -> None:
        if not isinstance(self.scale, list) or len(self.scale) < 3 or len(self.scale) % 2 == 0:
            raise ValidationError(
                {"scale": "the scale must be a list of an odd number (>= 3) of labels"}
            )
        if not isinstance(self.rubric_axes, list) or any(
            not isinstance(a, str) or not a for a in self.rubric_axes
        ):
            raise ValidationError({"rubric_axes": "rubric axes must be a list of non-empty names"})
        if "overall" in self.rubric_axes:
            raise ValidationError(
                {"rubric_axes": "'overall' is reserved for the overall preference"}
            )


class Membership(models.Model):
    class Role(models.TextChoices):
        ANNOTATOR = "annotator", "Annotator"
        LEAD = "lead", "Project lead"
        ML = "ml", "ML staff"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "user", "role"], name="membership_unique_role"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.role} @ {self.project}"


class Comparison(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="comparisons")
    external_id = models.CharField(
        max_length=200, help_text="Unique per project; re-imports match on it."
    )
    content_hash = models.CharField(
        max_length=64,
        db_index=True,
        help_text="sha256 of prompt + both responses (order-independent).",
    )
    prompt = models.TextField(
        help_text="The prompt as plain text (chat prompts: the turns rendered as text)."
    )
    prompt_messages = models.JSONField(
        null=True,
        blank=True,
        help_text="Chat prompts: [{'role': 'user'|'assistant'|'system', 'content': str}].",
    )
    response_a = models.TextField()
    response_b = models.TextField()
    # Response lengths in characters, kept by the database on every write: the
    # lead report reads them for every comparison, and measuring the texts
    # each time cost more than the rest of the report's reads (PostgreSQL
    # must decompress them).
    len_a = models.GeneratedField(
        expression=Length("response_a"),
        output_field=models.PositiveIntegerField(),
        db_persist=True,
        help_text="Characters in response A (computed by the database).",
    )
    len_b = models.GeneratedField(
        expression=Length("response_b"),
        output_field=models.PositiveIntegerField(),
        db_persist=True,
        help_text="Characters in response B (computed by the database).",
    )
    model_a = models.CharField(max_length=200, blank=True)
    model_b = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    gold = models.SmallIntegerField(
        null=True,
        blank=True,
        help_text="Gold overall preference, canonical sign (-1 A, 0 tie, +1 B). "
        "Never sent to browsers.",
    )
    extra_overlap = models.PositiveSmallIntegerField(
        default=0, help_text="Judgments wanted beyond the project's overlap (a lead sent it back)."
    )
    # Denormalised counter of open + submitted assignments, kept by the
    # assignment service under a row lock: lets `assignment_next` pick a slot
    # with an index scan instead of aggregating assignments per request.
    slots_taken = models.PositiveSmallIntegerField(default=0)
    resolved_at = models.DateTimeField(
        null=True, blank=True, help_text="A lead closed its disagreement."
    )
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "external_id"], name="comparison_unique_external_id"
            ),
        ]
        indexes = [
            models.Index(fields=["project", "slots_taken"], name="comparison_slots_idx"),
            # The report's cache fingerprint sums the gold answers: this reads
            # only the gold rows, not every comparison's text.
            models.Index(
                fields=["project", "gold"], condition=Q(gold__isnull=False), name="comparison_gold"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}:{self.external_id}"

    @property
    def is_gold(self) -> bool:
        return self.gold is not None


class Assignment(models.Model):
    """One annotator's slot on one comparison."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        SUBMITTED = "submitted", "Submitted"
        SKIPPED = "skipped", "Skipped"
        EXPIRED = "expired", "Expired"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="assignments")
    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    swapped = models.BooleanField(default=False, help_text="B was shown on the left.")
    is_gold = models.BooleanField(default=False, help_text="Served as a gold check.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    shown_at = models.DateTimeField()
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    skip_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "annotator"], name="assignment_unique_per_annotator"
            ),
        ]
        indexes = [
            models.Index(fields=["annotator", "status"], name="assignment_annotator_status"),
            models.Index(fields=["status", "lease_expires_at"], name="assignment_lease_idx"),
            # The lead report's counts per (annotator, status) and its skip
            # fingerprint read this index only, never the assignments.
            models.Index(
                fields=["project", "annotator", "status"], name="assignment_project_annotator"
            ),
            # The fingerprint's skip count: a range of this index, not all assignments.
            models.Index(fields=["project", "status"], name="assignment_project_status"),
        ]

    def __str__(self) -> str:
        return f"{self.annotator} -> {self.comparison} ({self.status})"


class Judgment(models.Model):
    """What an annotator said about a comparison, in canonical orientation.

    Immutable once written: a correction is a new row whose `supersedes`
    points at the old one; the old one gets `superseded_at`/`superseded_by`.
    At most one current (not superseded) judgment per assignment.
    """

    class Source(models.TextChoices):
        WEB = "web", "Web"
        API = "api", "API"
        IMPORT = "import", "Import"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="judgments")
    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="judgments")
    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="judgments")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="judgments"
    )
    overall = models.SmallIntegerField(
        help_text="Signed strength: <0 A better, 0 tie, >0 B better."
    )
    axes = models.JSONField(
        default=dict, blank=True, help_text="{axis: 'A' | 'tie' | 'B'}, canonical."
    )
    flags = models.JSONField(default=list, blank=True)
    rationale = models.TextField(blank=True)
    swapped = models.BooleanField(
        default=False, help_text="Copy of the assignment's display orientation."
    )
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.WEB)
    shown_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField()
    active_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="Client-side visible+focused time."
    )
    over_budget = models.BooleanField(default=False)
    supersedes = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    superseded_at = models.DateTimeField(null=True, blank=True)
    superseded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["assignment"],
                condition=Q(superseded_at__isnull=True),
                name="judgment_one_current_per_assignment",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "submitted_at"], name="judgment_project_time"),
            models.Index(fields=["comparison"], name="judgment_comparison"),
            # The lead report's fingerprint (count, last id, last correction)
            # is answered from this index alone.
            models.Index(fields=["project", "superseded_at"], name="judgment_project_current"),
        ]

    def __str__(self) -> str:
        return f"{self.annotator} on {self.comparison}: {self.overall:+d}"

    @property
    def side(self) -> str:
        """'A', 'tie' or 'B' for the overall preference."""
        return "A" if self.overall < 0 else "B" if self.overall > 0 else "tie"

    @property
    def seconds(self) -> float | None:
        if self.shown_at is None:
            return None
        return (self.submitted_at - self.shown_at).total_seconds()
