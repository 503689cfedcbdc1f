"""Plan and apply: compare a manifest set with the live jobs, then turn the differences into
change requests (applied at once in ungoverned environments, reviewed in governed ones)."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction

from approvals import policies
from approvals.models import OPEN_STATUSES, ChangeAction, ChangeRequest, ChangeStatus
from approvals.services import ChangeError, propose_change
from governance.access import Action, can_in
from governance.models import Environment, Team, Tenant
from governance.services import AccessDenied
from jobs.definitions import diff
from jobs.models import Job

from .loader import ManifestSet, Problem, position, value_node
from .validate import _upstreams, check

CREATE, UPDATE, DELETE, UNCHANGED, PENDING = "create", "update", "delete", "unchanged", "pending"
CHANGING = (CREATE, UPDATE, DELETE)


@dataclass
class Change:
    """What applying the manifests does to one job in one environment."""

    action: str
    tenant: str
    team: Team
    environment: Environment
    name: str
    live: Job | None
    desired: dict | None
    source: tuple[str, int, int] | None
    change_request: ChangeRequest | None = None
    diff: list[dict] = field(default_factory=list)
    # Set by apply when an upstream job this one depends on is itself still awaiting review.
    waiting_for: str = ""

    @property
    def upstreams(self) -> list[str]:
        return [name for _, name in _upstreams((self.desired or {}).get("dependencies"))]

    # Approvals the change needs under the environment's approval policy (0: applies at once).
    required_approvals: int = 0

    @property
    def governed(self) -> bool:
        return self.required_approvals > 0

    def as_dict(self) -> dict:
        cr = self.change_request
        return {
            "action": self.action,
            "tenant": self.tenant,
            "team": self.team.slug,
            "environment": self.environment.slug,
            "name": self.name,
            "governed": self.governed,
            "required_approvals": self.required_approvals,
            "source": None if self.source is None else "{}:{}:{}".format(*self.source),
            "diff": self.diff,
            "waiting_for": self.waiting_for or None,
            "change_request": None
            if cr is None
            else {"id": cr.pk, "status": cr.status, "url": change_url(cr), "applied_version": cr.applied_version},
        }


@dataclass
class Plan:
    problems: list[Problem]
    changes: list[Change]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((CREATE, UPDATE, DELETE, UNCHANGED, PENDING), 0)
        for change in self.changes:
            counts[change.action] += 1
        return counts

    def summary(self) -> str:
        c = self.counts()
        return (
            f"{c[CREATE]} to create, {c[UPDATE]} to change, {c[DELETE]} to delete, "
            f"{c[UNCHANGED]} unchanged, {c[PENDING]} awaiting review."
        )

    def as_dict(self) -> dict:
        return {
            "ok": not self.problems,
            "errors": [p.as_dict() for p in self.problems],
            "changes": [c.as_dict() for c in self.changes if c.action != UNCHANGED],
            "summary": self.counts(),
        }


def change_url(change: ChangeRequest) -> str:
    """Where a person reviews the request: the UI's page when it is routed, else its API path."""
    from django.conf import settings
    from django.urls import NoReverseMatch, reverse

    base = getattr(settings, "GOVERNOR_PUBLIC_URL", "").rstrip("/")
    try:
        return base + reverse("change_detail", args=[change.pk])
    except NoReverseMatch:
        return f"{base}/changes/{change.pk}/"


def _open_requests(tenant_ids: set[int]) -> list[ChangeRequest]:
    return list(ChangeRequest.objects.filter(tenant_id__in=tenant_ids, status__in=OPEN_STATUSES).order_by("pk"))


