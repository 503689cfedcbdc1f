"""Checking a manifest set: offline (against its own ``kind: Tenant`` documents) or against the server.

Each job, in each of its environments, goes through ``jobs.definitions.clean_definition``
(the same validation as every other path), so new definition fields are checked
here without manifest code; its field errors are mapped back to the YAML node
they came from.

Validation runs in a sandbox: one transaction, always rolled back, in which
every job of the set exists as if the set were applied (with its dependencies),
so references between jobs of different files, and cycles through them, are
judged by the server's own rules. Offline, the tenant, its teams and its
environments are sandbox rows built from the ``kind: Tenant`` documents.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import DatabaseError, transaction
from django.db.models import Field

from governance.access import Action, can_in, tenant_ids
from governance.models import Environment, Team, Tenant
from jobs.definitions import clean_definition
from jobs.models import DEFINITION_FIELDS, Job, JobStatus

from .loader import JobEntry, ManifestSet, Problem, position, value_node


def definition_defaults() -> dict[str, Any]:
    """What an omitted field means: the model's default, so a manifest states the whole definition."""
    defaults = {}
    for name in DEFINITION_FIELDS:
        if name == "name":
            continue
        try:
            model_field = Job._meta.get_field(name)
        except FieldDoesNotExist:  # a definition field that is not a model column has no default
            continue
        if isinstance(model_field, Field):
            defaults[name] = model_field.get_default()
    return defaults


@dataclass
class TenantContext:
    """What a tenant's jobs are checked against: real rows (server) or unsaved stand-ins (offline)."""

    tenant: Tenant
    teams: dict[str, Team]
    environments: dict[str, Environment]
    live: dict[tuple[int, str], Job] = field(default_factory=dict)
    offline: bool = False


@dataclass
class Resolved:
    """One job entry in one environment, with its normalised definition when valid."""

    entry: JobEntry
    context: TenantContext
    team: Team
    environment: Environment
    live: Job | None
    desired: dict | None


@dataclass
class Checked:
    problems: list[Problem]
    resolved: list[Resolved]
    contexts: dict[str, TenantContext]


def _offline_contexts(mset: ManifestSet, problems: list[Problem]) -> dict[str, TenantContext]:
    """Sandbox rows for each declared tenant (call inside the rolled-back transaction)."""
    contexts: dict[str, TenantContext] = {}
    declared_at: dict[str, Any] = {}
    for decl in mset.tenants:
        if decl.slug in contexts:
            first_file, first_node = declared_at[decl.slug]
            line, column = position(value_node(first_node, "tenant"))
            node = value_node(decl.node, "tenant")
            problems.append(
                Problem(
                    decl.file,
                    *position(node),
                    f"Tenant {decl.slug!r} is already declared at {first_file}:{line}:{column}.",
                )
            )
            continue
        declared_at[decl.slug] = (decl.file, decl.node)
        # The row gets a unique slug (this database may hold the real tenant); checks read the declared one.
        tenant = Tenant.objects.create(slug=f"offline-{uuid.uuid4().hex}", name=decl.slug)
        tenant.slug = decl.slug
        if decl.naming_pattern:
            tenant.naming_pattern = decl.naming_pattern
        tenant.secrets_by_team = decl.secrets_by_team
        contexts[decl.slug] = TenantContext(
            tenant=tenant,
            teams={slug: Team.objects.create(tenant=tenant, slug=slug, name=slug) for slug in decl.teams},
            environments={
                slug: Environment.objects.create(tenant=tenant, slug=slug, name=slug, order=i)
                for i, slug in enumerate(decl.environments)
            },
            offline=True,
        )
    return contexts


def _server_contexts(mset: ManifestSet, actor, problems: list[Problem]) -> dict[str, TenantContext]:
    slugs = {entry.tenant for entry in mset.entries} | {doc.tenant for doc in mset.documents}
    slugs |= {decl.slug for decl in mset.tenants}
    tenants = Tenant.objects.filter(slug__in=slugs)
    if actor is not None and not actor.is_superuser:
        # Another tenant is indistinguishable from a missing one.
        tenants = tenants.filter(pk__in=tenant_ids(actor, Action.VIEW))
    by_slug = {t.slug: t for t in tenants}
    teams = Team.objects.filter(tenant__in=by_slug.values())
    environments = Environment.objects.filter(tenant__in=by_slug.values())
    contexts = {
        slug: TenantContext(
            tenant=tenant,
            teams={t.slug: t for t in teams if t.tenant_id == tenant.pk},
            environments={e.slug: e for e in environments if e.tenant_id == tenant.pk},
        )
        for slug, tenant in by_slug.items()
    }
    by_id = {c.tenant.pk: c for c in contexts.values()}
    for job in Job.objects.filter(tenant__in=by_slug.values()).exclude(status=JobStatus.DELETED):
        by_id[job.tenant_id].live[(job.environment_id, job.name)] = job
    for decl in mset.tenants:
        context = contexts.get(decl.slug)
        if context is None:
            continue
        for slug, node in decl.teams.items():
            if slug not in context.teams:
                problems.append(
                    Problem(decl.file, *position(node), f"Team {slug!r} does not exist in tenant {decl.slug!r}.")
                )
        for slug, node in decl.environments.items():
            if slug not in context.environments:
                problems.append(
                    Problem(decl.file, *position(node), f"Environment {slug!r} does not exist in tenant {decl.slug!r}.")
                )
    return contexts


