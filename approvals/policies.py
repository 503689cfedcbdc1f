"""Approval policies: how many approvers a change needs and who counts as independent.

Rules come from ``ApprovalPolicy`` rows per environment and job criticality;
an environment without a matching row falls back to its default rule
(criticality blank), then to ``Environment.required_approvals``.

A rule may also put pausing and resuming its jobs under change control
(``pause_requires_change``): then an operator proposes the pause and approvers
approve it under the same rule as an update.

Team membership (for separation of duties): a user belongs to a team when
they hold any role grant narrowed to that team (``Scope.team``), directly or
through a group. Tenant-wide grants make nobody a member of any team. An
approver is *independent* of a change when they belong to at least one team
of the tenant and not to the team that owns the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias, cast

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as User
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet

from governance.access import (
    Action,
    can,
    can_over,
    grants_for,
    identity_keys,
    over_q,
    prime_grants,
    restrict,
    same_identity,
    same_identity_q,
    tenant_ids,
)
from governance.models import Environment, Role, ScopeGroupRole, ScopeUserRole
from jobs.models import Criticality

from .models import CONFIG_KINDS, ApprovalPolicy, ChangeRequest, TargetKind

# Whoever asks: a user (a person or a service account; ``User``) or an anonymous visitor.
AnyUser: TypeAlias = User | AnonymousUser

MAX_REQUIRED_APPROVALS = 10


@dataclass(frozen=True)
class Rule:
    required_approvals: int
    separation_of_duties: bool


def rule_for(environment: Environment, criticalities: list[str]) -> Rule:
    """The strictest rule over the given criticalities (a change that lowers a job's
    criticality is still reviewed under the rule of the old one)."""
    return _rule_from_rows(environment, list(ApprovalPolicy.objects.filter(environment=environment)), criticalities)


def _rule_from_rows(environment: Environment, policies: list[ApprovalPolicy], criticalities: list[str]) -> Rule:
    rows = {p.criticality: p for p in policies}
    default = rows.get("")
    required, separation = 0, False
    for criticality in criticalities or [""]:
        policy = rows.get(criticality) or default
        if policy is None:
            required = max(required, environment.required_approvals)
        else:
            required = max(required, policy.required_approvals)
            separation = separation or policy.separation_of_duties
    return Rule(required, separation)


def pause_requires_change(environment: Environment, criticality: str) -> bool:
    """Must pausing or resuming a job of this criticality go through a change request? The rule of
    the job's criticality decides, else the environment's default rule; without one, no."""
    rows = {
        p.criticality: p
        for p in ApprovalPolicy.objects.filter(environment=environment, criticality__in=[criticality, ""])
    }
    policy = rows.get(criticality) or rows.get("")
    return bool(policy and policy.pause_requires_change)


def rule_for_policy_change(environment: Environment, policies: list[ApprovalPolicy] | None = None) -> Rule:
    """Changing a policy needs at least as many approvals as the strictest rule it could weaken,
    and always at least one: nobody loosens review alone."""
    if policies is None:
        policies = list(ApprovalPolicy.objects.filter(environment=environment))
    strictest = max([environment.required_approvals, *(p.required_approvals for p in policies)])
    return Rule(max(1, strictest), False)


def effective_rules(environments: list[Environment]) -> dict[int, dict[str, Any]]:
    """Per environment: the rule each criticality gets (explicit row or inherited default) and
    the rule for changing the policy itself, from one query for all environments."""
    by_env: dict[int, list[ApprovalPolicy]] = {env.pk: [] for env in environments}
    for policy in ApprovalPolicy.objects.filter(environment__in=[env.pk for env in environments]):
        by_env[policy.environment_id].append(policy)
    result: dict[int, dict[str, Any]] = {}
    for env in environments:
        policies = by_env[env.pk]
        by_criticality = {p.criticality: p for p in policies}
        rows = []
        for criticality in ["", *Criticality.values]:
            rule = _rule_from_rows(env, policies, [criticality] if criticality else [])
            # As pause_requires_change: the criticality's own rule, else the default rule's flag.
            own = by_criticality.get(criticality) or by_criticality.get("")
            rows.append(
                {
                    "criticality": criticality,
                    "explicit": criticality in by_criticality,
                    **_as_dict(rule),
                    "pause_requires_change": bool(own and own.pause_requires_change),
                }
            )
        result[env.pk] = {"rules": rows, "policy_change": _as_dict(rule_for_policy_change(env, policies))}
    return result


def _as_dict(rule: Rule) -> dict[str, Any]:
    return {"required_approvals": rule.required_approvals, "separation_of_duties": rule.separation_of_duties}


def team_ids_of(user: AnyUser, tenant_id: int) -> set[int]:
    """Teams the user belongs to in a tenant (any role grant narrowed to the team)."""
    return {g.team_id for g in grants_for(user) if g.tenant_id == tenant_id and g.team_id is not None}


def is_independent(user: AnyUser, *, tenant_id: int, owning_team_id: int | None) -> bool:
    teams = team_ids_of(user, tenant_id)
    return bool(teams) and owning_team_id not in teams


# --- Who may review -----------------------------------------------------------------------------
# The one rule, in two forms that answer alike: ``review_refusal`` for one request (the API, the UI,
# its buttons, the approval count, post-reviews and comments), ``reviewable`` as a queryset (the
# review queue, its nav badge, the API filter, open post-reviews). Both rest on governance.access:
# an approver grant covering the request (``can`` / ``restrict``); for the kinds in
# ``WHOLE_SCOPE_KINDS`` a grant covering the request's WHOLE scope (``can_over`` / ``over_q``),
# since a policy, window, calendar or pool governs every team of its environment (or of the tenant);
# never the author, nor a service account the author controls (``same_identity``).

WHOLE_SCOPE_KINDS: dict[str, str] = {
    TargetKind.POLICY: "Policy changes are reviewed by approvers of the whole environment, not of one team.",
    **dict.fromkeys(
        CONFIG_KINDS,
        "Window, calendar and pool changes are reviewed by approvers of the whole environment "
        "(of the whole tenant for tenant-wide ones), not of one team.",
    ),
}


def review_refusal(user: AnyUser, change: ChangeRequest, *, author_identity: bool = True) -> str | None:
    """Why ``user`` may not review this request under today's grants (None when they may).
    ``author_identity=False`` skips the author check, for callers that apply it in bulk."""
    if author_identity and same_identity(cast(User, user), change.author_id):
        if change.author_id == getattr(user, "pk", None):
            return "Nobody reviews their own change, administrators included."
        return (
            "Separation of duties counts you and this change's author as one identity (a person and the "
            "service accounts they created or issued tokens for); someone else must review it."
        )
    if not can(user, Action.REVIEW, change):
        return "You need the approver role for this team and environment to review changes."
    whole_scope = WHOLE_SCOPE_KINDS.get(change.target_kind)
    if whole_scope and not can_over(user, Action.REVIEW, change.tenant_id, None, change.environment_id):
        return whole_scope
    return None


def reviewable(user: AnyUser, queryset: QuerySet[ChangeRequest] | None = None) -> QuerySet[ChangeRequest]:
    """The requests (of ``queryset``, default all) that ``user`` may review, whatever their status:
    ``review_refusal`` as one query, whatever the number of grants."""
    base = ChangeRequest.objects.all() if queryset is None else queryset
    allowed = restrict(base, user, Action.REVIEW)
    if not getattr(user, "is_authenticated", False):
        return allowed
    if not getattr(user, "is_superuser", False) and not tenant_ids(user, Action.REVIEW):
        # No approver grant: ``allowed`` is already empty (and runs no query); the conditions below
        # would only cost building (3 ms of every page's nav badge and of the dashboard's panels).
        return allowed
    allowed = allowed.exclude(same_identity_q(cast(User, user), "author"))
    if getattr(user, "is_superuser", False):
        return allowed
    whole_scope = over_q(user, Action.REVIEW, ChangeRequest)
    return allowed.exclude(Q(target_kind__in=list(WHOLE_SCOPE_KINDS)) & ~whole_scope)


def reviewers(change: ChangeRequest) -> list[User]:
    """The active people who may review ``change`` now (``review_refusal``), for its notification: the
    approvers of its tenant (directly or through a group) that the one rule lets through."""
    codename = f"role_{Role.APPROVER}"
    direct = ScopeUserRole.objects.filter(
        content_object__tenant_id=change.tenant_id, permission__codename=codename
    ).values("user_id")
    grouped = ScopeGroupRole.objects.filter(
        content_object__tenant_id=change.tenant_id, permission__codename=codename
    ).values("group__user")
    candidates = list(User.objects.filter(Q(pk__in=direct) | Q(pk__in=grouped), is_active=True).order_by("pk"))
    prime_grants(candidates)
    # The author's identity for every candidate at once: the query count does not grow with approvers.
    keys = identity_keys([change.author_id, *(user.pk for user in candidates)])
    author = keys.get(change.author_id, frozenset({change.author_id}))
    return [
        user
        for user in candidates
        if not keys.get(user.pk, frozenset({user.pk})) & author
        and review_refusal(user, change, author_identity=False) is None
    ]


def current_rule(environment: Environment, criticality: str) -> dict[str, Any]:
    """The live rule for exactly (environment, criticality), as a policy change's base."""
    policy = ApprovalPolicy.objects.filter(environment=environment, criticality=criticality).first()
    if policy is not None:
        return policy.rule()
    if criticality == "":
        return {
            "criticality": "",
            "required_approvals": environment.required_approvals,
            "separation_of_duties": False,
            "pause_requires_change": False,
        }
    return {
        "criticality": criticality,
        "required_approvals": None,
        "separation_of_duties": False,
        # No rule of its own: the default rule's flag applies today.
        "pause_requires_change": pause_requires_change(environment, criticality),
    }


