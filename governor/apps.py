from django.apps import AppConfig


class GovernorConfig(AppConfig):
    """The project: settings, the root URL map and what composes every app (dashboard, template
    tags, ``seed_demo``). It sits above every app (docs/architecture.md)."""

    name = "governor"
    verbose_name = "Governor"
