from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs and runs"

    def ready(self) -> None:
        from notifications import hooks

        # django-q2 forks its workers from the cluster process and replaces each one after
        # Q_CLUSTER["recycle"] tasks: with the executor imported here, a new worker starts warm
        # instead of importing on its first run.
        from . import tasks  # noqa: F401
        from .http_jobs import tenant_policy

        # Webhooks and chat URLs obey the tenant's HTTP policy, which lives here (docs/notifications.md).
        hooks.set_http_policy(tenant_policy)
