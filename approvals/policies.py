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

from django.core.exceptions import ValidationError

from governance.access import Action, can_over, grants_for
from governance.models import Environment
from jobs.models import Criticality

from .models import ApprovalPolicy

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


def effective_rules(environments: list[Environment]) -> dict[int, dict]:
    """Per environment: the rule each criticality gets (explicit row or inherited default) and
    the rule for changing the policy itself, from one query for all environments."""
    by_env: dict[int, list[ApprovalPolicy]] = {env.pk: [] for env in environments}
    for policy in ApprovalPolicy.objects.filter(environment__in=[env.pk for env in environments]):
        by_env[policy.environment_id].append(policy)
    result = {}
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


def _as_dict(rule: Rule) -> dict:
    return {"required_approvals": rule.required_approvals, "separation_of_duties": rule.separation_of_duties}


def team_ids_of(user, tenant_id: int) -> set[int]:
    """Teams the user belongs to in a tenant (any role grant narrowed to the team)."""
    return {g.team_id for g in grants_for(user) if g.tenant_id == tenant_id and g.team_id is not None}


def is_independent(user, *, tenant_id: int, owning_team_id: int | None) -> bool:
    teams = team_ids_of(user, tenant_id)
    return bool(teams) and owning_team_id not in teams


def may_review_policy(user, *, tenant_id: int, environment_id: int) -> bool:
    """Policy changes are reviewed by approvers of the whole environment, not of one team."""
    return can_over(user, Action.REVIEW, tenant_id, None, environment_id)


def current_rule(environment: Environment, criticality: str) -> dict:
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


def clean_rule(environment: Environment, data) -> dict:
    """``clean_policy`` for a proposal: a rule that does not mention ``pause_requires_change``
    keeps the live value, so changing approval counts never silently drops it."""
    cleaned = clean_policy(data)
    if "pause_requires_change" not in data:
        cleaned["pause_requires_change"] = current_rule(environment, cleaned["criticality"])["pause_requires_change"]
    return cleaned


def clean_policy(data) -> dict:
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


def may_review_config(user, *, tenant_id: int, environment_id: int | None) -> bool:
    """Window, calendar and pool changes are reviewed by approvers not narrowed to a team, covering
    the object's environment; a tenant-wide object needs a tenant-wide approver."""
    return can_over(user, Action.REVIEW, tenant_id, None, environment_id)


def may_propose_config(user, *, tenant_id: int, environment_id: int | None) -> bool:
    """Tenant admins propose every window, calendar and pool change; authors not narrowed to a team
    propose windows and pools of an environment they author in. Tenant-wide objects are admins' only."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if user.is_superuser:
        return True
    from governance.models import Role

    for g in grants_for(user):
        if g.tenant_id != tenant_id or g.team_id is not None:
            continue
        covers_env = g.environment_id is None or g.environment_id == environment_id
        if g.role == Role.TENANT_ADMIN and covers_env:
            return True
        if g.role == Role.AUTHOR and environment_id is not None and covers_env:
            return True
    return False
