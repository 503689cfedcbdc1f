"""What lets a worker skip monitoring's part of a finished run without a query.

Every run's end passes through ``listeners.run_finished`` in the worker that ran it. Most runs
succeed, for jobs with no open incident and no duration-based rule: for those, monitoring has
nothing to do, and asking the database each time cost the worker 16 queries per run (measured
with ``tests/test_executor_claim.py``). These per-process answers are refreshed every few seconds
(one query each) and forgotten at once when this process changes them. What another process
opened in the meantime is caught by the monitor's ``resolve_recovered`` step.
"""

from __future__ import annotations

import time

from django.db.models import Q

OPEN_JOBS_TTL = 5.0
RULE_TENANTS_TTL = 10.0

_open_jobs: tuple[float, frozenset[int]] | None = None
_rule_tenants: tuple[float, frozenset[int]] | None = None


def jobs_with_open_incidents() -> frozenset[int]:
    """Ids of the jobs with a triggered or acknowledged incident (or an open ``jobs.Alert``)."""
    global _open_jobs
    from jobs.models import Alert

    from .models import Incident
    from .models.incidents import OPEN_STATES

    now = time.monotonic()
    if _open_jobs is None or now - _open_jobs[0] > OPEN_JOBS_TTL:
        incidents = Incident.objects.filter(state__in=OPEN_STATES, job__isnull=False).values_list("job_id", flat=True)
        alerts = Alert.objects.filter(resolved_at__isnull=True).values_list("job_id", flat=True)
        _open_jobs = (now, frozenset(incidents.order_by()) | frozenset(alerts.order_by()))
    return _open_jobs[1]


def tenants_with_rules() -> frozenset[int]:
    """Ids of the tenants with an enabled explicit alert rule."""
    global _rule_tenants
    from .models import AlertRule

    now = time.monotonic()
    if _rule_tenants is None or now - _rule_tenants[0] > RULE_TENANTS_TTL:
        ids = AlertRule.objects.filter(Q(enabled=True)).values_list("tenant_id", flat=True).distinct()
        _rule_tenants = (now, frozenset(ids))
    return _rule_tenants[1]


def forget() -> None:
    """This process opened an incident or applied a rule: ask again next time."""
    global _open_jobs, _rule_tenants
    _open_jobs = None
    _rule_tenants = None
