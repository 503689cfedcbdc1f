from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs and runs"

    def ready(self) -> None:
        # django-q2 forks its workers from the cluster process and replaces each one after
        # Q_CLUSTER["recycle"] tasks: with the executor imported and its SQL built here, a new
        # worker starts warm instead of importing and compiling on its first run.
        from . import hotpath, tasks  # noqa: F401

        hotpath.prepare()
