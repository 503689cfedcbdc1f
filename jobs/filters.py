"""Run filters shared by ``GET /api/v1/runs/`` and the runs page: the same names, values and errors."""

from __future__ import annotations

from django.db.models import Q
from django_filters import rest_framework as filters

from governance.api import ref_condition, ref_filter

from .models import Run, RunStatus, TriggerKind
from .run_scope import access_jobs, through_jobs

# Filters on the run's job: applied together by ``run_scope.through_jobs`` (field on Job).
JOB_FILTERS = {"team": "team", "environment": "environment"}


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

    def filter_queryset(self, queryset):
        """The run's own filters as declared; those on its job (``team``, ``environment``) through
        ``through_jobs``, which chooses how the database reads them (the same rows as
        ``ref_filter``'s join), counting the requesting user's narrowed grants (``restrict_runs``)."""
        jobs = Q()
        for name, value in self.form.cleaned_data.items():
            if name in JOB_FILTERS:
                if (value or "").strip():
                    jobs &= ref_condition(JOB_FILTERS[name], value)
            else:
                queryset = self.filters[name].filter(queryset, value)
        if jobs:
            queryset = through_jobs(queryset, jobs, access_jobs(getattr(self.request, "user", None)))
        return queryset
