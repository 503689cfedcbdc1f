"""Writes of on-call: rotations, overrides, escalation policies, routes and silences.

The team's admins (a tenant-admin role narrowed to the team) and the tenant's admins manage them; a
tenant-wide object (a policy or route without a team, a silence by tag) needs a tenant-wide admin.
No change request: these decide who is woken up, not what runs (docs/monitoring.md). Each write is
atomic with its audit event (``oncall.changed``, ``silence.created``, ``silence.ended``).
The callers (monitoring.oncall_api) have validated the fields; what needs the database is checked
here and refused with field errors.
"""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from governance import audit
from governance.access import Action, can_in, can_over
from governance.actors import Actor, is_system, require_actor, user_of
from governance.models import AuditAction, Environment, Team, Tenant
from governance.services import AccessDenied
from jobs.models import Job
from notifications.models import Channel

from .models import (
    EscalationPolicy,
    EscalationStep,
    Override,
    Rotation,
    RotationLayer,
    RotationMember,
    Route,
    Silence,
)


def may_manage(actor: Actor, tenant_id: int, team_id: int | None) -> bool:
    return is_system(require_actor(actor)) or can_over(actor, Action.ADMINISTER, tenant_id, team_id)


def _require_manage(actor: Actor, tenant_id: int, team_id: int | None) -> None:
    if not may_manage(actor, tenant_id, team_id):
        where = "this team" if team_id else "the whole tenant"
        raise AccessDenied(f"Only a tenant admin whose role covers {where} manages its on-call and silences.")


def _record(actor: Actor, obj: Model, kind: str, operation: str, definition: dict | None = None) -> None:
    audit.record(
        AuditAction.ONCALL_CHANGED,
        actor=actor,
        obj=obj,
        data={"kind": kind, "operation": operation, "definition": definition or {}},
    )


def people(user_ids: list[int], tenant_id: int, team_id: int | None) -> tuple[list[User], list[str]]:
    """The users of these ids who hold a role covering the team (the people one may page), and the
    errors for the others: missing and foreign users get the same message."""
    found = {u.pk: u for u in User.objects.filter(pk__in=user_ids, is_active=True)}
    users, errors = [], []
    for pk in user_ids:
        user = found.get(pk)
        if user is None or not (user.is_superuser or can_in(user, Action.VIEW, tenant_id, team_id)):
            errors.append(f"No member of this team with id {pk}.")
        else:
            users.append(user)
    return users, errors


# --- rotations and overrides ------------------------------------------------------------------


def _layer_definition(layer: dict) -> dict:
    return {
        **{k: v for k, v in layer.items() if k != "users"},
        "users": [u.pk for u in layer["users"]],
        "starts_on": layer["starts_on"].isoformat(),
        "handoff_time": layer["handoff_time"].isoformat(),
    }


@transaction.atomic
def save_rotation(
    *, actor: Actor, team: Team, name: str, layers: list[dict], rotation: Rotation | None = None
) -> Rotation:
    """Create the team's rotation or replace an existing one's layers (``layers``: name, users (User
    rows), starts_on, rotation_days, handoff_time, timezone, weekdays; the last one wins)."""
    _require_manage(actor, team.tenant_id, team.pk)
    if not layers:
        raise ValidationError({"layers": "A rotation needs at least one layer."})
    if rotation is None:
        if Rotation.objects.filter(team=team).exists():
            raise ValidationError({"team": "This team has a rotation already: change that one."})
        rotation = Rotation.objects.create(tenant_id=team.tenant_id, team=team, name=name)
        operation = "create"
    else:
        if rotation.team_id != team.pk:
            raise ValidationError({"team": "A rotation stays with its team."})
        rotation.name = name
        rotation.save(update_fields=["name"])
        rotation.layers.all().delete()
        operation = "update"
    for position, layer in enumerate(layers):
        row = RotationLayer.objects.create(
            rotation=rotation,
            position=position,
            name=layer["name"],
            starts_on=layer["starts_on"],
            rotation_days=layer["rotation_days"],
            handoff_time=layer["handoff_time"],
            timezone=layer["timezone"],
            weekdays=sorted(set(layer.get("weekdays") or [])),
        )
        RotationMember.objects.bulk_create(
            RotationMember(layer=row, user=user, position=i) for i, user in enumerate(layer["users"])
        )
    _record(actor, rotation, "rotation", operation, {"name": name, "layers": [_layer_definition(x) for x in layers]})
    return rotation


@transaction.atomic
def delete_rotation(rotation: Rotation, *, actor: Actor) -> None:
    _require_manage(actor, rotation.tenant_id, rotation.team_id)
    _record(actor, rotation, "rotation", "delete")
    rotation.delete()


