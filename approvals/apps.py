from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Change control"

    def ready(self) -> None:
        # jobs never imports approvals: change control plugs its rules and its part of the job page in.
        from jobs import hooks

        from . import config_changes, job_page, kinds, policies

        # The request model asks its kind for its diff and its live object through the app, not by
        # importing the kinds (which import the model).
        self.kind_of = kinds.kind_of
        self.live_target = config_changes.live_target

        hooks.set_pause_policy(lambda job: policies.pause_requires_change(job.environment, job.criticality))
        hooks.add_job_page_part(job_page.add_change_control)
