"""Run exports (CSV and JSON Lines), streamed with flat memory and a constant number of queries.

Used by GET /api/v1/runs/export/ and the "Export" link of the job page; the caller's runs only
(``governance.access.restrict``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import StreamingHttpResponse

from governance import audit
from governance.access import Action, restrict, tenant_ids
from governance.export import FORMATS, _instant_text, attachment, csv_safe, instant
from governance.models import AuditAction, Tenant

from .models import Run, RunStatus

CHUNK_ROWS = 2000
COLUMNS = [
    ("id", "id"),
    ("tenant", "tenant__slug"),
    ("job", "job__name"),
    ("job_id", "job_id"),
    ("scheduled_for", "scheduled_for"),
    ("trigger", "trigger"),
    ("status", "status"),
    ("attempt", "attempt"),
    ("job_version", "job_version"),
    ("queued_at", "queued_at"),
    ("started_at", "started_at"),
    ("finished_at", "finished_at"),
    ("exit_code", "exit_code"),
    ("http_status", "http_status"),
    ("worker", "worker"),
    ("cpu_user_s", "cpu_user_s"),
    ("cpu_sys_s", "cpu_sys_s"),
    ("max_rss_kb", "max_rss_kb"),
    ("output_bytes", "output_bytes"),
    ("reason", "reason"),
]
NAMES = [name for name, _ in COLUMNS]
_TIMES = {"scheduled_for", "queued_at", "started_at", "finished_at"}


def parse_filters(params) -> dict:
    """``format``, ``job`` (name), ``since``/``until`` (scheduled_for, ISO 8601), ``status`` (comma list)."""
    errors: dict[str, list[str]] = {}
    filters: dict = {"format": params.get("format") or "csv"}
    if filters["format"] not in FORMATS:
        errors["format"] = [f"Must be one of: {', '.join(FORMATS)}."]
    for name, end in (("since", False), ("until", True)):
        raw = params.get(name)
        if raw:
            try:
                filters[name] = instant(raw, name, end=end)
            except ValidationError as exc:
                errors.update(exc.message_dict)
    if filters.get("since") and filters.get("until") and filters["since"] > filters["until"]:
        errors["until"] = ["Must not be before 'since'."]
    if params.get("job"):
        job = params["job"]
        if len(job) > 200:
            errors["job"] = ["A job name has at most 200 characters."]
        filters["job"] = job
    if params.get("status"):
        statuses = [s.strip() for s in params["status"].split(",") if s.strip()]
        unknown = [s for s in statuses if s not in RunStatus.values]
        if unknown:
            errors["status"] = [
                f"Unknown status(es): {', '.join(unknown[:10])[:300]}; use {', '.join(RunStatus.values)}."
            ]
        filters["status"] = statuses
    if errors:
        raise ValidationError(errors)
    return filters


def runs_for(user, filters: dict) -> QuerySet[Run]:
    queryset = restrict(Run.objects.all(), user, Action.VIEW)
    if "job" in filters:
        queryset = queryset.filter(job__name=filters["job"])
    if "since" in filters:
        queryset = queryset.filter(scheduled_for__gte=filters["since"])
    if "until" in filters:
        queryset = queryset.filter(scheduled_for__lte=filters["until"])
    if "status" in filters:
        queryset = queryset.filter(status__in=filters["status"])
    return queryset


def _dicts(queryset: QuerySet[Run]) -> Iterator[dict]:
    rows = queryset.order_by("id").values_list(*(lookup for _, lookup in COLUMNS)).iterator(chunk_size=CHUNK_ROWS)
    for row in rows:
        out = dict(zip(NAMES, row, strict=True))
        for name in _TIMES:
            if out[name] is not None:
                out[name] = _instant_text(out[name])
        yield out


def stream(queryset: QuerySet[Run], fmt: str) -> Iterator[str]:
    if fmt == "jsonl":
        batch: list[str] = []
        for out in _dicts(queryset):
            batch.append(json.dumps(out, sort_keys=True, separators=(",", ":")))
            if len(batch) == 500:
                yield "\n".join(batch) + "\n"
                batch = []
        if batch:
            yield "\n".join(batch) + "\n"
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(NAMES)
    for n, out in enumerate(_dicts(queryset), 1):
        writer.writerow([csv_safe(v) if isinstance(v, str) else ("" if v is None else v) for v in out.values()])
        if n % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def response(user, filters: dict, *, surface: str, ip=None) -> StreamingHttpResponse:
    """The streamed export, audited once in each tenant whose runs it may hold."""
    described = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in filters.items()}
    chains = (
        sorted(tenant_ids(user, Action.VIEW))
        if not user.is_superuser
        else sorted(Tenant.objects.values_list("pk", flat=True))
    )
    for tenant_id in chains:
        audit.record(
            AuditAction.RUNS_EXPORTED, actor=user, tenant=tenant_id, data={**described, "surface": surface}, ip=ip
        )
    return attachment(stream(runs_for(user, filters), filters["format"]), filters["format"], "runs")
