"""Periodic change-control work: one entry point for cron, the scheduler or a django-q2 schedule
(``django_q.models.Schedule(func="approvals.tasks.sweep", schedule_type="I", minutes=1)``)."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from . import lifecycle, services


def sweep(now: datetime | None = None) -> dict:
    """Expire old requests, apply due ones, warn about and disable sunset jobs; safe to run from
    several nodes at once (every step claims its rows)."""
    now = now or timezone.now()
    expired = services.expire_changes(now=now)
    applied = services.apply_due_changes(now=now)
    warned = lifecycle.warn_sunsets(today=now.date())
    disabled = lifecycle.disable_sunset_jobs(today=now.date())
    return {
        "expired": expired,
        "applied": [c.pk for c in applied],
        "sunset_warned": [j.pk for j in warned],
        "sunset_disabled": [j.pk for j in disabled],
    }
