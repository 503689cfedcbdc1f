"""The executor's per-run SQL, written out once instead of compiled by the ORM for every run.

A no-op job costs a worker about half a millisecond of CPU to spawn; the ORM spent
several times that compiling the same five statements for every run (see bench/).
Each statement here is built once per process from the models' ``_meta`` (table and
column names, the backend's quoting), values are adapted with each field's own
``get_db_prep_save`` and read back with the backend's converters, so the rows mean
exactly what the ORM would make of them, on SQLite and PostgreSQL alike.

- ``claim_and_load``: the conditional ``UPDATE … RETURNING`` that takes a queued run
  (only one caller ever wins an attempt) and returns, in the same statement, what
  execution needs from the job, its environment and the tenant's execution policy;
- ``record``: the run's result and its ``Attempt`` row (in the caller's transaction),
  the same statement telling whether any job may be downstream of it;
- ``delete_queue_message``: the run's django-q2 message, deleted with its result (jobs.tasks);
- ``downstream_candidates``: the jobs whose dependencies name a finished job;
- ``bulk_insert``: the scheduler's burst of new runs and their django-q2 tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.db import connections, models

from governance.models import Environment, Tenant

from .models import Attempt, Job, JobStatus, Run, RunStatus, TenantExecutionPolicy

DB = "default"


def _in_model_order(model, names: set[str]) -> tuple[str, ...]:
    """``Model.from_db`` takes a subset of the columns in the model's own field order."""
    return tuple(f.attname for f in model._meta.concrete_fields if f.attname in names)


# What execution reads from the run (the claim returns them) and from its job.
RUN_COLUMNS = _in_model_order(
    Run,
    {
        "id",
        "tenant_id",
        "job_id",
        "scheduled_for",
        "trigger",
        "status",
        "attempt",
        "job_version",
        "definition",
        "created_at",
        "queued_at",
        "started_at",
        "worker",
        "partition",
        "parent_id",
    },
)
JOB_COLUMNS = _in_model_order(Job, {"id", "tenant_id", "environment_id", "name", "ping_token"})
POLICY_COLUMNS = _in_model_order(TenantExecutionPolicy, {"id", "tenant_id", "allowed_executables"})


def _q(name: str) -> str:
    return connections[DB].ops.quote_name(name)


@cache
def _field(model, attname: str):
    return next(f for f in model._meta.concrete_fields if f.attname == attname)


@cache
def _readers(model, attnames: tuple[str, ...]):
    """Per column, the backend's and the field's converters, as the ORM's compiler applies them."""
    connection = connections[DB]
    readers = []
    for attname in attnames:
        field = _field(model, attname)
        column = field.get_col(model._meta.db_table)
        readers.append((column, connection.ops.get_db_converters(column) + field.get_db_converters(connection)))
    return readers


def _convert(model, attnames: tuple[str, ...], row) -> list:
    connection = connections[DB]
    values = []
    for value, (column, converters) in zip(row, _readers(model, attnames), strict=True):
        for converter in converters:
            value = converter(value, column, connection)
        values.append(value)
    return values


def _adapt(model, attname: str, value):
    return _field(model, attname).get_db_prep_save(value, connections[DB])


# Columns whose values every backend takes as Python gives them: int, float and str need no
# adaptation when they already have that type (anything else still goes through the field).
PLAIN = {
    models.AutoField: int,
    models.BigAutoField: int,
    models.IntegerField: int,
    models.BigIntegerField: int,
    models.SmallIntegerField: int,
    models.PositiveIntegerField: int,
    models.PositiveBigIntegerField: int,
    models.PositiveSmallIntegerField: int,
    models.FloatField: float,
    models.CharField: str,
    models.TextField: str,
}


@cache
def _preparers(model, attnames: tuple[str, ...]):
    preparers = []
    for name in attnames:
        field = _field(model, name)
        plain = PLAIN.get(type(field.target_field if field.is_relation else field))
        preparers.append((plain, field.get_db_prep_save))
    return tuple(preparers)


def _adapt_all(model, attnames: tuple[str, ...], values) -> list:
    """``values`` (in the order of ``attnames``) as the ORM would send them; None stays NULL."""
    connection = connections[DB]
    return [
        value if value is None or type(value) is plain else prepare(value, connection)
        for (plain, prepare), value in zip(_preparers(model, attnames), values, strict=True)
    ]


