"""Pages that compose several apps: the dashboard (environments, runs, review queue, alerts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.db.models import CharField, Count
from django.db.models.functions import Substr, TruncHour
from django.shortcuts import render
from django.utils import timezone

from approvals.dashboard import recently_decided
from approvals.lifecycle import overdue_jobs
from approvals.models import OPEN_STATUSES, ChangeRequest
from approvals.services import awaiting_review, open_post_reviews, with_valid_approvals
from governance.access import Action, restrict
from governance.models import Team
from jobs.models import Alert, Job, JobStatus, Run, RunStatus
from jobs.watch_views import now_panel_context

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


def _hour_of(field: str):
    """The UTC hour of a time column. On SQLite (times stored as UTC text) its first 13 characters,
    ``2026-12-07 05``: Django's TruncHour there calls a Python function per row (a day of runs)."""
    if connection.vendor == "sqlite":
        return Substr(field, 1, 13, output_field=CharField())
    return TruncHour(field, tzinfo=UTC)


def runs_chart(user, now: datetime) -> dict:
    """Runs scheduled in the last 24 hours, stacked per hour and status, as SVG geometry."""
    start = (now - timedelta(hours=23)).replace(minute=0, second=0, microsecond=0)
    rows = (
        restrict(Run.objects.filter(scheduled_for__gte=start, scheduled_for__lte=now), user)
        .annotate(hour=_hour_of("scheduled_for"))
        .values("hour", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    buckets: dict[datetime, dict[str, int]] = {start + timedelta(hours=i): {} for i in range(24)}
    totals: dict[str, int] = {}
    for row in rows:
        hour = row["hour"]
        if isinstance(hour, str):
            hour = datetime.strptime(hour, "%Y-%m-%d %H").replace(tzinfo=UTC)
        hour = hour.astimezone(UTC)
        status = row["status"] if row["status"] in CHART_STATUSES else RunStatus.QUEUED
        bucket = buckets.setdefault(hour, {})
        bucket[status] = bucket.get(status, 0) + row["n"]
        totals[status] = totals.get(status, 0) + row["n"]
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


@login_required
def dashboard(request):
    user = request.user
    now = timezone.now()
    per_env: dict[int, dict] = {}
    counts = (
        restrict(Job.objects.exclude(status=JobStatus.DELETED), user)
        .values(
            "environment_id",
            "environment__slug",
            "environment__name",
            "environment__order",
            "environment__required_approvals",
            "tenant__slug",
            "status",
        )
        .annotate(n=Count("id"))
        .order_by("tenant__slug", "environment__order")
    )
    for row in counts:
        env = per_env.setdefault(
            row["environment_id"],
            {
                "id": row["environment_id"],
                "tenant": row["tenant__slug"],
                "slug": row["environment__slug"],
                "name": row["environment__name"],
                "governed": row["environment__required_approvals"] > 0,
                "required_approvals": row["environment__required_approvals"],
                "enabled": 0,
                "paused": 0,
            },
        )
        env[row["status"]] = env.get(row["status"], 0) + row["n"]
    for env in per_env.values():
        env["total"] = env["enabled"] + env["paused"]
    tenants = {env["tenant"] for env in per_env.values()}

    queue = awaiting_review(user).select_related("team", "environment", "author").order_by("created_at")
    mine = (
        ChangeRequest.objects.filter(author=user, status__in=OPEN_STATUSES)
        .select_related("team", "environment", "tenant")
        .order_by("-created_at")
    )
    failures = (
        restrict(Run.objects.filter(status__in=FAILED_STATUSES), user)
        .select_related("job", "job__environment")
        .order_by("-scheduled_for")[:8]
    )
    queue_list = list(queue[:8])
    post_reviews = list(open_post_reviews(user).exclude(change_request__author=user)[:5])
    alerts = list(
        restrict(Alert.objects.filter(resolved_at__isnull=True), user)
        .select_related("job", "job__environment")
        .order_by("-created_at")[:5]
    )
    context = {
        "environments": list(per_env.values()),
        "multi_tenant": len(tenants) > 1,
        "chart": runs_chart(user, now),
        "failures": list(failures),
        "queue": queue_list,
        "queue_count": queue.count(),
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