def _pending(open_requests: list[ChangeRequest], change: Change) -> ChangeRequest | None:
    """An open request that already proposes exactly this change (so applying again opens nothing)."""
    for cr in open_requests:
        if cr.environment_id != change.environment.pk:
            continue
        if change.action == DELETE:
            if cr.action == ChangeAction.DELETE and change.live is not None and cr.job_id == change.live.pk:
                return cr
        elif change.action == UPDATE:
            if (
                cr.action == ChangeAction.UPDATE
                and change.live is not None
                and cr.job_id == change.live.pk
                and cr.proposed == change.desired
            ):
                return cr
        elif cr.action == ChangeAction.CREATE and cr.proposed == change.desired:
            return cr
    return None


def make_plan(mset: ManifestSet, *, actor, prune: bool = False, for_apply: bool = False) -> Plan:
    """The changes that would make the live jobs match ``mset``, as ``actor`` may see them.

    With ``prune``, live jobs of the teams the manifests cover (a ``kind: Jobs``
    document names the team) that no manifest lists are deleted. With
    ``for_apply``, every change also needs the actor's author role.
    """
    checked = check(mset, against_server=True, actor=actor)
    problems = list(checked.problems)
    changes: list[Change] = []
    listed: set[tuple[int, int, str]] = set()
    for item in checked.resolved:
        listed.add((item.context.tenant.pk, item.environment.pk, item.entry.name))
        if item.desired is None:
            continue
        source = (item.entry.file, *position(value_node(item.entry.node, "name")))
        if item.live is None:
            action, rows = CREATE, diff(None, item.desired)
        else:
            rows = diff(item.live.definition(), item.desired)
            action = UPDATE if rows else UNCHANGED
        changes.append(
            Change(
                action,
                item.context.tenant.slug,
                item.team,
                item.environment,
                item.entry.name,
                item.live,
                item.desired,
                source,
                diff=rows,
            )
        )
    if prune:
        for doc in mset.documents:
            context = checked.contexts.get(doc.tenant)
            team = context.teams.get(doc.team) if context else None
            if context is None or team is None:
                continue
            for (env_id, name), job in sorted(context.live.items(), key=lambda kv: (kv[1].environment.order, kv[0][1])):
                if job.team_id != team.pk or (context.tenant.pk, env_id, name) in listed:
                    continue
                listed.add((context.tenant.pk, env_id, name))
                environment = next(e for e in context.environments.values() if e.pk == env_id)
                if not can_in(actor, Action.VIEW, context.tenant.pk, team.pk, env_id):
                    continue
                changes.append(
                    Change(
                        DELETE,
                        doc.tenant,
                        team,
                        environment,
                        name,
                        job,
                        None,
                        (doc.file, *position(doc.team_node)),
                        diff=diff(job.definition(), None),
                    )
                )
    open_requests = _open_requests({c.team.tenant_id for c in changes if c.action in CHANGING})
    for change in changes:
        if change.action in CHANGING:
            pending = _pending(open_requests, change)
            if pending is not None:
                change.action, change.change_request = PENDING, pending
    rules: dict[tuple[int, tuple[str, ...]], int] = {}
    for change in changes:
        if change.action in CHANGING:
            criticalities = {
                d.get("criticality") for d in (change.desired, change.live and change.live.definition()) if d
            }
            criticalities.discard(None)
            key = (change.environment.pk, tuple(sorted(str(c) for c in criticalities)))
            if key not in rules:
                rules[key] = policies.rule_for(change.environment, list(key[1])).required_approvals
            change.required_approvals = rules[key]
    if for_apply:
        for change in changes:
            if change.action in CHANGING and not can_in(
                actor, Action.PROPOSE, change.team.tenant_id, change.team.pk, change.environment.pk
            ):
                problems.append(
                    Problem(
                        *(change.source or ("<server>", 1, 1)),
                        f"You need the author role for team {change.team.slug!r} in environment "
                        f"{change.environment.slug!r} to {change.action} {change.name!r}.",
                        forbidden=True,
                    )
                )
    return Plan(problems, _ordered(changes))


