"""Workflows: dependencies between jobs of one tenant and environment form a DAG.

A job lists its upstream jobs by name, each edge with a condition:
``success``, ``failure``, ``always``, ``exit_code`` (in ``exit_codes``) or
``output_schema`` (the upstream's JSON output, the last stdout line or the HTTP
body, valid against ``schema``). A cycle is refused when the change is proposed.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from governance.models import Environment, Tenant
from governance.patterns import UserSchemaValidator, schema_errors

log = logging.getLogger(__name__)

EDGE_CONDITIONS = ("success", "failure", "always", "exit_code", "output_schema")
MAX_UPSTREAMS = 50


def clean_dependencies(
    dependencies: Any, *, tenant: Tenant, environment: Environment, name: Any, job, errors: dict
) -> list[dict]:
    from .models import Job, JobStatus

    if dependencies in (None, []):
        dependencies = []
    if not isinstance(dependencies, list) or len(dependencies) > MAX_UPSTREAMS:
        errors["dependencies"] = [f'Must be a list (at most {MAX_UPSTREAMS}) of {{"upstream": <job name>, ...}}.']
        return []
    problems: list[str] = []
    cleaned: list[dict] = []
    seen = set()
    for position, edge in enumerate(dependencies):
        if not isinstance(edge, dict) or not isinstance(edge.get("upstream"), str):
            problems.append(f'dependencies[{position}] must be {{"upstream": <job name>, "condition": ...}}.')
            continue
        extra = set(edge) - {"upstream", "condition", "exit_codes", "schema"}
        if extra:
            problems.append(f"dependencies[{position}]: unknown field(s) {', '.join(sorted(extra))}.")
        condition = edge.get("condition", "success")
        if condition not in EDGE_CONDITIONS:
            problems.append(f"dependencies[{position}]: condition must be one of {', '.join(EDGE_CONDITIONS)}.")
        item = {"upstream": edge["upstream"], "condition": condition}
        if condition == "exit_code":
            codes = edge.get("exit_codes")
            if not isinstance(codes, list) or not codes or not all(isinstance(c, int) for c in codes):
                problems.append(f"dependencies[{position}]: exit_code needs a non-empty list exit_codes.")
            item["exit_codes"] = codes
        if condition == "output_schema":
            problems += [f"dependencies[{position}]: {m}" for m in schema_errors(edge.get("schema"), "schema")]
            item["schema"] = edge.get("schema")
        if edge["upstream"] == name:
            problems.append(f"dependencies[{position}]: a job cannot depend on itself ({name}).")
        if edge["upstream"] in seen:
            problems.append(f"dependencies[{position}]: {edge['upstream']} is listed twice.")
        seen.add(edge["upstream"])
        cleaned.append(item)
    if problems:
        errors["dependencies"] = problems
        return []
    if not cleaned:
        return []
    live = Job.objects.filter(tenant=tenant, environment=environment).exclude(status=JobStatus.DELETED)
    if job is not None:
        live = live.exclude(pk=job.pk)
    graph = {
        row_name: [e.get("upstream") for e in deps or []] for row_name, deps in live.values_list("name", "dependencies")
    }
    missing = [e["upstream"] for e in cleaned if e["upstream"] not in graph]
    if missing:
        errors["dependencies"] = [f"No job named {m!r} in {environment.slug}." for m in missing]
        return []
    graph[name] = [e["upstream"] for e in cleaned]
    cycle = find_cycle(graph, name)
    if cycle:
        errors["dependencies"] = ["This would create a cycle: " + " → ".join(cycle) + "."]
        return []
    return cleaned


def find_cycle(graph: dict[str, list[str]], start: str) -> list[str] | None:
    """A path start → ... → start following upstream edges, or None."""
    stack = [(start, [start])]
    visited = set()
    while stack:
        node, path = stack.pop()
        for upstream in graph.get(node, []):
            if upstream == start:
                return [*path, start]
            if upstream not in visited:
                visited.add(upstream)
                stack.append((upstream, [*path, upstream]))
    return None


def json_output(output: str) -> Any:
    """The last non-empty line of the output parsed as JSON (HTTP jobs: the whole body), or None."""
    text = output.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return json.loads(text.splitlines()[-1])
    except ValueError:
        return None


def edge_met(edge: dict, status: str, exit_code: int | None, output: str) -> tuple[bool, str]:
    """Whether an upstream's finished run lets the downstream run, and why not."""
    condition = edge.get("condition", "success")
    upstream = edge["upstream"]
    if condition == "always":
        return True, ""
    if condition == "success":
        return status == "succeeded", f"{upstream} did not succeed ({status})."
    if condition == "failure":
        return status != "succeeded", f"{upstream} succeeded; this edge runs on failure only."
    if condition == "exit_code":
        return exit_code in edge.get(
            "exit_codes", []
        ), f"{upstream} exited {exit_code}, not in {edge.get('exit_codes')}."
    document = json_output(output)
    if document is None:
        return False, f"{upstream} produced no JSON output."
    errors = [e.message for e in UserSchemaValidator(edge.get("schema") or {}).iter_errors(document)]
    return not errors, f"{upstream}'s output does not match the schema: " + "; ".join(errors[:3])


