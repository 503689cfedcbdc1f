"""Pools: validation, usage counts and admission of runs into a pool's slots.

A pool bounds the active (queued or running) runs of the jobs that name it.
Admission is decided by the scheduler in the same transaction that creates or
releases runs, after locking the pool rows (SELECT ... FOR UPDATE on
PostgreSQL; SQLite runs every write transaction as BEGIN IMMEDIATE, which
serialises writers anyway). Two schedulers therefore never both see the last
free slot. Finishing runs take no lock: a slot freed during a tick only
makes that tick admit one run less, and the next sweep releases it.

A fan-out counts as one slot (its slot's run); the partition runs it starts
are not admitted separately.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Count

from governance.models import Environment, Tenant

from .models import Pool, Run, RunStatus

MAX_SLOTS = 10_000
NAME_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?")
POOL_FIELDS = ("name", "slots", "reserved_critical_slots", "description")
ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


def _count(data: dict, field: str, default: int | None, errors: dict) -> int | None:
    value = data.get(field, default)
    if value is None:
        errors[field] = ["This field is required."]
    elif isinstance(value, bool) or not isinstance(value, int):
        errors[field] = [f"Must be a whole number of slots (got {value!r})."]
    elif value < 0:
        errors[field] = [f"Cannot be negative (got {value})."]
    elif value > MAX_SLOTS:
        errors[field] = [f"At most {MAX_SLOTS} slots."]
    else:
        return value
    return None


def clean_pool(data: Any, *, tenant: Tenant, environment: Environment, pool: Pool | None = None) -> dict:
    """Return a normalised pool definition or raise ValidationError({field: [messages]}).

    ``pool`` is the live pool being changed (None when creating); fields left
    out keep its values.
    """
    if not isinstance(data, dict):
        raise ValidationError({"pool": ["Must be an object with the pool's fields."]})
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(data) - set(POOL_FIELDS))
    if unknown:
        errors["pool"] = [f"Unknown field(s): {', '.join(unknown)}."]
    if environment.tenant_id != tenant.pk:
        errors["environment"] = ["The environment belongs to another tenant."]
    base = {f: getattr(pool, f) for f in POOL_FIELDS} if pool else {"reserved_critical_slots": 0, "description": ""}
    merged = {**base, **{k: v for k, v in data.items() if k in POOL_FIELDS}}

    name = merged.get("name")
    if not isinstance(name, str) or not name:
        errors["name"] = ["This field is required: a lower-case slug such as 'etl'."]
    elif not NAME_PATTERN.fullmatch(name):
        errors["name"] = [
            f"{name!r} is not a pool name: lower-case letters, digits and dashes, "
            "at most 100 characters, starting and ending with a letter or digit."
        ]
    else:
        clash = Pool.objects.filter(environment=environment, name=name)
        if pool is not None:
            clash = clash.exclude(pk=pool.pk)
        if clash.exists():
            errors["name"] = [f"A pool named {name!r} already exists in {environment.slug}."]

    slots = _count(merged, "slots", None, errors)
    reserved = _count(merged, "reserved_critical_slots", 0, errors)
    if slots is not None and reserved is not None and reserved > slots:
        errors["reserved_critical_slots"] = [
            f"Cannot reserve {reserved} slots for critical jobs in a pool of {slots} slots."
        ]

    description = merged.get("description") or ""
    if not isinstance(description, str):
        errors["description"] = ["Must be a string."]
    elif len(description) > 5000:
        errors["description"] = ["At most 5000 characters."]

    if errors:
        raise ValidationError(errors)
    return {"name": name, "slots": slots, "reserved_critical_slots": reserved, "description": description}


def busy_counts(pools: Iterable[Pool]) -> dict[int, int]:
    """Active runs per pool id, in one query whatever the number of pools."""
    pools = list(pools)
    if not pools:
        return {}
    by_key = {(p.environment_id, p.name): p.pk for p in pools}
    rows = (
        Run.objects.filter(
            tenant_id__in={p.tenant_id for p in pools},
            status__in=ACTIVE_STATUSES,
            partition="",
            job__environment_id__in={p.environment_id for p in pools},
            job__pool__in={p.name for p in pools},
        )
        .values_list("job__environment_id", "job__pool")
        .annotate(n=Count("id"))
    )
    counts: Counter[int] = Counter()
    for env_id, name, n in rows:
        pool_id = by_key.get((env_id, name))
        if pool_id is not None:
            counts[pool_id] += n
    return {p.pk: counts[p.pk] for p in pools}


# Change control: what an approved request for a pool calls (approvals.config_changes); nothing else writes pools.


def pool_definition(pool: Pool) -> dict:
    return {f: getattr(pool, f) for f in POOL_FIELDS}


def pool_references(environment_id: int, name: str) -> list[str]:
    """Names of live jobs of the environment whose runs take slots of pool ``name``."""
    from .models import Job, JobStatus

    return list(
        Job.objects.filter(environment_id=environment_id, pool=name)
        .exclude(status=JobStatus.DELETED)
        .order_by("name")
        .values_list("name", flat=True)[:20]
    )


def clean_pool_change(data: Any, *, tenant: Tenant, environment: Environment, pool: Pool | None = None) -> dict:
    """``clean_pool`` plus what only a change of a live pool can break: jobs refer to a pool by name."""
    cleaned = clean_pool(data, tenant=tenant, environment=environment, pool=pool)
    if pool is not None and cleaned["name"] != pool.name:
        users = pool_references(pool.environment_id, pool.name)
        if users:
            raise ValidationError({"name": [f"Jobs run in pool {pool.name}: {', '.join(users)}. It keeps its name."]})
    return cleaned


def apply_pool(
    *,
    actor,
    tenant: Tenant,
    environment: Environment,
    definition: dict,
    pool: Pool | None = None,
    change_request_id: int | None = None,
    change_reason: str | None = None,
) -> Pool:
    """Make a validated pool definition live (create when ``pool`` is None). Change control only."""
    from django.db import transaction

    from governance import audit
    from governance.models import AuditAction

    with transaction.atomic():
        if pool is None:
            pool = Pool(tenant=tenant, environment=environment)
            operation = "create"
        else:
            pool = Pool.objects.select_for_update().get(pk=pool.pk)
            operation = "update"
        for field in POOL_FIELDS:
            setattr(pool, field, definition[field])
        pool.full_clean()
        pool.change_request_id = change_request_id
        pool._change_reason = change_reason or f"change request #{change_request_id}"
        pool._history_user = actor if getattr(actor, "is_authenticated", False) else None
        pool.save()
        audit.record(
            AuditAction.CONFIG_CHANGED,
            actor=actor,
            obj=pool,
            data={"kind": "pool", "operation": operation, "name": pool.name, "change_request": change_request_id},
        )
    return pool


def delete_pool(*, actor, pool: Pool, change_request_id: int | None = None, change_reason: str | None = None) -> None:
    from django.db import transaction

    from governance import audit
    from governance.models import AuditAction

    with transaction.atomic():
        pool = Pool.objects.select_for_update().get(pk=pool.pk)
        users = pool_references(pool.environment_id, pool.name)
        if users:
            raise ValidationError({"target": [f"Jobs still run in pool {pool.name}: {', '.join(users)}."]})
        pool.change_request_id = change_request_id
        pool._change_reason = change_reason or f"change request #{change_request_id}"
        pool._history_user = actor if getattr(actor, "is_authenticated", False) else None
        audit.record(
            AuditAction.CONFIG_CHANGED,
            actor=actor,
            obj=pool,
            data={"kind": "pool", "operation": "delete", "name": pool.name, "change_request": change_request_id},
        )
        pool.delete()
