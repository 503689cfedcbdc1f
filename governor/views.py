"""Pages that compose several apps: the dashboard (environments, runs, review queue, alerts)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.shortcuts import render
from django.utils import timezone

from approvals.dashboard import recently_decided
from approvals.lifecycle import overdue_jobs
from approvals.models import OPEN_STATUSES, ChangeRequest
from approvals.services import awaiting_review, open_post_reviews, with_valid_approvals
from governance.access import Action, is_narrowed, restrict
from governance.models import Environment, Team
from jobs.models import Alert, Job, JobStatus, Run, RunStatus
from jobs.run_counts import day_status_counts
from jobs.watch_views import now_panel_context

from .request_facts import review_queue_count

CHART_STATUSES = [
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.TIMED_OUT,
    RunStatus.CANCELLED,
    RunStatus.SKIPPED,
    RunStatus.RUNNING,
    RunStatus.QUEUED,
]
FAILED_STATUSES = [RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST]


def runs_chart(user, now: datetime) -> dict:
    """Runs scheduled in the last 24 hours, stacked per hour and status, as SVG geometry."""
    start = (now - timedelta(hours=23)).replace(minute=0, second=0, microsecond=0)
    runs = restrict(Run.objects.all(), user)
    counted = day_status_counts(runs, start, now, joined=is_narrowed(user, Run))
    buckets: dict[datetime, dict[str, int]] = {start + timedelta(hours=i): {} for i in range(24)}
    totals: dict[str, int] = {}
    for (index, status), n in counted.items():
        status = status if status in CHART_STATUSES else RunStatus.QUEUED
        bucket = buckets.setdefault(start + timedelta(hours=index), {})
        bucket[status] = bucket.get(status, 0) + n
        totals[status] = totals.get(status, 0) + n
    peak = max((sum(b.values()) for b in buckets.values()), default=0)
    width, height, gap = 24, 120, 4
    bars = []
    for index, (hour, counts) in enumerate(sorted(buckets.items())):
        y: float = height
        segments = []
        for status in CHART_STATUSES:
            n = counts.get(status, 0)
            if not n:
                continue
            h = max(round(n / peak * height, 1), 1.5)
            y -= h
            segments.append({"status": status, "n": n, "y": round(y, 1), "h": h})
        bars.append(
            {
                "x": index * (width + gap),
                "hour": hour,
                "label": hour.strftime("%H"),
                "total": sum(counts.values()),
                "segments": segments,
            }
        )
    legend = [
        {"status": s, "label": RunStatus(s).label, "n": totals.get(s, 0)} for s in CHART_STATUSES if totals.get(s)
    ]
    return {
        "bars": bars,
        "peak": peak,
        "total": sum(totals.values()),
        "legend": legend,
        "width": 24 * (width + gap),
        "height": height,
        "bar_width": width,
        "failed": sum(totals.get(s, 0) for s in FAILED_STATUSES),
    }


def environment_counts(user) -> dict[int, dict]:
    """Enabled and paused jobs the user may see, per environment (those with any), in tenant and
    environment order. The counts come from the index on (tenant, environment, status, team) alone;
    joined to the environments in the same statement, both databases grouped every job by the
    environments' columns (SQLite sorted 10,000 rows: 10 ms of its 11; now 1 ms and 1 ms more for the
    environments' own query)."""
    counts = (
        restrict(Job.objects.exclude(status=JobStatus.DELETED), user)
        .values_list("environment_id", "status")
        .annotate(n=Count("*"))
        .order_by()
    )
    by_env: dict[int, dict[str, int]] = {}
    for env_id, status, n in counts:
        by_env.setdefault(env_id, {})[status] = n
    if not by_env:
        return {}
    environments = (
        Environment.objects.filter(pk__in=by_env)
        .select_related("tenant")
        .only("slug", "name", "order", "required_approvals", "tenant__slug")
        .order_by("tenant__slug", "order", "pk")
    )
    per_env: dict[int, dict] = {}
    for env in environments:
        statuses = by_env[env.pk]
        per_env[env.pk] = {
            "id": env.pk,
            "tenant": env.tenant.slug,
            "slug": env.slug,
            "name": env.name,
            "governed": env.required_approvals > 0,
            "required_approvals": env.required_approvals,
            **statuses,
            "enabled": statuses.get(JobStatus.ENABLED, 0),
            "paused": statuses.get(JobStatus.PAUSED, 0),
            "total": statuses.get(JobStatus.ENABLED, 0) + statuses.get(JobStatus.PAUSED, 0),
        }
    return per_env


@login_required
def dashboard(request):
    user = request.user
    now = timezone.now()
    per_env = environment_counts(user)
    tenants = {env["tenant"] for env in per_env.values()}

    queue = awaiting_review(user).select_related("team", "environment", "author").order_by("created_at")
    mine = (
        ChangeRequest.objects.filter(author=user, status__in=OPEN_STATUSES)
        .select_related("team", "environment", "tenant")
        .order_by("-created_at")
    )
    # The few fields the panels show: the runs' output and definition, the jobs' command, runbook
    # and description are the bulk of their rows.
    failures = (
        restrict(Run.objects.filter(status__in=FAILED_STATUSES), user)
        .select_related("job")
        .only("id", "job_id", "tenant_id", "status", "scheduled_for", "exit_code", "job__name")
        .order_by("-scheduled_for")[:8]
    )
    queue_list = list(queue[:8])
    post_reviews = list(open_post_reviews(user).exclude(change_request__author=user)[:5])
    alerts = list(
        restrict(Alert.objects.filter(resolved_at__isnull=True), user)
        .select_related("job", "job__environment")
        .defer("job__command", "job__runbook", "job__description")
        .order_by("-created_at")[:5]
    )
    context = {
        "environments": list(per_env.values()),
        "multi_tenant": len(tenants) > 1,
        "chart": runs_chart(user, now),
        "failures": list(failures),
        "queue": queue_list,
        "queue_count": review_queue_count(request),
        # The approvals that still count (an approver who lost the role no longer does).
        "mine": with_valid_approvals(list(mine[:8])),
        "decided": recently_decided(user, now=now),
        # What runs now (jobs/snippets/now_panel.html), live while anything is queued or running.
        **now_panel_context(user),
        "post_reviews": post_reviews,
        "overdue_count": overdue_jobs(user).count(),
        "alerts": alerts,
        "now": now,
        "can_propose": restrict(Team.objects.all(), user, Action.PROPOSE).exists(),
    }
    return render(request, "governance/dashboard.html", context)
