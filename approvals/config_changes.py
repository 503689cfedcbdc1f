"""Change control for the scheduling configuration: maintenance windows, holiday calendars, pools,
and the alert rules of monitoring.

These objects are governed like jobs (docs/change-control.md, "Windows, calendars and pools"): every
create, update and delete is a change request, reviewed under the approval policy of the object's
environment (tenant-wide windows and calendars: the strictest policy of the tenant's environments),
never by its author, and applied atomically by ``approvals.services`` with the request recorded in the object's history.

``approvals.services`` owns the workflow (submit, review, edit, rebase, withdraw, apply); this
module supplies what differs per kind: who may propose, how a proposal is validated, what the live
state is, and how an approved request becomes live.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from governance.actors import Actor
from governance.models import Environment, Tenant
from jobs import calendars, pools
from jobs.models import HolidayCalendar, MaintenanceWindow, Pool
from monitoring import recovery_rules, rule_params, rule_services
from monitoring.models import AlertRule, RecoveryRule

from .errors import ChangeError
from .models import CONFIG_FIELD_ORDER, ChangeAction, ChangeRequest, TargetKind


@dataclass(frozen=True)
class Kind:
    """What change control needs to know about one kind of configuration object.

    ``cleans``, ``applies`` and ``deletes`` are the kind's own functions (in jobs or monitoring). All
    name the live object by one keyword, ``target_arg`` (``pool=``, ``rule=``; None for a create), and
    take ``environment=`` unless the kind is tenant-wide only (``environment`` "never"); ``clean``,
    ``apply`` and ``delete`` below call them so. A new kind is one entry in ``KINDS``.
    """

    kind: TargetKind
    model: type[models.Model]
    # Windows may be tenant-wide or per environment; calendars are tenant-wide; pools per environment.
    environment: str  # "optional" | "never" | "required"
    target_arg: str
    definition: Callable[[Any], dict]  # live object -> definition
    # (data, tenant=, environment=, <target_arg>=) -> definition
    cleans: Callable[..., dict]
    # (actor=, tenant=, environment=, definition=, <target_arg>=, change_request_id=, change_reason=) -> object
    applies: Callable[..., models.Model]
    # (actor=, <target_arg>=, change_request_id=, change_reason=)
    deletes: Callable[..., None]

    @property
    def label(self) -> str:
        return str(TargetKind(self.kind).label).lower()

    def _where(self, environment: Environment | None, target: Any) -> dict[str, Any]:
        where = {self.target_arg: target}
        if self.environment != "never":
            where["environment"] = environment
        return where

    def clean(self, data: Any, *, tenant: Tenant, environment: Environment | None, target: Any) -> dict:
        return self.cleans(data, tenant=tenant, **self._where(environment, target))

    def apply(
        self,
        *,
        actor: Actor,
        tenant: Tenant,
        environment: Environment | None,
        definition: dict,
        target: Any,
        change_request_id: int | None,
        change_reason: str | None,
    ) -> models.Model:
        return self.applies(
            actor=actor,
            tenant=tenant,
            definition=definition,
            change_request_id=change_request_id,
            change_reason=change_reason,
            **self._where(environment, target),
        )

    def delete(self, *, actor: Actor, target: Any, change_request_id: int | None, change_reason: str | None) -> None:
        self.deletes(
            actor=actor, change_request_id=change_request_id, change_reason=change_reason, **{self.target_arg: target}
        )


KINDS: dict[str, Kind] = {
    TargetKind.MAINTENANCE_WINDOW: Kind(
        TargetKind.MAINTENANCE_WINDOW,
        MaintenanceWindow,
        environment="optional",
        target_arg="window",
        definition=calendars.window_definition,
        cleans=calendars.clean_window,
        applies=calendars.apply_maintenance_window,
        deletes=calendars.delete_maintenance_window,
    ),
    TargetKind.HOLIDAY_CALENDAR: Kind(
        TargetKind.HOLIDAY_CALENDAR,
        HolidayCalendar,
        environment="never",
        target_arg="calendar",
        definition=calendars.calendar_definition,
        cleans=calendars.clean_calendar,
        applies=calendars.apply_holiday_calendar,
        deletes=calendars.delete_holiday_calendar,
    ),
    TargetKind.POOL: Kind(
        TargetKind.POOL,
        Pool,
        environment="required",
        target_arg="pool",
        definition=pools.pool_definition,
        cleans=pools.clean_pool_change,
        applies=pools.apply_pool,
        deletes=pools.delete_pool,
    ),
    TargetKind.RECOVERY_RULE: Kind(
        TargetKind.RECOVERY_RULE,
        RecoveryRule,
        environment="required",
        target_arg="rule",
        definition=recovery_rules.definition_of,
        cleans=recovery_rules.clean_rule,
        applies=recovery_rules.apply_rule,
        deletes=recovery_rules.delete_rule,
    ),
    # Alert rules (monitoring): tenant-wide, or limited to one environment (a job rule: the job's).
    TargetKind.ALERT_RULE: Kind(
        TargetKind.ALERT_RULE,
        AlertRule,
        environment="optional",
        target_arg="rule",
        definition=rule_params.rule_definition,
        cleans=rule_params.clean_rule,
        applies=rule_services.apply_alert_rule,
        deletes=rule_services.delete_alert_rule,
    ),
}


# The order fields are shown in diffs.
FIELD_ORDER = CONFIG_FIELD_ORDER


def kind_of(change_or_kind) -> Kind:
    key = change_or_kind.target_kind if isinstance(change_or_kind, ChangeRequest) else change_or_kind
    try:
        return KINDS[key]
    except KeyError:
        raise ValidationError({"target_kind": [f"Unknown kind of object: {key!r}."]}) from None


def live_target(change: ChangeRequest, *, lock: bool = False):
    """The live object a request updates or deletes, or None when it no longer exists."""
    if change.target_id is None:
        return None
    queryset = kind_of(change).model._default_manager.filter(tenant_id=change.tenant_id, pk=change.target_id)
    if lock:
        queryset = queryset.select_for_update()
    return queryset.first()


def live_definition(change: ChangeRequest) -> dict | None:
    target = live_target(change)
    return None if target is None else kind_of(change).definition(target)


def environment_of(target) -> Environment | None:
    return getattr(target, "environment", None) if getattr(target, "environment_id", None) else None


def check_deletable(spec: Kind, target) -> None:
    """Jobs name calendars and pools: one still in use is not deleted (a 400 naming the jobs)."""
    if spec.kind == TargetKind.HOLIDAY_CALENDAR:
        users = calendars.calendar_references(target.tenant_id, target.name)
        if users:
            raise ValidationError(
                {"target": [f"Jobs still skip the holidays of {target.name}: {', '.join(users)}. Change them first."]}
            )
    if spec.kind == TargetKind.POOL:
        users = pools.pool_references(target.environment_id, target.name)
        if users:
            raise ValidationError(
                {"target": [f"Jobs still run in pool {target.name}: {', '.join(users)}. Change them first."]}
            )


def check_not_stale(change: ChangeRequest) -> None:
    """Refuse (409) a request whose object was changed or deleted after it was made."""

    if change.action == ChangeAction.CREATE:
        return
    label = kind_of(change).label
    live = live_definition(change)
    if live is None:
        raise ChangeError(
            f"The {label} was deleted after this request was made; it can no longer apply.",
            conflict=True,
            code="deleted",
        )
    if live != change.base_definition:
        raise ChangeError(
            f"The {label} changed after this request was made; rebase the request before it can be reviewed.",
            conflict=True,
            code="stale",
        )


def is_stale(change: ChangeRequest) -> bool:
    if change.action == ChangeAction.CREATE or not change.is_open:
        return False
    return live_definition(change) != change.base_definition


def clean_proposal(change: ChangeRequest, definition: dict) -> dict:
    spec = kind_of(change)
    target = live_target(change)
    cleaned = spec.clean(definition, tenant=change.tenant, environment=change.environment, target=target)
    if target is not None and spec.definition(target) == cleaned:
        raise ValidationError({"definition": [f"The proposed {spec.label} is identical to the live one."]})
    return cleaned


def rebase(change: ChangeRequest) -> list[str]:
    """Move the request onto the live object (fields the author did not touch take the live values);
    returns the fields both the author and the live object changed (the author's value wins)."""

    spec = kind_of(change)
    if change.action == ChangeAction.CREATE:
        raise ChangeError("A create request has no live base to rebase onto.", conflict=True, code="no_base")
    target = live_target(change, lock=True)
    if target is None:
        raise ChangeError(
            f"The {spec.label} was deleted; a request for it cannot be rebased. Withdraw it.",
            conflict=True,
            code="deleted",
        )
    live = spec.definition(target)
    old_base = change.base_definition or {}
    if live == old_base:
        raise ChangeError(f"This request is already based on the live {spec.label}.", conflict=True, code="current")
    conflicts: list[str] = []
    if change.action != ChangeAction.DELETE:
        merged = dict(live)
        for field, value in change.proposed.items():
            if value != old_base.get(field):
                if live.get(field) != old_base.get(field) and live.get(field) != value:
                    conflicts.append(field)
                merged[field] = value
        proposed = spec.clean(merged, tenant=change.tenant, environment=change.environment, target=target)
        if proposed == live:
            raise ChangeError(
                f"After rebasing nothing is left to change: the live {spec.label} already looks like this. "
                "Withdraw the request.",
                conflict=True,
                code="empty",
            )
        change.proposed = proposed
    change.base_definition = live
    return conflicts


def apply(change: ChangeRequest, *, actor: Actor, reason: str) -> None:
    """Make an approved request live (inside the caller's savepoint); sets ``change.target_id``."""
    spec = kind_of(change)
    target = live_target(change, lock=True)
    if change.action == ChangeAction.DELETE:
        check_deletable(spec, target)
        spec.delete(actor=actor, target=target, change_request_id=change.pk, change_reason=reason)
        return
    # Validated again against the live state: a calendar name may have been taken meanwhile.
    definition = spec.clean(change.proposed, tenant=change.tenant, environment=change.environment, target=target)
    obj = spec.apply(
        actor=actor,
        tenant=change.tenant,
        environment=change.environment,
        definition=definition,
        target=target,
        change_request_id=change.pk,
        change_reason=reason,
    )
    change.target_id = obj.pk