def on_run_finished(run_id: int, run=None) -> list[int]:
    """Start (or skip, with the reason) the downstream runs whose upstreams have all finished for
    this slot. The downstream run's key is the upstream slot, so a redelivery cannot start it twice."""
    from django.db import IntegrityError, transaction
    from django.utils import timezone

    from .models import TERMINAL_STATUSES, Job, Run, RunStatus, TriggerKind
    from .queue import enqueue_run

    if run is None or run.pk != run_id:
        run = Run.objects.select_related("job").get(pk=run_id)
    if run.parent_id:
        # A partition of a fan-out: the join decides for the slot's run.
        join_partitions(run.parent_id)
        return []
    if run.status not in TERMINAL_STATUSES:
        return []
    # Most jobs have no downstream: one narrow read of names and edges; whole jobs only on a match.
    matching = downstream_candidates(run.tenant_id, run.job.environment_id, run.job.name)
    if not matching:
        return []
    candidates = list(Job.objects.filter(pk__in=matching))
    created = []
    for job in candidates:
        names = [edge["upstream"] for edge in job.dependencies]
        finished = {
            r.job.name: r
            for r in Run.objects.filter(
                job__tenant_id=run.tenant_id,
                job__environment_id=run.job.environment_id,
                job__name__in=names,
                scheduled_for=run.scheduled_for,
                partition="",
                status__in=TERMINAL_STATUSES,
            ).select_related("job")
        }
        if set(names) - set(finished):
            continue  # the join waits for the other upstreams of this slot
        reasons = []
        for edge in job.dependencies:
            upstream = finished[edge["upstream"]]
            met, why = edge_met(edge, upstream.status, upstream.exit_code, upstream.output)
            if not met:
                reasons.append(why)
        now = timezone.now()
        try:
            with transaction.atomic():
                downstream = Run.objects.create(
                    job=job,
                    tenant_id=job.tenant_id,
                    scheduled_for=run.scheduled_for,
                    trigger=TriggerKind.UPSTREAM,
                    status=RunStatus.SKIPPED if reasons else RunStatus.QUEUED,
                    reason=("Skipped: " + " ".join(reasons)) if reasons else f"After {', '.join(names)}.",
                    trigger_reason=f"After {', '.join(names)}.",
                    queued_at=now,
                    finished_at=now if reasons else None,
                    job_version=job.version,
                    definition=job.definition(),
                )
                if not reasons:
                    transaction.on_commit(functools.partial(enqueue_run, downstream.pk))
        except IntegrityError:
            # This slot's downstream run exists already. If it was skipped and its upstreams now
            # allow it (a rerun of a failed step, or one marked succeeded), it runs after all.
            if not reasons:
                requeued = Run.objects.filter(
                    job=job, scheduled_for=run.scheduled_for, partition="", status=RunStatus.SKIPPED
                ).update(status=RunStatus.QUEUED, queued_at=now, finished_at=None, reason=f"After {', '.join(names)}.")
                if requeued:
                    existing = Run.objects.get(job=job, scheduled_for=run.scheduled_for, partition="")
                    transaction.on_commit(functools.partial(enqueue_run, existing.pk))
                    created.append(existing.pk)
            continue
        created.append(downstream.pk)
        if reasons:
            # A skipped step counts as finished: its own downstream steps decide in turn.
            on_run_finished(downstream.pk)
    return created


