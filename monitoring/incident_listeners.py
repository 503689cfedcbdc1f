"""Incidents from what jobs reports: its own alerts open incidents, a job's success resolves them."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from jobs.models import Criticality, RunStatus

from . import gates
from .incidents import raise_alert, resolve_job_incidents
from .signals import AlertSignal


def alert_fingerprint(kind: str, job_id: int) -> str:
    return f"alert:{kind}:job:{job_id}"


def incident_from_alert(alert: Any) -> None:
    """A ``jobs.Alert`` (lost run, missed ping, Vault unavailable...) becomes an incident of its job,
    one per job and kind while open; its severity is the job's criticality."""
    job = alert.job
    severity = job.criticality if job.criticality in Criticality.values else Criticality.HIGH
    raise_alert(
        AlertSignal(
            tenant_id=alert.tenant_id,
            job_id=alert.job_id,
            kind=alert.kind,
            severity=severity,
            fingerprint=alert_fingerprint(alert.kind, alert.job_id),
            summary=f"{job.name}: {alert.get_kind_display()}: {alert.message}"[:500],
            at=alert.created_at or timezone.now(),
            run_id=alert.run_id,
        )
    )


def resolve_on_success(run: Any) -> None:
    """The job's next run succeeded: its open incidents (and open alerts) resolve automatically."""
    if run.status != RunStatus.SUCCEEDED or getattr(run, "parent_id", None):
        return
    if run.job_id not in gates.jobs_with_open_incidents():
        return
    at = run.finished_at or timezone.now()
    resolve_job_incidents(run.job_id, at=at, reason=f"run #{run.pk} succeeded")
