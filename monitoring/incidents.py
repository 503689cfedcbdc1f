"""Incidents: alerts deduplicated by fingerprint, triggered -> acknowledged -> resolved.

``raise_alert`` is what the rule engine (monitoring.rules) and the listeners call; ``acknowledge``
and ``resolve`` are the operators' services; ``resolve_fingerprint`` and ``resolve_job_incidents``
resolve automatically. Each transition writes its timeline event and its audit event in one
transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from governance import audit
from governance.access import Action, can
from governance.actors import Actor, is_system, require_actor, user_of
from governance.models import AuditAction
from governance.services import AccessDenied
from jobs.models import Alert, Job

from . import gates
from .escalation import notify_due
from .models import Incident, IncidentEvent, IncidentEventKind, IncidentState, Severity
from .models.incidents import OPEN_STATES
from .routing import route_for
from .signals import AlertSignal


def _alert_key(signal: AlertSignal) -> str:
    return f"alert:rule:{signal.rule_id}:run:{signal.run_id}:kind:{signal.kind}"[:200]


def _open(tenant_id: int, fingerprint: str) -> Incident | None:
    return (
        Incident.objects.select_for_update(of=("self",))
        .select_related("job", "team", "escalation_policy__team")
        .filter(tenant_id=tenant_id, fingerprint=fingerprint, state__in=OPEN_STATES)
        .first()
    )


def _new_incident(signal: AlertSignal) -> Incident:
    job = Job.objects.select_related("team", "environment").get(pk=signal.job_id) if signal.job_id else None
    if job is not None and job.tenant_id != signal.tenant_id:
        raise ValueError("the signal's job belongs to another tenant")
    severity = signal.severity if signal.severity in Severity.values else Severity.HIGH
    incident = Incident(
        tenant_id=signal.tenant_id,
        job=job,
        team_id=job.team_id if job else None,
        environment_id=job.environment_id if job else None,
        fingerprint=signal.fingerprint[:300],
        kind=signal.kind[:40],
        severity=severity,
        summary=signal.summary[:500],
        opened_at=signal.at,
        last_alert_at=signal.at,
        next_escalation_at=signal.at,
    )
    route = route_for(incident)
    incident.escalation_policy = route.policy if route is not None else None
    incident.save(force_insert=True)
    return incident


def raise_alert(signal: AlertSignal) -> Incident:
    """Open an incident for ``signal.fingerprint`` or add the signal to the open one; returns the incident.

    A silenced job (ad-hoc silence or maintenance window) still records the incident but notifies nobody.
    Idempotent for the same (fingerprint, rule, run): calling twice adds nothing.
    """
    key = _alert_key(signal)
    with transaction.atomic():
        if signal.run_id is not None:
            # The same run's alert after its incident was resolved stays resolved.
            seen = IncidentEvent.objects.filter(
                incident__tenant_id=signal.tenant_id, incident__fingerprint=signal.fingerprint, dedupe_key=key
            ).first()
            if seen is not None:
                return Incident.objects.get(pk=seen.incident_id)
        incident = _open(signal.tenant_id, signal.fingerprint)
        opened = False
        if incident is None:
            try:
                with transaction.atomic():
                    incident = _new_incident(signal)
                opened = True
            except IntegrityError:
                # Another process opened it between our look and our insert: join theirs.
                incident = _open(signal.tenant_id, signal.fingerprint)
                if incident is None:
                    raise
        if opened:
            transaction.on_commit(gates.forget)
            IncidentEvent.objects.create(
                incident=incident,
                kind=IncidentEventKind.OPENED,
                at=signal.at,
                message=signal.summary,
                run_id=signal.run_id,
                dedupe_key=key,
                data={"rule": signal.rule_id, "kind": signal.kind, **signal.details},
            )
            audit.record(
                AuditAction.INCIDENT_OPENED,
                obj=incident,
                data={"fingerprint": incident.fingerprint, "kind": incident.kind, "severity": incident.severity},
            )
        else:
            try:
                with transaction.atomic():
                    IncidentEvent.objects.create(
                        incident=incident,
                        kind=IncidentEventKind.ALERT,
                        at=signal.at,
                        message=signal.summary,
                        run_id=signal.run_id,
                        dedupe_key=key,
                        data={"rule": signal.rule_id, "kind": signal.kind, **signal.details},
                    )
            except IntegrityError:
                return incident  # this alert is already on the timeline
            incident.alert_count += 1
            incident.last_alert_at = max(incident.last_alert_at, signal.at)
            incident.save(update_fields=["alert_count", "last_alert_at"])
        notify_due(incident, signal.at)
    return incident


def _may_act(actor: Actor, incident: Incident) -> None:
    if is_system(require_actor(actor)):
        return
    if not can(actor, Action.ACKNOWLEDGE, incident):
        raise AccessDenied("You need the operator role for this incident's team to acknowledge or resolve it.")


def _locked(incident: Incident) -> Incident:
    return Incident.objects.select_for_update(of=("self",)).select_related("job").get(pk=incident.pk)


def acknowledge(incident: Incident, *, actor: Actor, now: dt.datetime | None = None) -> Incident:
    """Someone is on it: escalation stops. Only a triggered incident can be acknowledged."""
    from django.utils import timezone

    _may_act(actor, incident)
    now = now or timezone.now()
    with transaction.atomic():
        incident = _locked(incident)
        if incident.state != IncidentState.TRIGGERED:
            raise ValidationError(
                {
                    "state": f"The incident is {incident.get_state_display().lower()}: only a triggered incident can be acknowledged."
                }
            )
        user = user_of(actor)
        incident.state = IncidentState.ACKNOWLEDGED
        incident.acknowledged_at, incident.acknowledged_by = now, user
        incident.next_escalation_at = None
        incident.save(update_fields=["state", "acknowledged_at", "acknowledged_by", "next_escalation_at"])
        who = user.get_username() if user else "system"
        IncidentEvent.objects.create(
            incident=incident,
            kind=IncidentEventKind.ACKNOWLEDGED,
            at=now,
            actor=user,
            message=f"Acknowledged by {who}.",
        )
        audit.record(AuditAction.INCIDENT_ACKNOWLEDGED, actor=actor, obj=incident)
    return incident


def _close(incident: Incident, *, actor: Actor, reason: str, now: dt.datetime) -> Incident:
    user = user_of(actor)
    incident.state = IncidentState.RESOLVED
    incident.resolved_at, incident.resolved_by, incident.resolution = now, user, reason[:2000]
    incident.next_escalation_at = None
    incident.save(update_fields=["state", "resolved_at", "resolved_by", "resolution", "next_escalation_at"])
    message = f"Resolved by {user.get_username()}: {reason}" if user else f"Resolved automatically: {reason}"
    IncidentEvent.objects.create(
        incident=incident, kind=IncidentEventKind.RESOLVED, at=now, actor=user, message=message, data={"reason": reason}
    )
    audit.record(
        AuditAction.INCIDENT_RESOLVED, actor=actor, obj=incident, data={"reason": reason, "automatic": user is None}
    )
    return incident


def resolve(incident: Incident, *, actor: Actor, reason: str, now: dt.datetime | None = None) -> Incident:
    """The problem is gone: a reason is required; escalation stops; the fingerprint may open a new incident."""
    from django.utils import timezone

    _may_act(actor, incident)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Give a reason: it is recorded on the timeline and in the audit trail."})
    with transaction.atomic():
        incident = _locked(incident)
        if incident.state == IncidentState.RESOLVED:
            raise ValidationError({"state": "The incident is already resolved."})
        return _close(incident, actor=actor, reason=reason, now=now or timezone.now())


def resolve_fingerprint(tenant_id: int, fingerprint: str, *, at: dt.datetime, reason: str) -> Any:
    """Resolve the open incident with this fingerprint (automatically, e.g. the next run succeeded)."""
    from governance.actors import SYSTEM

    with transaction.atomic():
        incident = _open(tenant_id, fingerprint)
        if incident is None:
            return None
        return _close(incident, actor=SYSTEM, reason=reason, now=at)


def resolve_recovered(now: dt.datetime) -> int:
    """The monitor's step: resolve the open incidents whose job's latest run succeeded after they
    opened. Workers do this at once for the runs they finish (``incident_listeners``), from a view
    of the open incidents a few seconds old (``gates``); this catches what that view missed, and
    runs whose worker died between recording them and telling monitoring. Returns how many jobs."""
    from django.db.models import F, OuterRef, Subquery

    from jobs.models import Run, RunStatus

    latest = Run.objects.filter(job_id=OuterRef("job_id"), parent__isnull=True, finished_at__isnull=False).order_by(
        "-finished_at", "-id"
    )
    recovered = (
        Incident.objects.filter(state__in=OPEN_STATES, job__isnull=False)
        .annotate(
            last_status=Subquery(latest.values("status")[:1]),
            last_at=Subquery(latest.values("finished_at")[:1]),
            last_run=Subquery(latest.values("id")[:1]),
        )
        .filter(last_status=RunStatus.SUCCEEDED, last_at__gte=F("opened_at"))
        .values_list("job_id", "last_at", "last_run")
        .distinct()
    )
    done = 0
    for job_id, last_at, run_id in list(recovered):
        resolve_job_incidents(job_id, at=last_at, reason=f"run #{run_id} succeeded")
        done += 1
    return done


def resolve_job_incidents(job_id: int, *, at: dt.datetime, reason: str) -> list[Incident]:
    """Resolve the job's open incidents opened before ``at`` (its next run succeeded), and close its
    open ``jobs.Alert`` rows with them."""
    from governance.actors import SYSTEM

    resolved = []
    with transaction.atomic():
        for incident in Incident.objects.select_for_update(of=("self",)).filter(
            job_id=job_id, state__in=OPEN_STATES, opened_at__lte=at
        ):
            resolved.append(_close(incident, actor=SYSTEM, reason=reason, now=at))
        Alert.objects.filter(job_id=job_id, resolved_at__isnull=True, created_at__lte=at).update(resolved_at=at)
    return resolved