def after_finish(run_id: int, run=None) -> None:
    """``on_run_finished`` once a run's end is committed (executor, pings): a failure to start the
    downstream jobs is logged, never raised into the path that recorded the run."""
    try:
        on_run_finished(run_id, run=run)
    except Exception:
        log.exception("starting the downstream jobs of run %s failed", run_id)
    from . import hooks

    if hooks.has_run_finished_listeners():
        from .models import Run

        try:
            if run is None or run.pk != run_id:
                run = Run.objects.select_related("job").get(pk=run_id)
        except Exception:
            log.exception("reading finished run %s for its listeners failed", run_id)
            return
        hooks.run_finished(run)


def downstream_candidates(tenant_id: int, environment_id: int, upstream_name: str) -> list[int]:
    """Ids of the enabled jobs of the environment with an edge from ``upstream_name``."""
    from django.db import connection

    rows = (
        downstream_rows_postgresql(tenant_id, environment_id, upstream_name)
        if connection.vendor == "postgresql"
        else downstream_query(tenant_id, environment_id, upstream_name)
    )
    return [
        pk
        for pk, dependencies in rows
        if any(isinstance(edge, dict) and edge.get("upstream") == upstream_name for edge in dependencies or [])
    ]


def downstream_sql_postgresql() -> str:
    """``downstream_query`` as one fixed statement (parameters: tenant, environment, status, pattern).

    Its first condition is the partial index's, word for word as the ORM writes ``HAS_DEPENDENCIES``
    (``NOT (dependencies = '[]'::jsonb)``), so the planner can prove the index applies."""
    from .models import Job

    return (
        f'SELECT "id", "dependencies"::text FROM "{Job._meta.db_table}" '  # noqa: S608 - _meta name only
        'WHERE NOT ("dependencies" = \'[]\'::jsonb) AND "tenant_id" = %s AND "environment_id" = %s '
        'AND "status" = %s AND "dependencies"::text LIKE %s'
    )


def downstream_rows_postgresql(tenant_id: int, environment_id: int, upstream_name: str) -> list[tuple[int, Any]]:
    """(id, dependencies) as ``downstream_query`` answers them, on PostgreSQL, without the ORM.

    Why raw SQL here: every finished run asks this (most jobs have no downstream, so the answer is
    usually empty), and building the ORM query (a ``Cast`` annotation, an escaped ``contains``, the
    index condition) cost 1.13 ms of worker CPU per run, measured on PostgreSQL 15 (loopback, 2-core
    host, 1,000 calls); this fixed statement costs 0.12 ms. The name is escaped for LIKE as the ORM's
    ``contains`` escapes it; the exact check on each returned row follows in the caller."""
    from django.db import connection

    from .models import JobStatus

    escaped = upstream_name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    with connection.cursor() as cursor:
        cursor.execute(downstream_sql_postgresql(), [tenant_id, environment_id, JobStatus.ENABLED, f'%"{escaped}"%'])
        return [(pk, json.loads(text)) for pk, text in cursor.fetchall()]


