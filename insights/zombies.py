"""Zombie jobs: jobs that run for nobody, or not at all, each with the action to take
(docs/insights.md, "Zombie jobs").

A constant number of queries whatever the number of jobs: the jobs (with their newest run), one
grouped count of their runs in the window, their last ``periods`` runs (a ``ROW_NUMBER`` window per
job), which of their environments' jobs depend on them, which of their teams have members, which of
the heartbeat jobs were ever pinged, and (when the monitoring app has them) their alert rules."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.apps import apps
from django.contrib.auth.models import User
from django.db.models import Count, F, OuterRef, Q, Subquery, Sum, Window
from django.db.models.functions import RowNumber
from django.urls import reverse
from django.utils import timezone

from governance.models import ScopeGroupRole, ScopeUserRole
from jobs.models import HAS_DEPENDENCIES, Job, JobKind, JobStatus, Run, RunStatus

from .common import visible_jobs

FAILED = (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST)
# Runs that ended (a period of the schedule that came and went), skipped and cancelled ones included.
ENDED = (*FAILED, RunStatus.SUCCEEDED, RunStatus.CANCELLED, RunStatus.SKIPPED)
# Runs that ran and could have succeeded.
ATTEMPTED = (*FAILED, RunStatus.SUCCEEDED)


@dataclass(frozen=True)
class Kind:
    slug: str
    label: str
    action: str  # pause, sunset or reassign
    explanation: str


ALWAYS_FAILING = Kind("always_failing", "Always failing", "pause", "Every run in the window failed.")
NO_RECENT_SUCCESS = Kind(
    "no_recent_success", "No success in N periods", "pause", "None of its last N runs (periods) succeeded."
)
TEAM_WITHOUT_MEMBERS = Kind(
    "team_without_members",
    "Owning team without members",
    "reassign",
    "Nobody holds a role narrowed to the owning team: nobody answers for the job.",
)
PAST_SUNSET = Kind("past_sunset", "Past its sunset, still running", "sunset", "Its sunset day has passed.")
NO_RUNS = Kind("no_runs", "No runs at all", "sunset", "Enabled, created before the window, and it has never run.")
NEVER_PINGED = Kind(
    "never_pinged", "Heartbeat never pinged", "pause", "It expects heartbeat pings and has never sent one."
)
UNREAD_OUTPUT = Kind(
    "unread_output",
    "Output nobody reads",
    "sunset",
    "It writes output, but no job depends on it, no alert rule watches it and nobody opened a run in the window.",
)
KINDS = [ALWAYS_FAILING, NO_RECENT_SUCCESS, NEVER_PINGED, NO_RUNS, PAST_SUNSET, UNREAD_OUTPUT, TEAM_WITHOUT_MEMBERS]
ACTIONS = {
    "pause": ("Pause", "job_detail"),
    "sunset": ("Propose deletion", "change_delete"),
    "reassign": ("Reassign", "job_detail"),
}


@dataclass
class Finding:
    job: Job
    kind: Kind
    detail: str

    @property
    def action_label(self) -> str:
        return ACTIONS[self.kind.action][0]

    @property
    def url(self) -> str:
        return reverse(ACTIONS[self.kind.action][1], kwargs={"pk": self.job.pk})

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job.pk,
            "job": self.job.name,
            "tenant": self.job.tenant.slug,
            "environment": self.job.environment.slug,
            "team": self.job.team.slug,
            "status": self.job.status,
            "kind": self.kind.slug,
            "label": self.kind.label,
            "detail": self.detail,
            "action": self.kind.action,
            "url": self.url,
        }


@dataclass
class Review:
    since: datetime
    window: int
    periods: int
    examined: int
    findings: list[Finding]
    alert_rules_known: bool

    def counts(self) -> list[dict[str, Any]]:
        return [{"kind": kind, "n": sum(1 for f in self.findings if f.kind is kind)} for kind in KINDS]


# Looked up by name: the monitoring app may not have alert rules yet on every branch of the tree.
ALERT_RULE_MODEL = ("monitoring", "AlertRule")


class AlertRules:
    """The alert rules of some tenants, when the monitoring app has them (its model may not exist on
    every branch: looked up by name, and read through the fields it turns out to have). A rule names
    a job, a team's jobs (in one environment or all) or the jobs with a tag."""

    def __init__(self, tenant_ids: Iterable[int]) -> None:
        self.jobs: set[int] = set()
        self.teams: set[tuple[int, int | None]] = set()
        self.tags: set[tuple[int, int | None, str]] = set()
        try:
            model = apps.get_model(*ALERT_RULE_MODEL)
        except LookupError:
            self.known = False
            return
        self.known = True
        names = {f.name for f in model._meta.get_fields()}
        rules = model.objects.filter(tenant_id__in=list(tenant_ids)) if "tenant" in names else model.objects.all()
        if "enabled" in names:
            rules = rules.filter(enabled=True)
        fields = [name for name in ("job", "team", "environment", "tag") if name in names]
        columns = [f"{name}_id" if name != "tag" else name for name in fields]
        for row in rules.values_list("tenant_id", *columns).order_by():
            tenant_id, *rest = row
            values = dict(zip(fields, rest, strict=True))
            if values.get("job"):
                self.jobs.add(values["job"])
            elif values.get("team"):
                self.teams.add((values["team"], values.get("environment")))
            elif values.get("tag"):
                self.tags.add((tenant_id, values.get("environment"), values["tag"]))

    def watch(self, job: Job) -> bool:
        if job.pk in self.jobs:
            return True
        if (job.team_id, None) in self.teams or (job.team_id, job.environment_id) in self.teams:
            return True
        tags = getattr(job, "tags", None) or []
        return any((job.tenant_id, env, tag) in self.tags for tag in tags for env in (None, job.environment_id))


