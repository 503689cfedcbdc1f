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

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Count, F, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, Greatest

from governance.actors import Actor
from governance.history import delete_with_history, save_with_history
from governance.models import Environment, Tenant

from .models import Criticality, Job, Pool, Run, RunStatus, TenantExecutionPolicy

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
    actor: Actor,
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
        save_with_history(pool, actor=actor, reason=change_reason or f"change request #{change_request_id}")
        audit.record(
            AuditAction.CONFIG_CHANGED,
            actor=actor,
            obj=pool,
            data={"kind": "pool", "operation": operation, "name": pool.name, "change_request": change_request_id},
        )
    return pool


def delete_pool(
    *, actor: Actor, pool: Pool, change_request_id: int | None = None, change_reason: str | None = None
) -> None:
    from django.db import transaction

    from governance import audit
    from governance.models import AuditAction

    with transaction.atomic():
        pool = Pool.objects.select_for_update().get(pk=pool.pk)
        users = pool_references(pool.environment_id, pool.name)
        if users:
            raise ValidationError({"target": [f"Jobs still run in pool {pool.name}: {', '.join(users)}."]})
        pool.change_request_id = change_request_id
        audit.record(
            AuditAction.CONFIG_CHANGED,
            actor=actor,
            obj=pool,
            data={"kind": "pool", "operation": "delete", "name": pool.name, "change_request": change_request_id},
        )
        delete_with_history(pool, actor=actor, reason=change_reason or f"change request #{change_request_id}")


# --- admission ---------------------------------------------------------------------------


def is_critical(job: Job) -> bool:
    return job.criticality == Criticality.CRITICAL


def is_low_priority(job: Job) -> bool:
    """Runs that backpressure defers: below the threshold priority and not critical."""
    return job.priority < settings.GOVERNOR_BACKPRESSURE_PRIORITY and not is_critical(job)


class Admission:
    """Pool slots and queue depth for the jobs of one scheduler transaction, read once.

    Construct it inside the transaction that writes the runs: it locks the pool
    rows first, so the counts it reads stay true until that transaction commits.
    Every admitted run is counted at once, so later runs of the same pass see it.
    """

    def __init__(self, jobs: Iterable[Job]) -> None:
        jobs = list(jobs)
        wanted = {(job.environment_id, job.pool) for job in jobs if job.pool}
        self.pools: dict[tuple[int, str], Pool] = {}
        if wanted:
            locked = (
                Pool.objects.select_for_update(of=("self",))
                .select_related("environment")
                .filter(environment_id__in={env for env, _ in wanted}, name__in={name for _, name in wanted})
                .order_by("pk")  # one lock order for every scheduler: no deadlock between them
            )
            self.pools = {(p.environment_id, p.name): p for p in locked if (p.environment_id, p.name) in wanted}
        self.busy: dict[int, int] = busy_counts(self.pools.values())
        self.limits: dict[int, int] = {}
        self.depth: Counter[int] = Counter()
        tenants = {job.tenant_id for job in jobs if is_low_priority(job)}
        if tenants:
            default = settings.GOVERNOR_QUEUE_DEPTH_LIMIT
            overrides = {
                tenant_id: limit
                for tenant_id, limit in TenantExecutionPolicy.objects.filter(
                    tenant_id__in=tenants, queue_depth_limit__isnull=False
                ).values_list("tenant_id", "queue_depth_limit")
                if limit is not None
            }
            self.limits = {t: overrides.get(t, default) for t in tenants}
            bounded = [t for t, limit in self.limits.items() if limit]
            if bounded:
                self.depth.update(
                    dict(
                        Run.objects.filter(tenant_id__in=bounded, status=RunStatus.QUEUED)
                        .values_list("tenant_id")
                        .annotate(n=Count("id"))
                    )
                )

    def pool_of(self, job: Job) -> Pool | None:
        return self.pools.get((job.environment_id, job.pool)) if job.pool else None

    def refusal(self, job: Job) -> str | None:
        """Why one more run of ``job`` must wait now, or None when it may go."""
        limit = self.limits.get(job.tenant_id, 0)
        if limit and is_low_priority(job) and self.depth[job.tenant_id] >= limit:
            return (
                f"Deferred: backpressure: queue depth {self.depth[job.tenant_id]} >= limit {limit}; "
                f"runs of priority below {settings.GOVERNOR_BACKPRESSURE_PRIORITY} wait until it drains."
            )
        pool = self.pool_of(job)
        if pool is not None:
            busy = self.busy[pool.pk]
            if not pool.admits(busy, critical=is_critical(job)):
                reserved = pool.reserved_critical_slots
                if busy < pool.slots:
                    return (
                        f"Deferred: pool {pool} full for non-critical jobs: {busy} of {pool.slots} slots busy, "
                        f"{reserved} reserved for critical jobs."
                    )
                return f"Deferred: pool {pool} full: {busy} of {pool.slots} slots busy."
        return None

    def take(self, job: Job) -> None:
        """Count one admitted run of ``job``."""
        pool = self.pool_of(job)
        if pool is not None:
            self.busy[pool.pk] += 1
        self.depth[job.tenant_id] += 1

    def give_back(self, job: Job) -> None:
        """Undo ``take`` for a run that will not go after all."""
        pool = self.pool_of(job)
        if pool is not None:
            self.busy[pool.pk] -= 1
        self.depth[job.tenant_id] -= 1

    def admit(self, job: Job) -> str | None:
        """Admit one run of ``job`` (and count it), or return why it must wait."""
        reason = self.refusal(job)
        if reason is None:
            self.take(job)
        return reason


def usage(pools: Iterable[Pool]) -> dict[int, dict[str, int]]:
    """{pool id: {"busy": n, "free": n}} for display, in one query."""
    pools = list(pools)
    busy = busy_counts(pools)
    return {p.pk: {"busy": busy[p.pk], "free": max(0, p.slots - busy[p.pk])} for p in pools}


def with_usage(queryset: QuerySet[Pool]) -> QuerySet[Pool]:
    """Pools annotated with ``busy`` and ``free``: a correlated count in the same query, whatever the rows."""
    active = (
        Run.objects.filter(
            tenant_id=OuterRef("tenant_id"),
            status__in=ACTIVE_STATUSES,
            partition="",
            job__environment_id=OuterRef("environment_id"),
            job__pool=OuterRef("name"),
        )
        .order_by()
        .values("tenant_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return queryset.annotate(busy=Coalesce(Subquery(active), 0)).annotate(
        free=Greatest(F("slots") - F("busy"), Value(0))
    )
