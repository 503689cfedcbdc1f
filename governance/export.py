"""Streaming audit exports (CSV and JSON Lines) shared by the API and ``manage.py export_audit``.

Rows are read in chunks (``export_rows.raw_rows``: the ``values_list`` queryset's own SQL, joined to
their tenant/team/environment slugs, through a server-side cursor on PostgreSQL) and written out chunk
by chunk, so memory stays flat however many events match. The bytes are pinned by
tests/test_export_bytes.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, time, tzinfo

from django.apps import apps
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from . import audit, export_rows
from .actors import Actor
from .models import AuditAction, Tenant

FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}

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

_FORMULA_PREFIXES = export_rows.FORMULA_PREFIXES


def csv_safe(value: str) -> str:
    """Neutralise a cell a spreadsheet would evaluate (OWASP "CSV injection"), by prefixing a single quote."""
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


def _rows(queryset: QuerySet) -> Iterator[list[tuple]]:
    lookups = [lookup for _, lookup in COLUMNS]
    # Chain order (tenant, seq) keeps each tenant's chain verifiable from the export alone.
    return export_rows.raw_rows(queryset.order_by("tenant_id", "seq").values_list(*lookups))


def _instant_text(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").removesuffix("+00:00") + "Z"


NAMES = [name for name, _ in COLUMNS]


def _csv_text(batch: list[tuple], zone: tzinfo) -> str:
    """The CSV records of raw rows (export_rows.raw_rows), as csv.writer would write the cells
    ``csv_safe`` makes of them: one f-string per record; a record whose plain cells need quoting
    (rare) is left to csv.writer itself. Inlined: it runs once per exported event."""
    formula, special, instant, value, text = (
        export_rows.FORMULA_PREFIXES,
        export_rows.CSV_SPECIAL.search,
        export_rows.instant_text,
        export_rows.json_value,
        export_rows.json_text,
    )
    lines = []
    for id_, tenant, seq, created, actor, action, otype, oid, orepr, team, env, ip, data, prev, hash_ in batch:
        if actor[:1] in formula:
            actor = "'" + actor
        if action[:1] in formula:
            action = "'" + action
        if otype[:1] in formula:
            otype = "'" + otype
        if oid[:1] in formula:
            oid = "'" + oid
        if orepr[:1] in formula:
            orepr = "'" + orepr
        team = "" if team is None else "'" + team if team[:1] in formula else team
        env = "" if env is None else "'" + env if env[:1] in formula else env
        data = text(value(data))
        if data[:1] in formula:
            data = "'" + data
        tenant = tenant or ""
        ip = ip or ""
        created = instant(created, zone)
        if special("".join((tenant, actor, action, otype, oid, orepr, team, env, ip, prev, hash_))):
            cells = [id_, tenant, seq, created, actor, action, otype, oid, orepr, team, env, ip, data, prev, hash_]
            lines.append(export_rows.csv_line(cells))
        else:
            # JSON text (ASCII, control characters escaped) needs quoting for exactly these two.
            if '"' in data or "," in data:
                data = '"' + data.replace('"', '""') + '"'
            lines.append(
                f"{id_},{tenant},{seq},{created},{actor},{action},{otype},{oid},{orepr},"
                f"{team},{env},{ip},{data},{prev},{hash_}\r\n"
            )
    return "".join(lines)


def _jsonl_text(batch: list[tuple], zone: tzinfo) -> str:
    """JSON Lines of raw rows: ``json.dumps(event, sort_keys=True, separators=(",", ":"))`` written
    out key by key (keys in sorted order; strings by the same encoder; ids are integers)."""
    instant, value, text = export_rows.instant_text, export_rows.json_value, export_rows.json_text
    lines = []
    for id_, tenant, seq, created, actor, action, otype, oid, orepr, team, env, ip, data, prev, hash_ in batch:
        lines.append(
            f'{{"action":{text(action)},"actor":{text(actor)},"created_at":"{instant(created, zone)}",'
            f'"data":{text(value(data))},"environment":{"null" if env is None else text(env)},'
            f'"hash":{text(hash_)},"id":{id_},"ip":{"null" if ip is None else text(ip)},'
            f'"object_id":{text(oid)},"object_repr":{text(orepr)},"object_type":{text(otype)},'
            f'"prev_hash":{text(prev)},"seq":{seq},"team":{"null" if team is None else text(team)},'
            f'"tenant":{"null" if tenant is None else text(tenant)}}}\n'
        )
    return "".join(lines)


def stream_csv(batches: Iterable[list[tuple]], zone: tzinfo = UTC) -> Iterator[str]:
    header = export_rows.csv_line(NAMES)
    for batch in batches:
        yield header + _csv_text(batch, zone)
        header = ""
    if header:
        yield header


def stream_jsonl(batches: Iterable[list[tuple]], zone: tzinfo = UTC) -> Iterator[str]:
    for batch in batches:
        yield _jsonl_text(batch, zone)


def stream(queryset: QuerySet, fmt: str) -> Iterator[str]:
    rows = _rows(queryset)
    zone = export_rows.naive_zone(queryset.db)
    return stream_csv(rows, zone) if fmt == "csv" else stream_jsonl(rows, zone)


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