def _teams_with_members(team_ids: set[int]) -> set[int]:
    """Teams at least one active user belongs to (a role narrowed to the team, directly or through a
    group: the membership rule of approvals.policies)."""
    if not team_ids:
        return set()
    direct = (
        ScopeUserRole.objects.filter(content_object__team_id__in=team_ids, user__is_active=True)
        .values_list("content_object__team_id")
        .order_by()
    )
    grouped = (
        ScopeGroupRole.objects.filter(
            content_object__team_id__in=team_ids,
            group__in=User.groups.through.objects.filter(user__is_active=True).values("group_id"),
        )
        .values_list("content_object__team_id")
        .order_by()
    )
    return {team_id for (team_id,) in direct.union(grouped)}


def _downstream_names(jobs: Sequence[Job]) -> set[tuple[int, str]]:
    """(environment, upstream name) of every edge in the environments of ``jobs``: a job whose output
    another job consumes, whoever may see that other job."""
    tenants = {job.tenant_id for job in jobs}
    environments = {job.environment_id for job in jobs}
    edges = (
        Job.objects.filter(HAS_DEPENDENCIES, tenant_id__in=tenants, environment_id__in=environments)
        .exclude(status=JobStatus.DELETED)
        .values_list("environment_id", "dependencies")
        .order_by()
    )
    return {
        (env_id, str(edge.get("upstream")))
        for env_id, dependencies in edges
        for edge in dependencies or []
        if isinstance(edge, dict)
    }


def _expects_pings(job: Job) -> bool:
    return job.kind == JobKind.EXTERNAL or bool((job.heartbeat or {}).get("grace_seconds"))