def _ordered(changes: list[Change]) -> list[Change]:
    """Creates and updates before deletes; within one tenant and environment, upstream jobs before the
    jobs that depend on them (so an ungoverned apply creates a workflow in one go)."""
    order = {DELETE: 1}
    changes = sorted(changes, key=lambda c: (c.tenant, order.get(c.action, 0), c.environment.order, c.name))
    result: list[Change] = []
    placed: set[int] = set()

    def place(change: Change, trail: frozenset) -> None:
        if id(change) in placed or id(change) in trail:
            return
        for upstream in change.upstreams:
            for other in changes:
                if (
                    other.name == upstream
                    and other.tenant == change.tenant
                    and other.environment.pk == change.environment.pk
                    and other.action != DELETE
                ):
                    place(other, trail | {id(change)})
        placed.add(id(change))
        result.append(change)

    for change in changes:
        place(change, frozenset())
    return result


def justification_for(change: Change, *, commit: str, pipeline_url: str, message: str) -> str:
    lines = [message.strip()] if message.strip() else []
    origin = "manifest" if change.source is None else "manifest {}:{}:{}".format(*change.source)
    verb = "prune (not in the manifests)" if change.action == DELETE else change.action
    lines.append(f"Manifest apply: {verb} {change.name} in {change.environment.slug}, from {origin}.")
    if commit:
        lines.append(f"Commit: {commit}")
    if pipeline_url:
        lines.append(f"Pipeline: {pipeline_url}")
    return "\n".join(lines)


class ApplyError(Exception):
    """Applying stopped; nothing of this apply was kept."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def apply_plan(
    plan: Plan, *, actor, commit: str = "", pipeline_url: str = "", ticket: str = "", message: str = ""
) -> list[Change]:
    """Open (and in ungoverned environments apply) one change request per change, all or nothing."""
    if plan.problems:
        raise ApplyError(plan.problems)
    done = []
    # Jobs that exist only as requests awaiting review: dependents must wait until they are live.
    not_live: dict[tuple[int, int, str], ChangeRequest] = {
        (c.team.tenant_id, c.environment.pk, c.name): c.change_request
        for c in plan.changes
        if c.action == PENDING and c.live is None and c.change_request is not None
    }
    with transaction.atomic():
        # One apply per tenant at a time; a concurrent one may have opened the same requests meanwhile.
        tenant_ids = sorted({c.team.tenant_id for c in plan.changes if c.action in CHANGING})
        list(Tenant.objects.select_for_update().filter(pk__in=tenant_ids).order_by("pk"))
        open_requests = _open_requests(set(tenant_ids))
        for change in plan.changes:
            if change.action not in CHANGING:
                continue
            pending = _pending(open_requests, change)
            if pending is not None:
                change.action, change.change_request = PENDING, pending
                continue
            blocking = [
                (name, not_live[key])
                for name in change.upstreams
                if (key := (change.team.tenant_id, change.environment.pk, name)) in not_live
            ]
            if blocking:
                name, cr = blocking[0]
                change.waiting_for = f"{name} (CR-{cr.pk})"
                done.append(change)
                continue
            try:
                cr = propose_change(
                    actor=actor,
                    action=change.action,
                    definition=change.desired,
                    job=change.live,
                    team=change.team,
                    environment=change.environment,
                    justification=justification_for(change, commit=commit, pipeline_url=pipeline_url, message=message),
                    ticket=ticket[:200],
                )
            except ValidationError as exc:
                text = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
                raise ApplyError([Problem(*(change.source or ("<server>", 1, 1)), text)]) from exc
            except (AccessDenied, ChangeError) as exc:
                raise ApplyError(
                    [Problem(*(change.source or ("<server>", 1, 1)), str(exc), isinstance(exc, AccessDenied))]
                ) from exc
            if cr.status == ChangeStatus.FAILED:
                raise ApplyError([Problem(*(change.source or ("<server>", 1, 1)), cr.failure_reason)])
            change.change_request = cr
            done.append(change)
            if change.action == CREATE and cr.status != ChangeStatus.APPLIED:
                not_live[(change.team.tenant_id, change.environment.pk, change.name)] = cr
    return done
