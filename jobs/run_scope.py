"""Runs lists narrowed through the run's job: the ``environment`` and ``team`` filters, and a grant
narrowed to a team or an environment (issues 17 and 20).

Such a condition is about the job, so a list joining the jobs lets the planner start from the jobs:
every run of a third of the jobs, read and sorted to show 50 (SQLite, whose statistics have no
histogram, chose it for ``?trigger=manual&environment=prod``: 1,000 ms). Here the job side is
decided first, from the matching jobs themselves (one query, two for a few jobs):

- a few jobs with few runs between them (at most ``FEW_JOBS`` and ``FEW_RUNS``): the runs are those
  of these job ids, which both planners read job by job from ``run_job_recent`` and sort;
- otherwise the list walks the tenant's runs newest first through a run-list index, which carries
  the job id, and tests each run's job id against the matching jobs: ``unindexed_job_in``, a
  condition no index on the runs can start from.

The rows and their order are those of the join; only the plan differs.
"""

from __future__ import annotations

from django.db.models import BigIntegerField, ExpressionWrapper, F, Q, QuerySet, Value
from django.db.models.lookups import In

from governance.access import Action, grant_scopes, restrict

from .models import Job, Run

# A job filter matching at most FEW_JOBS jobs with at most FEW_RUNS runs between them reads their
# runs job by job. Measured on SQLite with 1,000,000 runs: the keys of a page of 20,000 runs read
# and sorted, 15-17 ms (30,000: ~25 ms of CPU); the walk of a sparse filter (5 jobs, 500 runs) to
# count them, the tenant's whole index: 85 ms. Past FEW_RUNS a filter matches at least 2% of a
# million runs, so its bounded count walks at most ~500,000 index entries (~45 ms).
FEW_JOBS = 500
FEW_RUNS = 20_000


def unindexed_job_in(jobs: QuerySet[Job]) -> In:
    """``job_id + 0 IN (<jobs>)``: the run's job is one of ``jobs``, as a test on each run the list
    reads rather than a way in. A planner hint, measured with 10,000 jobs and 1,000,000 runs on
    ``?trigger=manual&environment=prod`` (a third of the jobs): with the plain ``job_id IN`` (or the
    join) SQLite reads every run of those jobs through ``run_job_recent`` and sorts them, 1,200-1,600
    ms for the page's keys and 1,200 ms for its bounded count; with the hint 5-9 ms and 17-24 ms.
    PostgreSQL plans the same walk either way (0.6-0.9 ms and 4-18 ms; its count read 20,000
    scattered rows for their job, 74-142 ms, until the run-list indexes carried the job id)."""
    job = ExpressionWrapper(F("job_id") + Value(0), output_field=BigIntegerField())
    return In(job, jobs.order_by().values("pk"))


def _narrowed_jobs(team_id: int | None, environment_id: int | None) -> Q | None:
    """The jobs a scope narrowed to a team and/or an environment reaches, as ``restrict`` reads it
    (a row without a team or environment stays visible), or None for a scope of a whole tenant."""
    if team_id is None and environment_id is None:
        return None
    reach = Q()
    if team_id is not None:
        reach &= Q(team_id=team_id) | Q(team_id__isnull=True)
    if environment_id is not None:
        reach &= Q(environment_id=environment_id) | Q(environment_id__isnull=True)
    return reach


def restrict_runs(queryset: QuerySet[Run], user, action: Action | str = Action.VIEW) -> QuerySet[Run]:
    """``restrict(queryset, user, action)`` for a list: the same runs, with the job side of a grant
    narrowed to a team or an environment tested by ``unindexed_job_in`` rather than through a join,
    and read job by job when it reaches a few jobs (``through_jobs``)."""
    reach = access_jobs(user, action)
    if reach is None:
        return restrict(queryset, user, action)
    condition = Q(pk__in=[])
    # One condition per distinct scope, as restrict() writes them (two roles over one team are one).
    for tenant_id, team_id, environment_id in grant_scopes(user, action, Job):
        # Every scope is narrowed here (access_jobs).
        narrowed = Job.objects.filter(_narrowed_jobs(team_id, environment_id) or Q())
        condition |= Q(tenant_id=tenant_id) & Q(unindexed_job_in(narrowed))
    return through_jobs(queryset.filter(condition), Q(), reach)


def access_jobs(user, action: Action | str = Action.VIEW) -> Q | None:
    """The jobs whose runs the user's grants reach when every grant is narrowed to a team or an
    environment (a superset: ``restrict_runs`` also tests the run's tenant); None when a grant on a
    whole tenant, a superuser or no user at all leaves it to ``restrict``."""
    if user is None or getattr(user, "is_superuser", False):
        return None
    scopes = grant_scopes(user, action, Job)
    if not scopes:
        return None
    reach = Q(pk__in=[])
    for _, team_id, environment_id in scopes:
        narrowed = _narrowed_jobs(team_id, environment_id)
        if narrowed is None:
            return None
        reach |= narrowed
    return reach


def through_jobs(runs: QuerySet[Run], jobs: Q, reach: Q | None = None) -> QuerySet[Run]:
    """``runs`` of the jobs matching ``jobs`` (a condition on Job), planned as the module says.

    ``reach``: the jobs the user's narrowed grants reach (``access_jobs``), already tested on
    ``runs`` by ``restrict_runs``; it counts in deciding whether the matching jobs are few."""
    candidates = Job.objects.filter(jobs if reach is None else jobs & reach)
    ids = list(candidates.order_by().values_list("pk", flat=True)[: FEW_JOBS + 1])
    if len(ids) <= FEW_JOBS:
        few_runs = Run.objects.filter(job_id__in=ids).order_by().values("pk")[: FEW_RUNS + 1].count() if ids else 0
        if few_runs <= FEW_RUNS:
            return runs.filter(job_id__in=ids)
    if not jobs:
        return runs  # only the grants' reach, which restrict_runs already tests
    return runs.filter(unindexed_job_in(Job.objects.filter(jobs)))
