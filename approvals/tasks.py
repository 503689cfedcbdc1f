"""Periodic change-control work: one entry point for cron, the scheduler or a django-q2 schedule
(``django_q.models.Schedule(func="approvals.tasks.sweep", schedule_type="I", minutes=1)``)."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from . import services


def sweep(now: datetime | None = None) -> dict:
    """Expire old requests and apply due ones; safe to run from several nodes at once."""
    now = now or timezone.now()
    expired = services.expire_changes(now=now)
    applied = services.apply_due_changes(now=now)
    return {"expired": expired, "applied": [c.pk for c in applied]}