_PATH_PART = re.compile(r"[^.\[\]]+|\[\d+\]")


def _field_path(key: str) -> list[str | int]:
    """'parameters.values[0]' -> ['parameters', 'values', 0]."""
    parts: list[str | int] = []
    for token in _PATH_PART.findall(key):
        parts.append(int(token[1:-1]) if token.startswith("[") else token)
    return parts


_MESSAGE_PATH = re.compile(r"^([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+|\[\d+\])*)(?=[: ])")


def _where(entry: JobEntry, env: str, field_key: str, message: str) -> tuple[Any, str]:
    """The YAML node an error is about, and the field label to print before the message.

    Messages that start with a path inside the field ("values.prod: ...", "dependencies[1]: ...")
    point at that part of the field when the YAML has it.
    """
    if not field_key or field_key in ("__all__", "definition"):
        return entry.node, ""
    path = _field_path(field_key)
    node = entry.locate(env, path)
    label = field_key
    match = _MESSAGE_PATH.match(message)
    if match:
        inner = _field_path(match.group(1))
        if inner[0] == path[0]:
            label = ""
            deeper = entry.find(env, inner)
        else:
            deeper = entry.find(env, [*path, *inner])
        if deeper is not None:
            node = deeper
    return node, label


def _messages(exc: ValidationError) -> list[tuple[str, str]]:
    if hasattr(exc, "error_dict"):
        return [(key, message) for key, messages in exc.message_dict.items() for message in messages]
    return [("", message) for message in exc.messages]


class _Collector:
    """Gathers field errors per (node, message) across environments, so an error in the shared
    part of a job is reported once, naming the environments only when not all of them."""

    def __init__(self) -> None:
        self.found: dict[tuple, list[str]] = {}

    def add(self, file: str, node, key: str, message: str, env: str) -> None:
        line, column = position(node)
        label = f"{key}: " if key else ""
        self.found.setdefault((file, line, column, f"{label}{message}"), []).append(env)

    def problems(self) -> list[Problem]:
        result = []
        for (file, line, column, message), envs in self.found.items():
            result.append(Problem(file, line, column, f"{message} (in {', '.join(envs)})"))
        return result


def check(mset: ManifestSet, *, against_server: bool, actor=None) -> Checked:
    """Validate every job of ``mset`` in each of its environments; never writes (see the module doc).

    Offline, tenants, teams and environments come from the ``kind: Tenant``
    documents of the set; against the server they come from the database (as
    far as ``actor``, when given, may see) and live jobs are taken into account.
    """
    problems = list(mset.problems)
    try:
        with transaction.atomic():
            result = _check(mset, against_server=against_server, actor=actor, problems=problems)
            transaction.set_rollback(True)
    except DatabaseError:
        if against_server:
            raise
        problems.append(
            Problem(
                mset.files[0] if mset.files else "<manifests>",
                1,
                1,
                "Validation needs Governor's database schema: run `manage.py migrate` once "
                "(an empty local SQLite database is enough for offline checks).",
            )
        )
        return Checked(_sorted(problems), [], {})
    return result


@dataclass
class _Slot:
    entry: JobEntry
    env_slug: str
    env_node: Any
    context: TenantContext
    team: Team
    environment: Environment
    live: Job | None
    provisional: int | None = None


