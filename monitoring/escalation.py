"""Escalation: a triggered incident notifies its policy's steps, one after another, until acknowledged.

Step n (1-based) of round r notifies its targets (the on-call person of the policy's team, or of the
incident's team for a tenant-wide policy; named users; notification channels) through the outbox,
under the dedupe key ``incident:<id>:step:<n>:round:<r>``, in the transaction that records the step
on the timeline and in the audit trail. ``delay_minutes`` later, still unacknowledged, the next step
does; after the last step the policy starts again while ``repeat`` rounds remain, then escalation
ends. An incident no route sends to a policy notifies its team's on-call person once.

``escalate(now)`` is the monitor loop's step; ``notify_due`` is also called by ``raise_alert``
when an incident opens, so the first step goes out with it.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.urls import reverse

from governance import audit
from governance.models import AuditAction
from notifications import outbox

from . import oncall
from .models import EscalationStep, Incident, IncidentEvent, IncidentEventKind, IncidentState
from .routing import route_for, silenced

log = logging.getLogger("governor.monitor")

BATCH = 200


@dataclass
class Step:
    """A step as the escalation reads it (a policy's EscalationStep, or the fallback)."""

    delay_minutes: int
    notify_on_call: bool
    users: list[Any] = field(default_factory=list)
    channels: list[Any] = field(default_factory=list)


FALLBACK = [Step(delay_minutes=30, notify_on_call=True)]


def _steps(incident: Incident) -> tuple[list[Step], int]:
    """The steps of the incident's policy and its repeat count (no policy: the team's on-call, once)."""
    policy = incident.escalation_policy
    if policy is None:
        return FALLBACK, 0
    steps = [
        Step(step.delay_minutes, step.notify_on_call, list(step.users.all()), list(step.channels.all()))
        for step in EscalationStep.objects.filter(policy=policy).prefetch_related("users", "channels")
    ]
    return steps, policy.repeat


def _event(incident: Incident, kind: str, at: dt.datetime, message: str, **fields: Any) -> IncidentEvent:
    return IncidentEvent.objects.create(incident=incident, kind=kind, at=at, message=message, **fields)


def _text(incident: Incident, step: int, round_: int) -> tuple[str, str, dict]:
    url = settings.GOVERNOR_PUBLIC_URL + reverse("incident_detail", args=[incident.pk])
    job = incident.job.name if incident.job is not None else "-"
    subject = f"[{incident.severity}] INC-{incident.pk}: {incident.summary}"
    body = (
        f"{incident.summary}\n\nJob: {job}\nSeverity: {incident.severity}\nOpened: {incident.opened_at:%Y-%m-%d %H:%M:%S} UTC\n"
        f"Alerts: {incident.alert_count}\nEscalation step {step}, round {round_}.\n\nAcknowledge or resolve: {url}\n"
    )
    payload = {
        "event": "incident.notified",
        "incident": incident.pk,
        "tenant": incident.tenant_id,
        "job": incident.job_id,
        "kind": incident.kind,
        "severity": incident.severity,
        "summary": incident.summary,
        "state": incident.state,
        "opened_at": incident.opened_at.isoformat(),
        "step": step,
        "round": round_,
        "url": url,
    }
    return subject, body, payload


def _notify_step(incident: Incident, step: Step, number: int, round_: int, now: dt.datetime) -> None:
    users = list(step.users)
    on_call = None
    if step.notify_on_call:
        team = incident.escalation_policy.team if incident.escalation_policy is not None else None
        team = team or incident.team
        on_call = oncall.who_is_on_call(team, now) if team is not None else None
        if on_call is not None and on_call not in users:
            users.insert(0, on_call)
    channels = [channel for channel in step.channels if channel.enabled]
    key = f"incident:{incident.pk}:step:{number}:round:{round_}"
    if IncidentEvent.objects.filter(incident=incident, dedupe_key=key).exists():
        return  # already notified (a second monitor process got here first)
    subject, body, payload = _text(incident, number, round_)
    rows = outbox.enqueue(
        tenant_id=incident.tenant_id,
        subject=subject,
        body=body,
        dedupe_key=key,
        users=users,
        channels=channels,
        payload=payload,
        source=f"incident:{incident.pk}",
        due_at=now,
    )
    recipients = [u.get_username() for u in users if getattr(u, "email", "")] + [c.name for c in channels]
    if recipients:
        message = f"Notified {', '.join(recipients)} (step {number}, round {round_})."
    else:
        message = (
            f"Step {number}, round {round_}: nobody to notify (no one on call, no user with an email, no channel)."
        )
    _event(
        incident,
        IncidentEventKind.NOTIFIED if recipients else IncidentEventKind.UNROUTED,
        now,
        message,
        step=number,
        round=round_,
        dedupe_key=key,
        data={"recipients": recipients, "on_call": on_call.get_username() if on_call else None, "queued": len(rows)},
    )
    audit.record(
        AuditAction.INCIDENT_NOTIFIED,
        obj=incident,
        data={"step": number, "round": round_, "recipients": recipients},
    )


def notify_due(incident: Incident, now: dt.datetime) -> None:
    """Notify the incident's next step if it is due (call it in a transaction, the incident locked)."""
    if incident.state != IncidentState.TRIGGERED or incident.next_escalation_at is None:
        return
    if incident.next_escalation_at > now:
        return
    route = route_for(incident)
    quiet = silenced(incident, now, route=route)
    if quiet is not None:
        if incident.silenced_until != quiet.until:
            incident.silenced_until, incident.silence_reason = quiet.until, quiet.reason[:500]
            _event(
                incident,
                IncidentEventKind.SILENCED,
                now,
                f"Silenced until {quiet.until:%Y-%m-%d %H:%M:%S} UTC: {quiet.reason}.",
            )
            audit.record(
                AuditAction.INCIDENT_SILENCED,
                obj=incident,
                data={"until": quiet.until.isoformat(), "reason": quiet.reason},
            )
        incident.next_escalation_at = quiet.until
        incident.save(update_fields=["silenced_until", "silence_reason", "next_escalation_at"])
        return
    incident.silenced_until, incident.silence_reason = None, ""
    steps, repeat = _steps(incident)
    index, round_ = incident.escalation_step, incident.escalation_round
    if index >= len(steps):
        if round_ < repeat:
            index, round_ = 0, round_ + 1
        else:
            _event(incident, IncidentEventKind.EXHAUSTED, now, "Escalation ended: no step acknowledged the incident.")
            incident.next_escalation_at = None
            incident.save(update_fields=["silenced_until", "silence_reason", "next_escalation_at"])
            return
    step = steps[index]
    _notify_step(incident, step, index + 1, round_ + 1, now)
    incident.escalation_step, incident.escalation_round = index + 1, round_
    if incident.escalation_policy is None:
        incident.next_escalation_at = None  # the fallback notifies once
    else:
        incident.next_escalation_at = now + dt.timedelta(minutes=step.delay_minutes)
    incident.save(
        update_fields=["silenced_until", "silence_reason", "escalation_step", "escalation_round", "next_escalation_at"]
    )


def escalate(now: dt.datetime) -> int:
    """The monitor loop's step: notify every triggered incident whose next step is due; how many were."""
    due = list(
        Incident.objects.filter(state=IncidentState.TRIGGERED, next_escalation_at__lte=now)
        .order_by("next_escalation_at")
        .values_list("pk", flat=True)[:BATCH]
    )
    done = 0
    for pk in due:
        with transaction.atomic():
            # Locked: a second monitor process, an acknowledgement or a resolution waits for this step.
            incident = (
                Incident.objects.select_for_update(of=("self",))
                .select_related("job", "team", "escalation_policy__team")
                .filter(pk=pk, state=IncidentState.TRIGGERED, next_escalation_at__lte=now)
                .first()
            )
            if incident is None:
                continue
            notify_due(incident, now)
            done += 1
    return done
