"""Pages for the scheduling configuration: the tenant's maintenance windows, holiday calendars and
pools, and the forms that propose changes to them (reviewed on the ordinary change-request page)."""

from __future__ import annotations

from typing import Any
from zoneinfo import available_timezones

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.shortcuts import redirect, render

from governance.access import Action, get_object_or_404_for, record_denied, restrict
from governance.models import Environment, Tenant
from governance.ui_errors import UI_ERRORS, form_error
from jobs.models import HolidayCalendar, MaintenanceWindow, Pool
from jobs.pools import busy_counts
from monitoring.models import RecoveryRule

from . import config_changes, policies, services
from .config_forms import CalendarForm, DeleteConfigForm, PoolForm, RecoveryRuleForm, WindowForm
from .models import CONFIG_KINDS, OPEN_STATUSES, ChangeRequest, TargetKind
from .rule_forms import AlertRuleForm
from .views import announce

FORMS: dict[str, Any] = {
    TargetKind.MAINTENANCE_WINDOW: WindowForm,
    TargetKind.HOLIDAY_CALENDAR: CalendarForm,
    TargetKind.POOL: PoolForm,
    TargetKind.RECOVERY_RULE: RecoveryRuleForm,
    TargetKind.ALERT_RULE: AlertRuleForm,
}


def _places(user, kind: config_changes.Kind) -> list[tuple[str, str]]:
    """Where the user may create an object of this kind: tenant-wide and/or per environment."""
    places = []
    tenants = list(restrict(Tenant.objects.order_by("slug"), user))
    environments = list(restrict(Environment.objects.select_related("tenant"), user).order_by("tenant__slug", "order"))
    for tenant in tenants:
        if kind.environment != "required" and policies.may_propose_config(
            user, tenant_id=tenant.pk, environment_id=None
        ):
            places.append((f"t{tenant.pk}", f"{tenant.name}: all environments"))
        if kind.environment == "never":
            continue
        for env in environments:
            if env.tenant_id == tenant.pk and policies.may_propose_config(
                user, tenant_id=tenant.pk, environment_id=env.pk
            ):
                needed = env.required_approvals
                policy = f"{needed} approval{'s' if needed != 1 else ''}" if needed else "applies at once"
                places.append((f"e{env.pk}", f"{tenant.name}: {env.name} ({policy})"))
    return places


def _place(value: str) -> tuple[Tenant | None, Environment | None]:
    """The tenant or environment a place value names (the choice field already limited it)."""
    if value.startswith("t") and value[1:].isdigit():
        return Tenant.objects.get(pk=int(value[1:])), None
    if value.startswith("e") and value[1:].isdigit():
        environment = Environment.objects.select_related("tenant").get(pk=int(value[1:]))
        return environment.tenant, environment
    return None, None