def downstream_query(tenant_id: int, environment_id: int, upstream_name: str):
    """(id, dependencies) of the enabled jobs of the environment that may name ``upstream_name``.

    Most jobs have no dependencies: the partial index ``job_downstream_lookup`` holds only those
    that have some (its condition, ``HAS_DEPENDENCIES``, is part of this query, or no planner would
    use it); the name sits quoted in their JSON text, so ``contains`` (a LIKE, wildcards escaped)
    narrows them further in SQL, and only the few rows it returns are checked exactly."""
    from django.db.models import TextField
    from django.db.models.functions import Cast

    from .models import HAS_DEPENDENCIES, Job, JobStatus

    return (
        Job.objects.filter(HAS_DEPENDENCIES, tenant_id=tenant_id, environment_id=environment_id)
        .filter(status=JobStatus.ENABLED)
        .annotate(dependencies_text=Cast("dependencies", TextField()))
        .filter(dependencies_text__contains=f'"{upstream_name}"')
        .order_by()
        .values_list("pk", "dependencies")
    )


# --- fan-out over partitions, with a join ---

SETTLED = ("succeeded", "failed", "timed_out", "cancelled", "skipped", "lost")
RETRYABLE_PARTITION = ("failed", "timed_out", "cancelled", "lost")


def fan_out(run) -> str:
    """The slot's run of a partitioned job: queue one run per partition (again for those that did not
    succeed, on a rerun) and wait for them; the last one to finish joins."""
    from django.db import transaction
    from django.utils import timezone

    from .models import Run, RunStatus
    from .queue import enqueue_run

    now = timezone.now()
    partitions = run.definition["partitions"]
    with transaction.atomic():
        existing = {child.partition: child for child in Run.objects.filter(parent=run)}
        Run.objects.bulk_create(
            [
                Run(
                    job_id=run.job_id,
                    tenant_id=run.tenant_id,
                    scheduled_for=run.scheduled_for,
                    partition=name,
                    parent=run,
                    trigger=run.trigger,
                    status=RunStatus.QUEUED,
                    queued_at=now,
                    job_version=run.job_version,
                    definition=run.definition,
                    reason=f"Partition {name} of run #{run.pk}.",
                    trigger_reason=f"Partition {name} of run #{run.pk}.",
                )
                for name in partitions
                if name not in existing
            ]
        )
        Run.objects.filter(parent=run, status__in=RETRYABLE_PARTITION).update(
            status=RunStatus.QUEUED, queued_at=now, finished_at=None, reason=f"Rerun with run #{run.pk}."
        )
        Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            lease_expires_at=None, worker="", reason=f"Fan-out over {len(partitions)} partitions; waiting for them."
        )
        pending = list(Run.objects.filter(parent=run, status=RunStatus.QUEUED).values_list("pk", flat=True))
        for child_id in pending:
            transaction.on_commit(functools.partial(enqueue_run, child_id))
    if not pending:
        join_partitions(run.pk)
    return RunStatus.RUNNING


def join_partitions(parent_id: int) -> str | None:
    """Settle the slot's run once every partition has settled: succeeded only if all did."""
    from django.utils import timezone

    from .models import Run, RunStatus

    children = list(Run.objects.filter(parent_id=parent_id).values_list("partition", "status"))
    if not children or any(status not in SETTLED for _, status in children):
        return None
    bad = sorted(f"{name} ({status})" for name, status in children if status != RunStatus.SUCCEEDED)
    status = RunStatus.FAILED if bad else RunStatus.SUCCEEDED
    reason = f"Partitions not succeeded: {', '.join(bad)}." if bad else f"All {len(children)} partitions succeeded."
    joined = Run.objects.filter(pk=parent_id, status=RunStatus.RUNNING).update(
        status=status, finished_at=timezone.now(), reason=reason, exit_code=0 if not bad else 1
    )
    if joined:
        on_run_finished(parent_id)
        return status
    return None
