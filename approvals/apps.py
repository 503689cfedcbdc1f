from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Change control"

    def ready(self) -> None:
        # jobs never imports approvals: change control plugs its rules and its part of the job page in.
        from jobs import hooks

        from . import job_page, policies

        hooks.set_pause_policy(lambda job: policies.pause_requires_change(job.environment, job.criticality))
        hooks.add_job_page_part(job_page.add_change_control)