RULE_FIELDS = ("criticality", "required_approvals", "separation_of_duties", "pause_requires_change")


def clean_rule(environment: Environment, data: object) -> dict[str, Any]:
    """``clean_policy`` for a proposal: a rule that does not mention ``pause_requires_change``
    keeps the live value, so changing approval counts never silently drops it."""
    cleaned = clean_policy(data)
    if isinstance(data, dict) and "pause_requires_change" not in data:
        cleaned["pause_requires_change"] = current_rule(environment, cleaned["criticality"])["pause_requires_change"]
    return cleaned


def clean_policy(data: object) -> dict[str, Any]:
    """Validate a proposed rule or raise ValidationError({field: [messages]})."""
    if not isinstance(data, dict):
        raise ValidationError(
            {
                "definition": [
                    "Must be an object with criticality, required_approvals, separation_of_duties "
                    "and optionally pause_requires_change."
                ]
            }
        )
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(data) - set(RULE_FIELDS))
    if unknown:
        errors["definition"] = [f"Unknown field(s): {', '.join(unknown)}."]
    criticality = data.get("criticality", "") or ""
    if criticality not in ("", *Criticality.values):
        errors["criticality"] = [f"Must be blank (default rule) or one of: {', '.join(Criticality.values)}."]
    required = data.get("required_approvals")
    if isinstance(required, bool) or not isinstance(required, int):
        errors["required_approvals"] = ["Must be a whole number of approvals."]
    elif not 0 <= required <= MAX_REQUIRED_APPROVALS:
        errors["required_approvals"] = [f"Must be between 0 and {MAX_REQUIRED_APPROVALS}."]
    separation = data.get("separation_of_duties", False)
    if not isinstance(separation, bool):
        errors["separation_of_duties"] = ["Must be true or false."]
    elif separation and isinstance(required, int) and required < 1 and "required_approvals" not in errors:
        errors["separation_of_duties"] = ["Separation of duties needs at least one approval."]
    pause = data.get("pause_requires_change", False)
    if not isinstance(pause, bool):
        errors["pause_requires_change"] = ["Must be true or false."]
    if errors:
        raise ValidationError(errors)
    return {
        "criticality": criticality,
        "required_approvals": required,
        "separation_of_duties": separation,
        "pause_requires_change": pause,
    }


def rule_for_config(tenant_id: int, environment: Environment | None) -> Rule:
    """The rule for a window, calendar or pool change.

    In an environment: the strictest of its rules over every criticality, since the object affects
    every job there. Tenant-wide: the strictest over all the tenant's environments. No separation
    of duties: these objects have no owning team to be independent of.
    """
    environments = [environment] if environment is not None else list(Environment.objects.filter(tenant_id=tenant_id))
    required = 0
    for env in environments:
        required = max(required, rule_for(env, ["", *Criticality.values]).required_approvals)
    return Rule(required, False)


def may_propose_config(user: AnyUser, *, tenant_id: int, environment_id: int | None) -> bool:
    """Tenant admins propose every window, calendar and pool change; authors not narrowed to a team
    propose windows and pools of an environment they author in. Tenant-wide objects are admins' only."""
    if not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
        return False
    if getattr(user, "is_superuser", False):
        return True
    for g in grants_for(user):
        if g.tenant_id != tenant_id or g.team_id is not None:
            continue
        covers_env = g.environment_id is None or g.environment_id == environment_id
        if g.role == Role.TENANT_ADMIN and covers_env:
            return True
        if g.role == Role.AUTHOR and environment_id is not None and covers_env:
            return True
    return False