@cache
def _claim_sql() -> str:
    """The conditional claim, returning the run's columns and, through scalar subqueries (SQLite
    and PostgreSQL allow them in RETURNING), its job's, environment's and execution policy's."""
    run, job, env, policy = (_q(m._meta.db_table) for m in (Run, Job, Environment, TenantExecutionPolicy))
    job_id, tenant_id = f"{run}.{_q('job_id')}", f"{run}.{_q('tenant_id')}"

    def job_column(name: str) -> str:
        return f"(SELECT j.{_q(_field(Job, name).column)} FROM {job} j WHERE j.{_q('id')} = {job_id})"

    returning = [f"{run}.{_q(_field(Run, name).column)}" for name in RUN_COLUMNS]
    returning += [job_column(name) for name in JOB_COLUMNS]
    returning += [
        f"(SELECT e.{_q('slug')} FROM {job} j JOIN {env} e ON e.{_q('id')} = j.{_q('environment_id')} "
        f"WHERE j.{_q('id')} = {job_id})",
        f"(SELECT p.{_q('id')} FROM {policy} p WHERE p.{_q('tenant_id')} = {tenant_id})",
        f"(SELECT p.{_q('allowed_executables')} FROM {policy} p WHERE p.{_q('tenant_id')} = {tenant_id})",
    ]
    return (
        f"UPDATE {run} SET {_q('status')} = %s, {_q('started_at')} = %s, {_q('worker')} = %s, "
        f"{_q('attempt')} = {_q('attempt')} + 1, {_q('lease_expires_at')} = %s, {_q('next_attempt_at')} = NULL "
        f"WHERE {_q('id')} = %s AND {_q('status')} = %s RETURNING {', '.join(returning)}"
    )


