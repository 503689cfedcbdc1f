"""Which escalation policy an incident follows (routes) and whether it may notify anyone now (silences).

Routes: the job's team's routes before the tenant's; among them the most specific match wins
(criticality and environment, then environment, then criticality, then the default with neither).
The criticality is the job's (an incident without a job: its severity).

Silences: an ad-hoc silence of the job, of its team or of one of its tags, running at that instant;
or a maintenance window (jobs.MaintenanceWindow) of the job's tenant or environment covering it,
unless the route says ``page_during_maintenance``. A silenced incident is recorded, escalates
nobody, and starts escalating when the silence ends if it is still triggered.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Q

from jobs import firing
from jobs.models import Job, MaintenanceWindow

from .models import Incident, Route, Silence


def job_tags(job: Job | None) -> list[str]:
    """The job's tags, when jobs carry tags (alert rules by tag, monitoring.rules); none otherwise."""
    tags = getattr(job, "tags", None) if job is not None else None
    return [str(tag) for tag in tags] if isinstance(tags, list | tuple) else []


def _specificity(route: Route) -> tuple[int, int, int]:
    return (route.team_id is not None, route.environment_id is not None, route.criticality != "")


def route_for(incident: Incident) -> Route | None:
    criticality = incident.job.criticality if incident.job is not None else incident.severity
    candidates = (
        Route.objects.filter(tenant_id=incident.tenant_id)
        .filter(Q(team__isnull=True) | Q(team_id=incident.team_id))
        .filter(Q(criticality="") | Q(criticality=criticality))
        .filter(Q(environment__isnull=True) | Q(environment_id=incident.environment_id))
        .select_related("policy")
    )
    return max(candidates, key=_specificity, default=None)


@dataclass(frozen=True)
class Silenced:
    until: dt.datetime
    reason: str


def silenced(incident: Incident, at: dt.datetime, *, route: Route | None) -> Silenced | None:
    """Why the incident may notify nobody at ``at``, until when; None when it may."""
    found: list[Silenced] = []
    match = Q(job__isnull=True, tag="", team_id=incident.team_id) if incident.team_id else Q(pk__in=[])
    if incident.job_id is not None:
        match |= Q(job_id=incident.job_id)
    tags = job_tags(incident.job)
    if tags:
        match |= Q(job__isnull=True, tag__in=tags) & (Q(team__isnull=True) | Q(team_id=incident.team_id))
    for silence in Silence.objects.filter(match, tenant_id=incident.tenant_id, starts_at__lte=at, ends_at__gt=at):
        found.append(Silenced(silence.ends_at, f"silence #{silence.pk}: {silence.reason}"))
    if incident.job is not None and not (route is not None and route.page_during_maintenance):
        windows = MaintenanceWindow.objects.filter(tenant_id=incident.tenant_id).filter(
            Q(environment__isnull=True) | Q(environment_id=incident.job.environment_id)
        )
        covered = firing.maintenance_end(list(windows), at)
        if covered is not None:
            end, hit = covered
            names = ", ".join(window.name for window in hit)
            found.append(Silenced(end, f"maintenance window {names}"))
    return max(found, key=lambda item: item.until, default=None)
