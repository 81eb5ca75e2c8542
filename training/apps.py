from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Exports and training runs"
    default_auto_field = "django.db.models.BigAutoField"
