"""Run exports (CSV and JSON Lines), streamed with flat memory and a constant number of queries.

Used by GET /api/v1/runs/export/ and the "Export" link of the job page; the caller's runs only
(``governance.access.restrict``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, tzinfo

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import StreamingHttpResponse

from governance import audit, export_rows
from governance.access import Action, restrict, tenant_ids
from governance.export import FORMATS, attachment, instant
from governance.models import AuditAction, Tenant

from .models import Run, RunStatus

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


def _batches(queryset: QuerySet[Run]) -> Iterator[list[tuple]]:
    return export_rows.raw_rows(queryset.order_by("id").values_list(*(lookup for _, lookup in COLUMNS)))


def _jsonl_text(batch: list[tuple], zone: tzinfo) -> str:
    """``json.dumps(run, sort_keys=True, separators=(",", ":"))`` per run: the dict is built in key
    order and encoded by the same encoder in one call."""
    instant, text = export_rows.instant_text, export_rows.json_text
    lines = []
    for (
        id_, tenant, job, job_id, scheduled, trigger, status, attempt, version, queued, started, finished,
        exit_code, http_status, worker, cpu_user, cpu_sys, max_rss, output_bytes, reason,
    ) in batch:  # fmt: skip
        run = {
            "attempt": attempt,
            "cpu_sys_s": cpu_sys,
            "cpu_user_s": cpu_user,
            "exit_code": exit_code,
            "finished_at": None if finished is None else instant(finished, zone),
            "http_status": http_status,
            "id": id_,
            "job": job,
            "job_id": job_id,
            "job_version": version,
            "max_rss_kb": max_rss,
            "output_bytes": output_bytes,
            "queued_at": None if queued is None else instant(queued, zone),
            "reason": reason,
            "scheduled_for": instant(scheduled, zone),
            "started_at": None if started is None else instant(started, zone),
            "status": status,
            "tenant": tenant,
            "trigger": trigger,
            "worker": worker,
        }
        lines.append(text(run) + "\n")
    return "".join(lines)


def _csv_text(batch: list[tuple], zone: tzinfo) -> str:
    """The CSV records csv.writer would write of the cells (``csv_safe`` text, numbers, None as ""):
    one f-string per record; a record whose short text cells need quoting is left to csv.writer."""
    formula, special, instant, quoted = (
        export_rows.FORMULA_PREFIXES,
        export_rows.CSV_SPECIAL.search,
        export_rows.instant_text,
        export_rows.csv_quoted,
    )
    lines = []
    for (
        id_, tenant, job, job_id, scheduled, trigger, status, attempt, version, queued, started, finished,
        exit_code, http_status, worker, cpu_user, cpu_sys, max_rss, output_bytes, reason,
    ) in batch:  # fmt: skip
        if tenant[:1] in formula:
            tenant = "'" + tenant
        if job[:1] in formula:
            job = "'" + job
        if trigger[:1] in formula:
            trigger = "'" + trigger
        if status[:1] in formula:
            status = "'" + status
        if worker[:1] in formula:
            worker = "'" + worker
        if reason[:1] in formula:
            reason = "'" + reason
        # Times start with a digit: csv_safe leaves them as they are.
        scheduled = instant(scheduled, zone)
        queued = "" if queued is None else instant(queued, zone)
        started = "" if started is None else instant(started, zone)
        finished = "" if finished is None else instant(finished, zone)
        if special("".join((tenant, job, trigger, status, worker))):
            cells = [
                id_, tenant, job, job_id, scheduled, trigger, status, attempt, version, queued, started, finished,
                exit_code, http_status, worker, cpu_user, cpu_sys, max_rss, output_bytes, reason,
            ]  # fmt: skip
            lines.append(export_rows.csv_line(["" if cell is None else cell for cell in cells]))
            continue
        lines.append(
            f"{id_},{tenant},{job},{job_id},{scheduled},{trigger},{status},{attempt},{version},"
            f"{queued},{started},{finished},{'' if exit_code is None else exit_code},"
            f"{'' if http_status is None else http_status},{worker},{'' if cpu_user is None else cpu_user},"
            f"{'' if cpu_sys is None else cpu_sys},{'' if max_rss is None else max_rss},{output_bytes},"
            f"{quoted(reason)}\r\n"
        )
    return "".join(lines)


def stream(queryset: QuerySet[Run], fmt: str) -> Iterator[str]:
    zone = export_rows.naive_zone(queryset.db)
    if fmt == "jsonl":
        for batch in _batches(queryset):
            yield _jsonl_text(batch, zone)
        return
    header = export_rows.csv_line(NAMES)
    for batch in _batches(queryset):
        yield header + _csv_text(batch, zone)
        header = ""
    if header:
        yield header


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
