"""Audit page of the browser UI (the dashboard, which composes every app, is governor/views.py)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import render
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.http import urlencode

from .access import restrict
from .export import parse_object
from .models import AuditAction, AuditEvent
from .paging import CURSOR_ERROR, time_page
from .utc import isoz


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
    try:
        page = time_page(events, request.GET, "created_at")
    except ValueError:
        errors["before" if request.GET.get("before") else "after"] = CURSOR_ERROR
        page = time_page(events.none(), {}, "created_at")
    context = {
        "page": page,
        "events": page.object_list,
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
