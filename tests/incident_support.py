"""Builders for the incident and on-call tests: signals, rotations and policies through the real services."""

from __future__ import annotations

import datetime as dt
from datetime import UTC

from governance.actors import SYSTEM
from monitoring import oncall_services
from monitoring.signals import AlertSignal

T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def signal(job, *, at=T0, run_id=None, rule_id=7, fingerprint=None, kind="run_failed", severity="high", summary=None):
    """A rule's firing for ``job`` (fingerprint ``rule:<rule>:job:<job>`` unless given)."""
    return AlertSignal(
        tenant_id=job.tenant_id,
        job_id=job.pk,
        kind=kind,
        severity=severity,
        fingerprint=fingerprint or f"rule:{rule_id}:job:{job.pk}",
        summary=summary or f"{job.name} failed",
        at=at,
        rule_id=rule_id,
        run_id=run_id,
    )


def with_email(*users):
    for user in users:
        user.email = f"{user.username}@example.com"
        user.save(update_fields=["email"])
    return users


def rotation(
    team, users, *, starts_on=dt.date(2026, 11, 30), days=7, handoff=dt.time(9, 0), zone="Europe/Berlin", **extra
):
    """A one-layer rotation of ``users`` for ``team`` (weekly, Mondays 09:00 Berlin unless told)."""
    layer = {
        "name": "primary",
        "users": list(users),
        "starts_on": starts_on,
        "rotation_days": days,
        "handoff_time": handoff,
        "timezone": zone,
        "weekdays": [],
        **extra,
    }
    return oncall_services.save_rotation(actor=SYSTEM, team=team, name=f"{team.slug} on call", layers=[layer])


def policy(tenant, team, steps, *, repeat=0, name="payments escalation"):
    """An escalation policy and the team's default route to it."""
    full = [{"delay_minutes": 15, "notify_on_call": False, "users": [], "channels": [], **step} for step in steps]
    made = oncall_services.save_policy(actor=SYSTEM, tenant=tenant, team=team, name=name, steps=full, repeat=repeat)
    oncall_services.save_route(actor=SYSTEM, tenant=tenant, team=team, policy=made)
    return made
