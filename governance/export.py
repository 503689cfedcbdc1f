"""Streaming audit exports (CSV and JSON Lines) shared by the API and ``manage.py export_audit``.

Rows are read with ``values()`` and ``iterator()`` in chunks, joined to their
tenant/team/environment slugs in the same query, and written out chunk by
chunk, so memory stays flat however many events match.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, time

from django.apps import apps
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from . import audit
from .actors import Actor
from .models import AuditAction, Tenant

FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}
CHUNK_ROWS = 2000

# (column name, values() lookup)
COLUMNS = [
    ("id", "id"),
    ("tenant", "tenant__slug"),
    ("seq", "seq"),
    ("created_at", "created_at"),
    ("actor", "actor_repr"),
    ("action", "action"),
    ("object_type", "object_type"),
    ("object_id", "object_id"),
    ("object_repr", "object_repr"),
    ("team", "team__slug"),
    ("environment", "environment__slug"),
    ("ip", "ip"),
    ("data", "data"),
    ("prev_hash", "prev_hash"),
    ("hash", "hash"),
]

# A spreadsheet treats a cell starting with these as a formula (OWASP "CSV injection").
_FORMULA_PREFIXES = frozenset("=+-@\t\r\n")


def csv_safe(value: str) -> str:
    """Neutralise a cell a spreadsheet would evaluate, by prefixing a single quote."""
    if value and value[0] in _FORMULA_PREFIXES:
        return "'" + value
    return value


def instant(value: str, field: str, *, end: bool) -> datetime:
    """An ISO 8601 date-time with a zone, or a bare date meaning that whole UTC day (``since=day``
    starts it, ``until=day`` includes it). Django's ``parse_datetime`` reads a bare date as a naive
    midnight, so the date is recognised first."""
    try:
        day = parse_date(value) if len(value) == 10 else None
        parsed = None if day else parse_datetime(value)
    except ValueError:  # well formed, not a real day (2026-02-30)
        day = parsed = None
    if day is not None:
        return datetime.combine(day, time.max if end else time.min, tzinfo=UTC)
    if parsed is None:
        raise ValidationError({field: ["Use an ISO 8601 date or date-time, e.g. 2026-01-31 or 2026-01-31T12:00:00Z."]})
    if timezone.is_naive(parsed):
        raise ValidationError({field: ["Give a time zone, e.g. 2026-01-31T12:00:00Z."]})
    return parsed


OBJECT_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def object_types() -> dict[str, str]:
    """Every name an export accepts for an object type -> the stored type (``app_label.model``).

    The full label always works; the bare model name (``job``) too when only one app has it.
    """
    names: dict[str, str] = {}
    ambiguous: set[str] = set()
    for model in apps.get_models():
        label = model._meta.label_lower
        names[label] = label
        short = model._meta.model_name
        if short is None or short in ambiguous:
            continue
        if short in names and names[short] != label:
            ambiguous.add(short)
            del names[short]
        else:
            names[short] = label
    return names


def parse_object(spec: str | None = "", object_type: str | None = "", object_id: str | None = "") -> dict[str, str]:
    """The object filter, as ``spec`` (``job:42``, ``jobs.job:42``, or a type alone) or as ``object_type``
    with an optional ``object_id``: returns {"object_type": label, "object_id": id?}; raises field errors."""
    spec, object_type, object_id = ((v or "").strip() for v in (spec, object_type, object_id))
    if spec and (object_type or object_id):
        raise ValidationError(
            {"object": ["Give either 'object' (type:id) or 'object_type' and 'object_id', not both."]}
        )
    type_field, id_field = ("object", "object") if spec else ("object_type", "object_id")
    if spec:
        object_type, colon, object_id = (part.strip() for part in spec.partition(":"))
        if colon and not object_id:
            raise ValidationError({"object": ["Give the id after the colon, e.g. job:42."]})
    if not object_type:
        if object_id:
            raise ValidationError({type_field: ["Say which type of object the id is, e.g. job:42."]})
        return {}
    label = object_types().get(object_type.lower())
    if label is None:
        raise ValidationError(
            {type_field: [f"Unknown object type {object_type[:100]!r}; use e.g. job, run, changerequest or jobs.job."]}
        )
    if object_id and not OBJECT_ID_RE.fullmatch(object_id):
        raise ValidationError({id_field: ["An object id is letters, digits, '.', '_' or '-' (at most 64), e.g. 42."]})
    return {"object_type": label, "object_id": object_id} if object_id else {"object_type": label}


def parse_filters(params) -> dict:
    """Validate export filters (``since``, ``until``, ``actor``, ``action``, ``object`` or ``object_type``
    and ``object_id``, ``format``); raise field errors."""
    errors: dict[str, list[str]] = {}
    filters: dict = {"format": params.get("format") or "csv"}
    if filters["format"] not in FORMATS:
        errors["format"] = [f"Must be one of: {', '.join(FORMATS)}."]
    for field, end in (("since", False), ("until", True)):
        raw = params.get(field)
        if raw:
            try:
                filters[field] = instant(raw, field, end=end)
            except ValidationError as exc:
                errors.update(exc.message_dict)
    if filters.get("since") and filters.get("until") and filters["since"] > filters["until"]:
        errors["until"] = ["Must not be before 'since'."]
    actor = params.get("actor")
    if actor:
        filters["actor"] = actor[:150]
    action = params.get("action")
    if action:
        actions = [a.strip() for a in action.split(",") if a.strip()]
        unknown = [a for a in actions if a not in AuditAction.values]
        if unknown:
            errors["action"] = [f"Unknown action(s): {', '.join(unknown)}."]
        filters["action"] = actions
    try:
        filters.update(parse_object(params.get("object"), params.get("object_type"), params.get("object_id")))
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    return filters


# Each filter parse_filters returns and the lookup it narrows the events by.
FILTER_LOOKUPS = {
    "since": "created_at__gte",
    "until": "created_at__lte",
    "actor": "actor_repr",
    "action": "action__in",
    "object_type": "object_type",
    "object_id": "object_id",
}


def filter_events(queryset: QuerySet, filters: dict) -> QuerySet:
    for name, lookup in FILTER_LOOKUPS.items():
        if name in filters:
            queryset = queryset.filter(**{lookup: filters[name]})
    return queryset


def _rows(queryset: QuerySet) -> Iterator[tuple]:
    lookups = [lookup for _, lookup in COLUMNS]
    # Chain order (tenant, seq) keeps each tenant's chain verifiable from the export alone.
    return queryset.order_by("tenant_id", "seq").values_list(*lookups).iterator(chunk_size=CHUNK_ROWS)


def _instant_text(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").removesuffix("+00:00") + "Z"


def _data_text(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _csv_row(row: tuple) -> list:
    (id_, tenant, seq, created_at, actor, action, otype, oid, orepr, team, env, ip, data, prev, hash_) = row
    return [
        id_,
        tenant or "",
        seq,
        _instant_text(created_at),
        csv_safe(actor),
        csv_safe(action),
        csv_safe(otype),
        csv_safe(oid),
        csv_safe(orepr),
        csv_safe(team or ""),
        csv_safe(env or ""),
        ip or "",
        csv_safe(_data_text(data)),
        prev,
        hash_,
    ]


def _json_row(row: tuple) -> str:
    out = dict(zip(NAMES, row, strict=True))
    out["created_at"] = _instant_text(out["created_at"])
    return json.dumps(out, sort_keys=True, separators=(",", ":"))


NAMES = [name for name, _ in COLUMNS]
ROWS_PER_CHUNK = 500


def _batches(rows: Iterable[tuple]) -> Iterator[list[tuple]]:
    batch: list[tuple] = []
    for row in rows:
        batch.append(row)
        if len(batch) == ROWS_PER_CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def stream_csv(rows: Iterable[tuple]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(NAMES)
    for batch in _batches(rows):
        writer.writerows(map(_csv_row, batch))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


def stream_jsonl(rows: Iterable[tuple]) -> Iterator[str]:
    for batch in _batches(rows):
        yield "".join(_json_row(row) + "\n" for row in batch)


def stream(queryset: QuerySet, fmt: str) -> Iterator[str]:
    rows = _rows(queryset)
    return stream_csv(rows) if fmt == "csv" else stream_jsonl(rows)


def attachment(chunks: Iterable[str], fmt: str, name: str) -> StreamingHttpResponse:
    """A streamed export as a download named ``<name>-<UTC stamp>.<fmt>``, never cached."""
    response = StreamingHttpResponse(chunks, content_type=FORMATS[fmt])
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.{fmt}"'
    response["Cache-Control"] = "no-store"
    return response


def record_export(*, actor: Actor, tenant_ids: Iterable[int | None], filters: dict, surface: str, ip=None) -> None:
    """Audit the export itself, once in every chain whose events it may contain."""
    described = {
        key: (value.isoformat() if isinstance(value, datetime) else value)
        for key, value in filters.items()
        if key != "format"
    }
    for tenant_id in sorted(tenant_ids, key=lambda t: (t is not None, t or 0)):
        audit.record(
            AuditAction.EXPORT,
            actor=actor,
            actor_repr=None if getattr(actor, "is_authenticated", False) else surface,
            tenant=tenant_id,
            data={"format": filters["format"], "filters": described, "surface": surface},
            ip=ip,
        )


def all_chain_ids() -> list[int | None]:
    return [None, *Tenant.objects.values_list("pk", flat=True)]