@login_required
def config_list(request):
    user = request.user
    windows = list(
        restrict(MaintenanceWindow.objects.select_related("tenant", "environment"), user).order_by(
            "tenant__slug", "environment__order", "name", "id"
        )
    )
    calendars = list(restrict(HolidayCalendar.objects.select_related("tenant"), user).order_by("tenant__slug", "name"))
    pools = list(
        restrict(Pool.objects.select_related("tenant", "environment"), user).order_by(
            "tenant__slug", "environment__order", "name"
        )
    )
    rules = list(
        restrict(
            RecoveryRule.objects.select_related("tenant", "environment", "job", "team", "remediation_job"), user
        ).order_by("tenant__slug", "environment__order", "name")
    )
    busy = busy_counts(pools)
    pending = list(
        restrict(
            ChangeRequest.objects.filter(target_kind__in=CONFIG_KINDS, status__in=OPEN_STATUSES).select_related(
                "environment", "author"
            ),
            user,
        ).order_by("-created_at", "-id")
    )
    by_target: dict[tuple[str, int], list[ChangeRequest]] = {}
    for change in pending:
        if change.target_id:
            by_target.setdefault((change.target_kind, change.target_id), []).append(change)
    for window in windows:
        window.pending = by_target.get((TargetKind.MAINTENANCE_WINDOW, window.pk), [])
    for calendar in calendars:
        calendar.pending = by_target.get((TargetKind.HOLIDAY_CALENDAR, calendar.pk), [])
    for pool in pools:
        pool.pending = by_target.get((TargetKind.POOL, pool.pk), [])
        pool.busy = busy.get(pool.pk, 0)
    for rule in rules:
        rule.pending = by_target.get((TargetKind.RECOVERY_RULE, rule.pk), [])
    for obj in (*windows, *calendars, *pools, *rules):
        obj.can_propose = policies.may_propose_config(
            user, tenant_id=obj.tenant_id, environment_id=getattr(obj, "environment_id", None)
        )
    tenant_count = len({w.tenant_id for w in windows} | {c.tenant_id for c in calendars} | {p.tenant_id for p in pools})
    context = {
        "windows": windows,
        "calendars": calendars,
        "pools": pools,
        "rules": rules,
        "pending": pending,
        "multi_tenant": tenant_count > 1,
        "can_propose_window": bool(_places(user, config_changes.kind_of(TargetKind.MAINTENANCE_WINDOW))),
        "can_propose_calendar": bool(_places(user, config_changes.kind_of(TargetKind.HOLIDAY_CALENDAR))),
        "can_propose_pool": bool(_places(user, config_changes.kind_of(TargetKind.POOL))),
        "can_propose_rule": bool(_places(user, config_changes.kind_of(TargetKind.RECOVERY_RULE))),
    }
    return render(request, "approvals/config_list.html", context)


def _kind(kind: str) -> config_changes.Kind:
    if kind not in FORMS:
        raise Http404("No such kind of configuration object.")
    return config_changes.kind_of(kind)


def _target(request, spec: config_changes.Kind, pk: int):
    target: Any = get_object_or_404_for(request.user, Action.VIEW, spec.model._default_manager.all(), pk=pk)
    environment_id = getattr(target, "environment_id", None)
    if not policies.may_propose_config(request.user, tenant_id=target.tenant_id, environment_id=environment_id):
        # Recorded in the object's own tenant chain, where its admins see it.
        record_denied(request.user, Action.PROPOSE, target, reason="role does not allow proposing this change")
        raise PermissionDenied(f"You may not propose changes to this {spec.label}.")
    return target


@login_required
def config_propose(request, kind: str, pk: int | None = None, delete: bool = False):
    """Propose a new window or calendar, or a change (``pk``) or deletion (``delete``) of a live one."""
    spec = _kind(kind)
    target = _target(request, spec, pk) if pk is not None else None
    action = "delete" if delete else ("update" if target is not None else "create")
    places = _places(request.user, spec) if target is None else None
    if places is not None and not places:
        raise PermissionDenied(f"You need the tenant admin role to propose a {spec.label}.")
    form_class: Any = DeleteConfigForm if delete else FORMS[kind]
    initial = {}
    if target is not None and not delete:
        initial = form_class.initial_from(spec.definition(target))
    form = form_class(request.POST or None, initial=initial, places=places)
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            tenant = environment = None
            if places is not None:
                tenant, environment = _place(form.cleaned_data["place"])
            try:
                change = services.propose_config_change(
                    actor=request.user,
                    kind=spec.kind,
                    action=action,
                    tenant=tenant,
                    environment=environment,
                    target=target,
                    definition=None if delete else form.definition(),
                    **form.proposal(),
                )
            except (ValidationError, *UI_ERRORS) as exc:
                status = form_error(form, exc)
            else:
                announce(request, change)
                return redirect("change_detail", pk=change.pk)
    context = {
        "form": form,
        "spec": spec,
        "kind": kind,
        "target": target,
        "action": action,
        "timezones": sorted(available_timezones()),
    }
    return render(request, "approvals/config_form.html", context, status=status)
