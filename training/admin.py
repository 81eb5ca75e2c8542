from django.contrib import admin

from training.models import DatasetExport, MetricPoint, TrainingRun


@admin.register(DatasetExport)
class DatasetExportAdmin(admin.ModelAdmin):
    list_display = ("id", "project", "format", "n_train", "n_eval", "created_by", "created_at")
    list_filter = ("project", "format")


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "name", "status", "progress", "created_by", "created_at")
    list_filter = ("kind", "status")


@admin.register(MetricPoint)
class MetricPointAdmin(admin.ModelAdmin):
    list_display = ("run", "step", "name", "value")
    list_filter = ("name",)
