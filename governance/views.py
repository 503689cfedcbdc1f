"""Dashboard and audit pages of the browser UI."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count
from django.db.models.functions import TruncHour
from django.shortcuts import render
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.http import urlencode

from approvals.lifecycle import overdue_jobs
from approvals.models import OPEN_STATUSES, ChangeRequest
from approvals.services import awaiting_review, open_post_reviews, with_valid_approvals
from jobs.models import Alert, Job, JobStatus, Run, RunStatus
from jobs.schedule import isoz
from jobs.watch_views import now_panel_context

from .access import Action, restrict
from .export import parse_object
from .models import AuditAction, AuditEvent, Team

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


def review_queue(user):
    """Submitted requests the user may review (one rule for the UI queue, its badge and the API)."""
    return awaiting_review(user)


def runs_chart(user, now: datetime) -> dict:
    """Runs scheduled in the last 24 hours, stacked per hour and status, as SVG geometry."""
    start = (now - timedelta(hours=23)).replace(minute=0, second=0, microsecond=0)
    rows = (
        restrict(Run.objects.filter(scheduled_for__gte=start, scheduled_for__lte=now), user)
        .annotate(hour=TruncHour("scheduled_for", tzinfo=UTC))
        .values("hour", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    buckets: dict[datetime, dict[str, int]] = {start + timedelta(hours=i): {} for i in range(24)}
    totals: dict[str, int] = {}
    for row in rows:
        hour = row["hour"].astimezone(UTC)
        status = row["status"] if row["status"] in CHART_STATUSES else RunStatus.QUEUED
        bucket = buckets.setdefault(hour, {})
        bucket[status] = bucket.get(status, 0) + row["n"]
        totals[status] = totals.get(status, 0) + row["n"]
    peak = max((sum(b.values()) for b in buckets.values()), default=0)
    width, height, gap = 24, 120, 4
    bars = []
    for index, (hour, counts) in enumerate(sorted(buckets.items())):
        y = height
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

    queue = review_queue(user).select_related("team", "environment", "author").order_by("created_at")
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
        "post_reviews": post_reviews,
        "overdue_count": overdue_jobs(user).count(),
        "alerts": alerts,
        "now": now,
        "can_propose": restrict(Team.objects.all(), user, Action.PROPOSE).exists(),
        # What runs now (jobs/snippets/now_panel.html), live while anything is queued or running.
        **now_panel_context(user),
    }
    return render(request, "governance/dashboard.html", context)


def _parse_bound(raw: str, *, end: bool) -> datetime | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    parsed = parse_datetime(raw.replace("Z", "+00:00"))
    if parsed is not None:
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    day = parse_date(raw)
    if day is None:
        raise ValueError(raw)
    # A bare "until" date includes that whole day.
    return datetime.combine(day + timedelta(days=1) if end else day, time.min, tzinfo=UTC)


@login_required
def audit_list(request):
    events = restrict(AuditEvent.objects.select_related("tenant"), request.user).order_by("-created_at", "-id")
    errors = {}
    action = request.GET.get("action", "")
    actor = request.GET.get("actor", "").strip()
    obj = request.GET.get("object", "").strip()
    if action:
        if action in AuditAction.values:
            events = events.filter(action=action)
        else:
            errors["action"] = "Unknown action."
    export_params = {}
    if action in AuditAction.values:
        export_params["action"] = action
    if actor:
        # Exact, like the export: "alice" must not also match "alice-bot".
        events = events.filter(actor_repr=actor)
        export_params["actor"] = actor
    if obj:
        # The same syntax as the export (job:42, jobs.job:42, or a type), so the export button carries it.
        try:
            match = parse_object(obj)
        except ValidationError as exc:
            errors["object"] = " ".join(exc.message_dict["object"])
        else:
            events = events.filter(**match)
            export_params["object"] = obj
    for key, is_end in (("since", False), ("until", True)):
        try:
            bound = _parse_bound(request.GET.get(key, ""), end=is_end)
        except ValueError:
            errors[key] = "Use a date (2026-11-29) or an ISO 8601 time (2026-11-29T12:00:00Z)."
            continue
        if bound is not None:
            events = events.filter(**{"created_at__lt" if is_end else "created_at__gte": bound})
            # The export's "until" is inclusive.
            export_params[key] = isoz(bound - timedelta(microseconds=1) if is_end else bound)
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "events": list(page.object_list),
        "actions": AuditAction.choices,
        "filters": {
            "action": action,
            "actor": actor,
            "object": obj,
            "since": request.GET.get("since", ""),
            "until": request.GET.get("until", ""),
        },
        "errors": errors,
        "export_query": urlencode(export_params),
    }
    return render(request, "governance/audit_list.html", context, status=400 if errors else 200)
