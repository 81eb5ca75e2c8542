from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from annotate.models import Assignment, Comparison, Judgment, Membership, Project, User


@admin.register(User)
class PairwiseUserAdmin(UserAdmin):
    list_display = ("username", "kind", "email", "is_staff", "is_active")
    list_filter = ("kind", "is_staff", "is_active")
    fieldsets = (*UserAdmin.fieldsets, ("Annotator", {"fields": ("kind",)}))


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "overlap", "time_budget_s", "gold_rate", "created_at")
    search_fields = ("slug", "name")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [MembershipInline]


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = (
        "external_id",
        "project",
        "model_a",
        "model_b",
        "gold",
        "slots_taken",
        "created_at",
    )
    list_filter = ("project",)
    search_fields = ("external_id", "prompt")
    readonly_fields = ("content_hash", "slots_taken")


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = (
        "comparison",
        "annotator",
        "status",
        "swapped",
        "is_gold",
        "shown_at",
        "lease_expires_at",
    )
    list_filter = ("project", "status", "is_gold")
    raw_id_fields = ("comparison", "annotator")


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    """Judgments are immutable records: the admin shows them, it does not edit them."""

    list_display = (
        "comparison",
        "annotator",
        "overall",
        "source",
        "submitted_at",
        "over_budget",
        "superseded_at",
    )
    list_filter = ("project", "source", "over_budget")
    raw_id_fields = ("comparison", "assignment", "annotator", "supersedes")

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False
