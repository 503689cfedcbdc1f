from django.apps import AppConfig


class ManifestsConfig(AppConfig):
    name = "manifests"
    verbose_name = "Jobs as code"