def _check(mset: ManifestSet, *, against_server: bool, actor, problems: list[Problem]) -> Checked:
    contexts = _server_contexts(mset, actor, problems) if against_server else _offline_contexts(mset, problems)
    slots: list[_Slot] = []
    seen: dict[tuple[str, str, str], JobEntry] = {}
    for doc in mset.documents:
        context = contexts.get(doc.tenant)
        if context is None:
            hint = "" if against_server else " (declare it in a kind: Tenant document, or check --against-server)"
            problems.append(Problem(doc.file, *position(doc.tenant_node), f"Unknown tenant {doc.tenant!r}{hint}."))
            continue
        team = context.teams.get(doc.team)
        if team is None:
            known = ", ".join(sorted(context.teams)) or "none"
            problems.append(
                Problem(
                    doc.file,
                    *position(doc.team_node),
                    f"Unknown team {doc.team!r} in tenant {doc.tenant!r} (teams: {known}).",
                )
            )
            continue
        for entry in doc.entries:
            for env_slug, env_node in entry.environments:
                environment = context.environments.get(env_slug)
                if environment is None:
                    known = ", ".join(context.environments) or "none"
                    problems.append(
                        Problem(
                            entry.file,
                            *position(env_node),
                            f"Unknown environment {env_slug!r} in tenant {doc.tenant!r} (environments: {known}).",
                        )
                    )
                    continue
                key = (doc.tenant, env_slug, entry.name)
                if key in seen:
                    first = seen[key]
                    line, column = position(value_node(first.node, "name"))
                    problems.append(
                        Problem(
                            entry.file,
                            *position(value_node(entry.node, "name")),
                            f"Job {entry.name!r} in {env_slug} is already defined at {first.file}:{line}:{column}.",
                        )
                    )
                    continue
                seen[key] = entry
                if actor is not None and not can_in(actor, Action.VIEW, context.tenant.pk, team.pk, environment.pk):
                    problems.append(
                        Problem(
                            entry.file,
                            *position(env_node),
                            f"You may not view team {doc.team!r} in environment {env_slug!r}.",
                            forbidden=True,
                        )
                    )
                    continue
                live = context.live.get((environment.pk, entry.name))
                slots.append(_Slot(entry, env_slug, env_node, context, team, environment, live))
    for slot in slots:
        _stage(slot)
    resolved: list[Resolved] = []
    defaults = definition_defaults()
    collectors: dict[int, _Collector] = {}
    for slot in slots:
        entry = slot.entry
        collector = collectors.setdefault(id(entry), _Collector())
        data = {**defaults, **entry.definition_for(slot.env_slug)}
        desired = None
        with transaction.atomic():
            if slot.provisional is not None:
                # Judge a new job as a create: its own sandbox row steps aside.
                Job.objects.filter(pk=slot.provisional).update(status=JobStatus.DELETED)
            try:
                desired = clean_definition(
                    data, tenant=slot.context.tenant, team=slot.team, environment=slot.environment, job=slot.live
                )
            except ValidationError as exc:
                for field_key, message in _messages(exc):
                    node, label = _where(entry, slot.env_slug, field_key, message)
                    collector.add(entry.file, node, label, message, slot.env_slug)
            transaction.set_rollback(True)
        resolved.append(Resolved(entry, slot.context, slot.team, slot.environment, slot.live, desired))
    for slot in slots:
        found = collectors.pop(id(slot.entry), None)
        if found is not None:
            all_envs = [env for env, _ in slot.entry.environments]
            problems.extend(_drop_env_suffix(problem, all_envs) for problem in found.problems())
    return Checked(_sorted(problems), resolved, contexts)


def _stage(slot: _Slot) -> None:
    """Put the job in the sandbox as the manifests want it, so other jobs' references find it."""
    raw = slot.entry.definition_for(slot.env_slug).get("dependencies")
    dependencies = raw if isinstance(raw, list) else []
    has_dependencies = "dependencies" in DEFINITION_FIELDS and _is_column("dependencies")
    if slot.live is not None:
        if has_dependencies:
            Job.objects.filter(pk=slot.live.pk).update(dependencies=dependencies)
        return
    name = slot.entry.name
    if len(name) > (Job._meta.get_field("name").max_length or 0):
        return
    row = Job(tenant=slot.context.tenant, team=slot.team, environment=slot.environment, name=name, command=[], cron="")
    if has_dependencies:
        row.dependencies = dependencies
    try:
        with transaction.atomic():
            Job.objects.bulk_create([row])
    except DatabaseError:
        return
    slot.provisional = (
        row.pk
        if row.pk is not None
        else Job.objects.get(tenant=slot.context.tenant, environment=slot.environment, name=name).pk
    )


def _is_column(name: str) -> bool:
    try:
        Job._meta.get_field(name)
    except FieldDoesNotExist:
        return False
    return True


def _drop_env_suffix(problem: Problem, all_envs: list[str]) -> Problem:
    suffix = f" (in {', '.join(all_envs)})"
    if problem.message.endswith(suffix):
        return Problem(problem.file, problem.line, problem.column, problem.message[: -len(suffix)], problem.forbidden)
    return problem


def _sorted(problems: list[Problem]) -> list[Problem]:
    unique = list(dict.fromkeys(problems))
    order = {file: i for i, file in enumerate(dict.fromkeys(p.file for p in unique))}
    return sorted(unique, key=lambda p: (order[p.file], p.line, p.column, p.message))


def _upstreams(value: Any) -> list[tuple[int, str]]:
    """Names a ``dependencies`` value points at: a list of names, or of mappings naming the upstream job."""
    if not isinstance(value, list):
        return []
    found = []
    for index, item in enumerate(value):
        if isinstance(item, str):
            found.append((index, item))
        elif isinstance(item, dict):
            for key in ("job", "upstream", "name"):
                if isinstance(item.get(key), str):
                    found.append((index, item[key]))
                    break
    return found
