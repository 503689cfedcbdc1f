"""What monitoring adds to the job page (registered in ``jobs.hooks`` by ``MonitoringConfig.ready``):
the alert rules that apply to the job, explicit and default."""

from __future__ import annotations

from jobs.models import Job

from .rules import rules_for_job


def add_alert_rules(user, job: Job, context: dict) -> None:
    context["alert_rules"] = rules_for_job(job)
