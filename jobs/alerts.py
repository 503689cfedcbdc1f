"""Alerts: one per run and kind, raised by the executor, the recovery sweep and the queue reconciler."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from . import hooks
from .models import Alert, Run


def create_alert(run: Run, kind: str, message: str) -> None:
    """One alert per run and kind; a second call for the same run is a no-op."""
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                tenant_id=run.tenant_id, job_id=run.job_id, run=run, kind=kind, message=message
            )
    except IntegrityError:
        return  # already alerted for this run
    transaction.on_commit(lambda: hooks.alert_raised(alert))
