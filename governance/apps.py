from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Governance"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from . import signals  # noqa: F401
        from .sqlite import on_connection_created

        connection_created.connect(on_connection_created, dispatch_uid="governor-sqlite-busy")
