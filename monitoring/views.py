"""Incident pages (list, detail with the timeline, acknowledge, resolve) and the team page (members,
jobs, who is on call now and next, open incidents)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Q
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from governance.access import Action, can, get_object_or_404_for, restrict
from governance.models import Role, ScopeUserRole, Team
from governance.ui_errors import service_errors
from jobs.models import Job, JobStatus

from . import incidents, oncall
from .api import open_first
from .models import EscalationPolicy, Incident, IncidentState, Route, Severity, Silence
from .models.incidents import OPEN_STATES


class ResolveForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        label="Reason",
        error_messages={"required": "Give a reason: it is recorded on the timeline and in the audit trail."},
    )


def _incidents(user):
    return restrict(Incident.objects.select_related("team", "environment", "job"), user)


@login_required
def incident_list(request):
    params = request.GET
    rows = _incidents(request.user)
    state = params.get("state", "")
    if state == "open":
        rows = rows.filter(state__in=OPEN_STATES)
    elif state in IncidentState.values:
        rows = rows.filter(state=state)
    severity = params.get("severity", "")
    if severity in Severity.values:
        rows = rows.filter(severity=severity)
    team = params.get("team", "")
    if team.isdigit():
        rows = rows.filter(team_id=int(team))
    page = Paginator(open_first(rows), 50).get_page(params.get("page"))
    context = {
        "page": page,
        "incidents": list(page.object_list),
        "states": [("open", "Open"), *IncidentState.choices],
        "severities": Severity.choices,
        "teams": list(restrict(Team.objects.select_related("tenant"), request.user)),
        "filters": {"state": state, "severity": severity, "team": team},
        "filtered": bool(state or severity or team),
    }
    return render(request, "monitoring/incident_list.html", context)


def _incident(request, pk: int, action: Action = Action.VIEW) -> Incident:
    queryset = Incident.objects.select_related(
        "tenant", "team", "environment", "job", "acknowledged_by", "resolved_by", "escalation_policy"
    )
    return get_object_or_404_for(request.user, action, queryset, pk=pk)


def _incident_page(request, incident: Incident, *, form: ResolveForm | None = None, status: int = 200):
    may_act = can(request.user, Action.ACKNOWLEDGE, incident)
    context = {
        "incident": incident,
        "events": list(incident.events.select_related("actor")),
        "can_acknowledge": may_act and incident.state == IncidentState.TRIGGERED,
        "can_resolve": may_act and incident.state != IncidentState.RESOLVED,
        "resolve_form": form or ResolveForm(),
    }
    return render(request, "monitoring/incident_detail.html", context, status=status)


@login_required
def incident_detail(request, pk: int):
    return _incident_page(request, _incident(request, pk))


@login_required
@require_POST
@service_errors(redirect_to="incident_detail")
def incident_acknowledge(request, pk: int):
    incident = _incident(request, pk, Action.ACKNOWLEDGE)
    try:
        incidents.acknowledge(incident, actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return _incident_page(request, _incident(request, pk), status=400)
    messages.success(request, "Acknowledged: escalation stopped.")
    return redirect("incident_detail", pk=pk)


@login_required
@require_POST
@service_errors(redirect_to="incident_detail")
def incident_resolve(request, pk: int):
    incident = _incident(request, pk, Action.ACKNOWLEDGE)
    form = ResolveForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Resolving needs a reason: nothing was changed.")
        return _incident_page(request, incident, form=form, status=400)
    try:
        incidents.resolve(incident, actor=request.user, reason=form.cleaned_data["reason"])
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return _incident_page(request, _incident(request, pk), form=form, status=400)
    messages.success(request, "Resolved.")
    return redirect("incident_detail", pk=pk)


# --- the team page ----------------------------------------------------------------------------


def _members(team: Team) -> list[dict]:
    """Who holds a role covering the team (tenant-wide or narrowed to it), one query."""
    grants = (
        ScopeUserRole.objects.filter(content_object__tenant_id=team.tenant_id)
        .filter(Q(content_object__team__isnull=True) | Q(content_object__team_id=team.pk))
        .select_related("user", "permission", "content_object__environment")
    )
    people: dict[int, dict] = {}
    labels = dict(Role.choices)
    for grant in grants.order_by("user__username"):
        entry = people.setdefault(grant.user_id, {"user": grant.user, "roles": []})
        role = labels.get(grant.permission.codename.removeprefix("role_"), grant.permission.codename)
        scope = grant.content_object
        where = ("team" if scope.team_id else "tenant") + (
            f", {scope.environment.slug}" if scope.environment is not None else ""
        )
        entry["roles"].append(f"{role} ({where})")
    return sorted(people.values(), key=lambda p: p["user"].get_username())


@login_required
def team_detail(request, pk: int):
    team = get_object_or_404_for(request.user, Action.VIEW, Team.objects.select_related("tenant"), pk=pk)
    now = timezone.now()
    on_call = oncall.load(team, since=now)
    handoff = on_call.next_handoff(now)
    layers = on_call.layers
    context = {
        "team": team,
        "now": now,
        "members": _members(team),
        "job_count": restrict(Job.objects.filter(team=team).exclude(status=JobStatus.DELETED), request.user).count(),
        "rotation": on_call.rotation,
        "layers": [{"layer": layer, "members": [m.user for m in layer.members.all()]} for layer in layers],
        "on_call_now": on_call.at(now),
        "handoff": handoff,
        "display_zone": layers[0].timezone if layers else "UTC",
        "overrides": [o for o in on_call.overrides if o.ends_at > now][:10],
        "incidents": list(open_first(_incidents(request.user).filter(team=team, state__in=OPEN_STATES))[:20]),
        "policies": list(restrict(EscalationPolicy.objects.filter(tenant_id=team.tenant_id, team=team), request.user)),
        "routes": list(
            restrict(Route.objects.filter(tenant_id=team.tenant_id, team=team), request.user).select_related(
                "policy", "environment"
            )
        ),
        "silences": list(
            restrict(Silence.objects.filter(team=team, ends_at__gt=now), request.user).select_related("job")
        ),
        "can_administer": can(request.user, Action.ADMINISTER, team),
    }
    return render(request, "monitoring/team_detail.html", context)
