"""Run filters shared by ``GET /api/v1/runs/`` and the runs page: the same names, values and errors."""

from __future__ import annotations

from django_filters import rest_framework as filters

from governance.api import ref_filter

from .models import Run, RunStatus, TriggerKind


class RunFilter(filters.FilterSet):
    job = filters.NumberFilter(field_name="job_id")
    # No join to multiply rows: no DISTINCT (which made counting a page of runs scan them all).
    status = filters.MultipleChoiceFilter(choices=RunStatus.choices, distinct=False)
    trigger = filters.ChoiceFilter(choices=TriggerKind.choices)
    tenant = ref_filter("tenant", "Tenant")
    team = ref_filter("job__team", "Team")
    environment = ref_filter("job__environment", "Environment")
    since = filters.IsoDateTimeFilter(field_name="scheduled_for", lookup_expr="gte", label="Scheduled from (UTC)")
    until = filters.IsoDateTimeFilter(field_name="scheduled_for", lookup_expr="lt", label="Scheduled before (UTC)")

    class Meta:
        model = Run
        fields = ["job", "status", "trigger"]