@transaction.atomic
def create_override(
    *, actor: Actor, rotation: Rotation, user: User, starts_at: dt.datetime, ends_at: dt.datetime, reason: str = ""
) -> Override:
    _require_manage(actor, rotation.tenant_id, rotation.team_id)
    if ends_at <= starts_at:
        raise ValidationError({"ends_at": "An override must end after it starts."})
    override = Override.objects.create(
        rotation=rotation, user=user, starts_at=starts_at, ends_at=ends_at, reason=reason, created_by=user_of(actor)
    )
    definition = {"user": user.pk, "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat(), "reason": reason}
    _record(actor, override, "override", "create", definition)
    return override


@transaction.atomic
def delete_override(override: Override, *, actor: Actor) -> None:
    _require_manage(actor, override.rotation.tenant_id, override.rotation.team_id)
    _record(actor, override, "override", "delete")
    override.delete()


# --- escalation policies and routes -------------------------------------------------------------


def _check_place(tenant: Tenant, team: Team | None, environment: Environment | None = None) -> None:
    if team is not None and team.tenant_id != tenant.pk:
        raise ValidationError({"team": "The team belongs to another tenant."})
    if environment is not None and environment.tenant_id != tenant.pk:
        raise ValidationError({"environment": "The environment belongs to another tenant."})


@transaction.atomic
def save_policy(
    *,
    actor: Actor,
    tenant: Tenant,
    team: Team | None,
    name: str,
    steps: list[dict],
    repeat: int = 0,
    description: str = "",
    policy: EscalationPolicy | None = None,
) -> EscalationPolicy:
    """Create or replace a policy (``steps``: delay_minutes, notify_on_call, users (User rows),
    channels (Channel rows)); a policy without a step, or a step without a target, is refused."""
    _require_manage(actor, tenant.pk, team.pk if team else None)
    _check_place(tenant, team)
    if not steps:
        raise ValidationError({"steps": "An escalation policy needs at least one step."})
    empty = [i for i, step in enumerate(steps) if not (step["notify_on_call"] or step["users"] or step["channels"])]
    if empty:
        raise ValidationError(
            {"steps": f"Step {empty[0] + 1} notifies nobody: notify the on-call person, users or channels."}
        )
    if any(c.tenant_id != tenant.pk for step in steps for c in step["channels"]):
        raise ValidationError({"steps": "A channel belongs to another tenant."})
    named = EscalationPolicy.objects.filter(tenant=tenant, name=name)
    if (named.exclude(pk=policy.pk) if policy is not None else named).exists():
        raise ValidationError({"name": "An escalation policy with this name already exists in the tenant."})
    if policy is None:
        policy = EscalationPolicy.objects.create(
            tenant=tenant, team=team, name=name, repeat=repeat, description=description
        )
        operation = "create"
    else:
        if policy.team_id != (team.pk if team else None):
            raise ValidationError({"team": "A policy stays with its team."})
        policy.name, policy.repeat, policy.description = name, repeat, description
        policy.save(update_fields=["name", "repeat", "description"])
        policy.steps.all().delete()
        operation = "update"
    for position, step in enumerate(steps):
        row = EscalationStep.objects.create(
            policy=policy,
            position=position,
            delay_minutes=step["delay_minutes"],
            notify_on_call=step["notify_on_call"],
        )
        row.users.set(step["users"])
        row.channels.set(step["channels"])
    definition = {
        "name": name,
        "team": team.pk if team else None,
        "repeat": repeat,
        "steps": [
            {
                "delay_minutes": s["delay_minutes"],
                "notify_on_call": s["notify_on_call"],
                "users": [u.pk for u in s["users"]],
                "channels": [c.pk for c in s["channels"]],
            }
            for s in steps
        ],
    }
    _record(actor, policy, "escalation_policy", operation, definition)
    return policy


@transaction.atomic
def delete_policy(policy: EscalationPolicy, *, actor: Actor) -> None:
    _require_manage(actor, policy.tenant_id, policy.team_id)
    if policy.routes.exists():
        raise ValidationError({"policy": "Routes send incidents to this policy: delete or change them first."})
    _record(actor, policy, "escalation_policy", "delete")
    policy.delete()


@transaction.atomic
def save_route(
    *,
    actor: Actor,
    tenant: Tenant,
    team: Team | None,
    policy: EscalationPolicy,
    criticality: str = "",
    environment: Environment | None = None,
    page_during_maintenance: bool = False,
    route: Route | None = None,
) -> Route:
    _require_manage(actor, tenant.pk, team.pk if team else None)
    _check_place(tenant, team, environment)
    if policy.tenant_id != tenant.pk:
        raise ValidationError({"policy": "The policy belongs to another tenant."})
    if policy.team_id is not None and policy.team_id != (team.pk if team else None):
        raise ValidationError({"policy": "A team's policy serves only that team's routes."})
    same = Route.objects.filter(tenant=tenant, team=team, criticality=criticality, environment=environment)
    if (same.exclude(pk=route.pk) if route is not None else same).exists():
        raise ValidationError(
            {"non_field_errors": "A route for this team, criticality and environment already exists."}
        )
    operation = "update" if route is not None else "create"
    if route is not None and route.team_id != (team.pk if team else None):
        raise ValidationError({"team": "A route stays with its team."})
    route = route or Route(tenant=tenant, team=team)
    route.criticality, route.environment, route.policy = criticality, environment, policy
    route.page_during_maintenance = page_during_maintenance
    route.save()
    definition = {
        "team": team.pk if team else None,
        "criticality": criticality,
        "environment": environment.pk if environment else None,
        "policy": policy.pk,
        "page_during_maintenance": page_during_maintenance,
    }
    _record(actor, route, "route", operation, definition)
    return route


@transaction.atomic
def delete_route(route: Route, *, actor: Actor) -> None:
    _require_manage(actor, route.tenant_id, route.team_id)
    _record(actor, route, "route", "delete")
    route.delete()


# --- silences ---------------------------------------------------------------------------------


@transaction.atomic
def create_silence(
    *,
    actor: Actor,
    tenant: Tenant,
    ends_at: dt.datetime,
    reason: str,
    job: Job | None = None,
    team: Team | None = None,
    tag: str = "",
    starts_at: dt.datetime | None = None,
) -> Silence:
    """Silence a job, a team's jobs or the jobs with a tag (narrowed to ``team`` if given) until ``ends_at``."""
    if job is not None:
        team = job.team
    _require_manage(actor, tenant.pk, team.pk if team else None)
    if job is not None and job.tenant_id != tenant.pk:
        raise ValidationError({"job": "The job belongs to another tenant."})
    _check_place(tenant, team)
    if sum(bool(x) for x in (job, tag)) > 1:
        raise ValidationError({"non_field_errors": "Silence either a job or a tag (with a team, or alone)."})
    if job is None and team is None and not tag:
        raise ValidationError({"non_field_errors": "Name what to silence: a job, a team or a tag."})
    starts_at = starts_at or timezone.now()
    if ends_at <= starts_at:
        raise ValidationError({"ends_at": "A silence must end after it starts."})
    if not reason.strip():
        raise ValidationError({"reason": "Give a reason: it is shown on every incident the silence keeps quiet."})
    silence = Silence.objects.create(
        tenant=tenant,
        team=team,
        job=job,
        tag=tag,
        starts_at=starts_at,
        ends_at=ends_at,
        reason=reason.strip(),
        created_by=user_of(actor),
    )
    audit.record(
        AuditAction.SILENCE_CREATED,
        actor=actor,
        obj=silence,
        data={
            "job": job.pk if job else None,
            "team": team.pk if team else None,
            "tag": tag,
            "starts_at": starts_at.isoformat(),
            "ends_at": ends_at.isoformat(),
            "reason": silence.reason,
        },
    )
    return silence


@transaction.atomic
def end_silence(silence: Silence, *, actor: Actor, now: dt.datetime | None = None) -> Silence:
    """End a silence now (kept for the record); incidents it held back escalate at their next step."""
    _require_manage(actor, silence.tenant_id, silence.team_id)
    now = now or timezone.now()
    if silence.ends_at <= now:
        raise ValidationError({"ends_at": "This silence has ended already."})
    silence.ends_at = max(now, silence.starts_at + dt.timedelta(microseconds=1))
    silence.save(update_fields=["ends_at"])
    audit.record(AuditAction.SILENCE_ENDED, actor=actor, obj=silence, data={"ends_at": silence.ends_at.isoformat()})
    # Incidents waiting for this silence's end escalate at the monitor's next cycle.
    from .models import Incident, IncidentState

    Incident.objects.filter(
        tenant_id=silence.tenant_id, state=IncidentState.TRIGGERED, silenced_until__gt=silence.ends_at
    ).update(next_escalation_at=silence.ends_at)
    return silence


def channels_of(tenant_id: int, ids: list[int]) -> tuple[list[Channel], list[str]]:
    found = {c.pk: c for c in Channel.objects.filter(pk__in=ids, tenant_id=tenant_id)}
    return [found[pk] for pk in ids if pk in found], [f"No channel with id {pk}." for pk in ids if pk not in found]
