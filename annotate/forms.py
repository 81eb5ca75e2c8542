"""Forms of the label screen: parse the POST, nothing more.

The rules (which axes, required rationale, strength bounds) live in the
service, which re-validates; these forms turn strings into typed values and
give the template per-field errors. Values are *displayed* orientation: on the
overall scale position 1 is "left much better".
"""

from __future__ import annotations

from typing import Any

from django import forms

from annotate.models import AXIS_CHOICES, Project

SKIP_REASONS: list[tuple[str, str]] = [
    ("cannot_judge", "I can't judge this topic"),
    ("broken", "A response is empty or broken"),
    ("unclear_prompt", "The prompt is unclear"),
    ("identical", "The responses are identical"),
    ("other", "Other (say why)"),
]


def axis_field_name(axis: str) -> str:
    return f"axis-{axis}"


def scale_positions(project: Project) -> list[tuple[int, str, int]]:
    """[(position 1..N, label, displayed signed value)] for the overall scale."""
    middle = project.max_strength + 1
    return [(i, label, i - middle) for i, label in enumerate(project.scale, start=1)]


class JudgmentForm(forms.Form):
    overall = forms.TypedChoiceField(
        coerce=int, error_messages={"required": "Pick a point on the overall scale."}
    )
    flags = forms.MultipleChoiceField(required=False)
    rationale = forms.CharField(required=False, max_length=5000)
    active_ms = forms.IntegerField(required=False, min_value=0)

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project = project
        self.fields["overall"].choices = [
            (str(pos), label) for pos, label, _ in scale_positions(project)
        ]
        self.fields["flags"].choices = [(f, f) for f in project.flags]
        self.fields["rationale"].required = project.require_rationale
        self.fields["rationale"].error_messages["required"] = (
            "This project asks for a short rationale."
        )
        for axis in project.rubric_axes:
            self.fields[axis_field_name(axis)] = forms.ChoiceField(
                choices=[(c, c) for c in AXIS_CHOICES],
                error_messages={"required": f"Choose A, tie or B for {axis}."},
            )

    def displayed_overall(self) -> int:
        return int(self.cleaned_data["overall"]) - (self.project.max_strength + 1)

    def axes(self) -> dict[str, str]:
        return {axis: self.cleaned_data[axis_field_name(axis)] for axis in self.project.rubric_axes}


class SkipForm(forms.Form):
    reason = forms.ChoiceField(choices=SKIP_REASONS)
    note = forms.CharField(required=False, max_length=150)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("reason") == "other" and not (data.get("note") or "").strip():
            self.add_error("note", "Say briefly why you skip it.")
        return data

    def reason_text(self) -> str:
        reason, note = self.cleaned_data["reason"], self.cleaned_data.get("note", "").strip()
        return f"{reason}: {note}" if note else reason