def review(user, *, window: int, periods: int, now: datetime | None = None) -> Review:
    now = now or timezone.now()
    since = now - timedelta(days=window)
    today: date = now.date()
    visible = visible_jobs(user)
    newest = Run.objects.filter(job=OuterRef("pk")).order_by("-scheduled_for", "-id").values("scheduled_for")[:1]
    jobs = list(
        visible.select_related("tenant", "team", "environment")
        .defer("runbook", "description", "parameters", "http", "secrets", "windows", "partitions")
        .annotate(newest_run_at=Subquery(newest))
        .order_by("tenant__slug", "environment__order", "name")
    )
    in_window = {
        row["job_id"]: row
        for row in Run.objects.filter(job_id__in=visible.values("pk"), scheduled_for__gte=since)
        .values("job_id")
        .annotate(
            attempted=Count("id", filter=Q(status__in=ATTEMPTED)),
            failed=Count("id", filter=Q(status__in=FAILED)),
            output=Sum("output_bytes"),
        )
        .order_by()
    }
    last: dict[int, list[str]] = {}
    for job_id, status in (
        Run.objects.filter(job_id__in=visible.values("pk"), scheduled_for__gte=since, status__in=ENDED)
        .annotate(
            recent=Window(RowNumber(), partition_by=[F("job_id")], order_by=[F("scheduled_for").desc(), F("id").desc()])
        )
        .filter(recent__lte=periods)
        .values_list("job_id", "status")
        .order_by()
    ):
        last.setdefault(job_id, []).append(status)
    ping_jobs = [job.pk for job in jobs if _expects_pings(job)]
    pinged = set(
        Run.objects.filter(job_id__in=ping_jobs, heartbeat_at__isnull=False)
        .values_list("job_id", flat=True)
        .distinct()
        .order_by()
        if ping_jobs
        else []
    )
    staffed = _teams_with_members({job.team_id for job in jobs})
    consumed = _downstream_names(jobs) if jobs else set()
    rules = AlertRules({job.tenant_id for job in jobs})

    findings: list[Finding] = []
    for job in jobs:

        def add(kind: Kind, detail: str, job: Job = job) -> None:
            findings.append(Finding(job, kind, detail))

        enabled = job.status == JobStatus.ENABLED
        counts = in_window.get(job.pk, {"attempted": 0, "failed": 0, "output": 0})
        old_enough = job.created_at < since
        silent = _expects_pings(job) and job.pk not in pinged and (job.newest_run_at is not None or old_enough)
        if enabled and silent:
            add(NEVER_PINGED, "No run of this job ever received a ping.")
        if enabled and not silent and counts["attempted"] >= periods and counts["failed"] == counts["attempted"]:
            add(ALWAYS_FAILING, f"All {counts['attempted']} runs since {since.date().isoformat()} failed.")
        elif enabled and not silent:
            recent = last.get(job.pk, [])
            if len(recent) >= periods and RunStatus.SUCCEEDED not in recent:
                add(NO_RECENT_SUCCESS, f"None of its last {periods} runs succeeded.")
        if enabled and job.newest_run_at is None and old_enough and not silent:
            add(NO_RUNS, f"Created {job.created_at.date().isoformat()}, never ran.")
        if job.sunset_on is not None and job.sunset_on <= today:
            ran_after = job.newest_run_at is not None and job.newest_run_at.date() >= job.sunset_on
            if enabled or ran_after:
                state = "still enabled" if enabled else "ran after it"
                add(PAST_SUNSET, f"Sunset on {job.sunset_on.isoformat()}, {state}.")
        if (
            enabled
            and (counts["output"] or 0) > 0
            and (job.environment_id, job.name) not in consumed
            and not rules.watch(job)
            and (job.last_output_view_at is None or job.last_output_view_at < since)
        ):
            seen = job.last_output_view_at.date().isoformat() if job.last_output_view_at else "never"
            add(UNREAD_OUTPUT, f"{counts['output']} bytes of output in the window; last opened: {seen}.")
        if job.team_id not in staffed:
            add(TEAM_WITHOUT_MEMBERS, f"Team {job.team.slug} has no members.")
    order = {kind.slug: i for i, kind in enumerate(KINDS)}
    findings.sort(key=lambda f: (order[f.kind.slug], f.job.tenant.slug, f.job.environment.order, f.job.name))
    return Review(since, window, periods, len(jobs), findings, rules.known)


CSV_HEADER = ["tenant", "environment", "team", "job", "job_id", "status", "kind", "detail", "action", "url"]


def csv_rows(result: Review):
    for f in result.findings:
        d = f.as_dict()
        yield [d[k] for k in CSV_HEADER]


def as_json(result: Review) -> dict[str, Any]:
    return {
        "since": result.since,
        "window_days": result.window,
        "periods": result.periods,
        "jobs_examined": result.examined,
        "alert_rules_checked": result.alert_rules_known,
        "counts": {c["kind"].slug: c["n"] for c in result.counts()},
        "findings": [f.as_dict() for f in result.findings],
    }