def claim_and_load(run_id: int, *, worker: str, now: datetime, lease_until: datetime) -> Run | None:
    """Take a queued run for this worker and return it with its job, environment and tenant
    (execution policy included) attached; None when it is not queued (taken, cancelled, missing).
    One statement: the claim and everything execution reads."""
    connection = connections[DB]
    with connection.cursor() as cursor:
        cursor.execute(
            _claim_sql(),
            [
                RunStatus.RUNNING.value,
                _adapt(Run, "started_at", now),
                worker,
                _adapt(Run, "lease_expires_at", lease_until),
                run_id,
                RunStatus.QUEUED.value,
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    runs, jobs = len(RUN_COLUMNS), len(RUN_COLUMNS) + len(JOB_COLUMNS)
    run = Run.from_db(DB, RUN_COLUMNS, _convert(Run, RUN_COLUMNS, row[:runs]))
    job = Job.from_db(DB, JOB_COLUMNS, _convert(Job, JOB_COLUMNS, row[runs:jobs]))
    env_slug, policy_id, allowed = row[jobs:]
    job.environment = Environment.from_db(DB, ("id", "slug"), [job.environment_id, env_slug])
    tenant = Tenant.from_db(DB, ("id",), [run.tenant_id])
    if policy_id is None:
        Tenant.execution_policy.related.set_cached_value(tenant, None)  # reads as DoesNotExist, no query
    else:
        policy_row = {"id": policy_id, "tenant_id": run.tenant_id, "allowed_executables": allowed}
        row = [policy_row[name] for name in POLICY_COLUMNS]
        tenant.execution_policy = TenantExecutionPolicy.from_db(
            DB, POLICY_COLUMNS, _convert(TenantExecutionPolicy, POLICY_COLUMNS, row)
        )
    run.job, run.tenant = job, tenant
    return run


@cache
def _insert_sql() -> tuple[str, tuple[str, ...]]:
    fields = tuple(f.attname for f in Attempt._meta.concrete_fields if not f.primary_key)
    columns = ", ".join(_q(_field(Attempt, name).column) for name in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    return f"INSERT INTO {_q(Attempt._meta.db_table)} ({columns}) VALUES ({placeholders})", fields


@dataclass(frozen=True)
class Recording:
    """A result's two statements with their adapted parameters, built before the write lock is taken."""

    update: tuple[str, list]
    insert: tuple[str, list]


def recording(run: Run, fields: dict, attempt: dict, *, only_if_running: bool) -> Recording:
    """The statements that write the run's ``fields`` and insert its attempt (``Attempt`` field
    values). With ``only_if_running``, nothing is written unless the run is still running (not lost
    or cancelled meanwhile). Either way nothing is written over a later attempt of the run. Everything is adapted here, outside the transaction: on SQLite the write
    lock is held from BEGIN, and every other worker, django-q2's pusher and its monitor wait for it."""
    names = tuple(fields)
    params = _adapt_all(Run, names, fields.values()) + [run.pk, run.attempt]
    if only_if_running:
        params.append(RunStatus.RUNNING.value)
    params += [run.tenant_id, run.job.environment_id, JobStatus.ENABLED.value, _like_name(run.job.name)]
    insert, attempt_fields = _insert_sql()
    values = [attempt[name] if name in attempt else _field(Attempt, name).get_default() for name in attempt_fields]
    return Recording(
        (_update_sql(names, only_if_running), params), (insert, _adapt_all(Attempt, attempt_fields, values))
    )


def record(statements: Recording) -> tuple[bool, bool]:
    """Execute a ``recording``; the caller holds the transaction.

    Returns (written, downstream): whether it was written, and whether any enabled job of the
    environment may name this run's job as its upstream, read by the same statement (see
    ``downstream_candidates``, which tells exactly which)."""
    with connections[DB].cursor() as cursor:
        cursor.execute(*statements.update)
        row = cursor.fetchone()
        if row is None:
            return False, False
        cursor.execute(*statements.insert)
    return True, bool(row[0])


@cache
def _delete_message_sql() -> str:
    from django_q.models import OrmQ

    return f"DELETE FROM {_q(OrmQ._meta.db_table)} WHERE {_q(OrmQ._meta.pk.column)} = %s"


def delete_queue_message(message_id: int) -> None:
    """Delete a django-q2 ORM-broker message (its acknowledgement) in the caller's transaction."""
    with connections[DB].cursor() as cursor:
        cursor.execute(_delete_message_sql(), [message_id])


# Repeated word for word from the partial index of migration jobs/0011 (SQLite and PostgreSQL use a
# partial index only for a query that contains its condition).
HAS_DEPENDENCIES = "\"dependencies\" <> '[]'"


def _downstream_where() -> str:
    """Enabled jobs of a tenant's environment whose dependencies' JSON text holds a quoted name."""
    text = _q("dependencies") + ("::text" if connections[DB].vendor == "postgresql" else "")
    return (
        f"{_q('tenant_id')} = %s AND {_q('environment_id')} = %s AND {HAS_DEPENDENCIES} "
        f"AND {_q('status')} = %s AND {text} LIKE %s ESCAPE '\\'"
    )


def _like_name(name: str) -> str:
    return "%" + connections[DB].ops.prep_for_like_query(f'"{name}"') + "%"


@cache
def _update_sql(fields: tuple[str, ...], check_status: bool) -> str:
    run = _q(Run._meta.db_table)
    assignments = ", ".join(f"{_q(_field(Run, name).column)} = %s" for name in fields)
    # Only over this worker's own attempt: a worker that stalled past its lease, whose run was
    # taken again as a new attempt, must not write its result over the new one.
    where = f"{_q('id')} = %s AND {_q('attempt')} = %s" + (f" AND {_q('status')} = %s" if check_status else "")
    downstream = f"EXISTS (SELECT 1 FROM {_q(Job._meta.db_table)} WHERE {_downstream_where()})"
    return f"UPDATE {run} SET {assignments} WHERE {where} RETURNING {downstream}"


@cache
def _downstream_sql() -> str:
    return f"SELECT {_q('id')}, {_q('dependencies')} FROM {_q(Job._meta.db_table)} WHERE {_downstream_where()}"


def downstream_candidates(tenant_id: int, environment_id: int, upstream_name: str) -> list[int]:
    """Ids of the enabled jobs of the environment with an edge from ``upstream_name``.

    Most jobs have no dependencies: a partial index holds only those that have some, the name
    sits quoted in their JSON text, so a LIKE narrows them further in SQL, and only the few
    rows it returns are parsed and checked exactly."""
    names = ("id", "dependencies")
    with connections[DB].cursor() as cursor:
        params: list[Any] = [tenant_id, environment_id, JobStatus.ENABLED.value, _like_name(upstream_name)]
        cursor.execute(_downstream_sql(), params)
        rows = cursor.fetchall()
    matching = []
    for row in rows:
        pk, dependencies = _convert(Job, names, row)
        if any(isinstance(edge, dict) and edge.get("upstream") == upstream_name for edge in dependencies or []):
            matching.append(pk)
    return matching


def prepare() -> None:
    """Build every statement and converter now. Called when the app loads: django-q2 forks its
    workers from the cluster process, so a recycled worker starts with them built."""
    _claim_sql()
    _insert_sql()
    _downstream_sql()
    _delete_message_sql()
    _readers(Run, RUN_COLUMNS)
    _readers(Job, JOB_COLUMNS)
    _readers(Job, ("id", "dependencies"))
    _readers(TenantExecutionPolicy, POLICY_COLUMNS)


@cache
def _bulk_insert_sql(model, rows: int) -> str:
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(_q(f.column) for f in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    pk = _q(model._meta.pk.column)
    return f"INSERT INTO {_q(model._meta.db_table)} ({columns}) VALUES {', '.join([row] * rows)} RETURNING {pk}"


def bulk_insert(model, objs: list) -> None:
    """``model.objects.bulk_create(objs)`` without compiling every value through the ORM: the
    scheduler inserts a burst of due runs (and their django-q2 tasks) with it. Values go through
    each field's ``pre_save`` and ``get_db_prep_save`` as in ``bulk_create``; each object gets its
    primary key from ``RETURNING``, in row order, which ``bulk_create`` relies on as well. No
    signals are sent (``bulk_create`` sends none either)."""
    if not objs:
        return
    connection = connections[DB]
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    preparers = _preparers(model, tuple(f.attname for f in fields))
    size = max(1, connection.ops.bulk_batch_size(fields, objs))
    with connection.cursor() as cursor:
        for start in range(0, len(objs), size):
            chunk = objs[start : start + size]
            params = [
                value if value is None or type(value) is plain else prepare(value, connection)
                for obj in chunk
                for f, (plain, prepare) in zip(fields, preparers, strict=True)
                for value in (f.pre_save(obj, True),)
            ]
            cursor.execute(_bulk_insert_sql(model, len(chunk)), params)
            for obj, (pk,) in zip(chunk, cursor.fetchall(), strict=True):
                obj.pk = pk
                obj._state.adding, obj._state.db = False, DB
