"""Verb-named writes of the governance layer; each is atomic and audited."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction
from guardian.shortcuts import assign_perm, remove_perm

from . import audit
from .access import Action, can_over, forget_grants
from .actors import Actor, is_system, require_actor
from .models import AuditAction, Environment, Role, Scope, ScopeUserRole, Team, Tenant


class AccessDenied(Exception):
    """The actor may not do this."""


def _scope(tenant: Tenant, team: Team | None, environment: Environment | None) -> Scope:
    if team is not None and team.tenant_id != tenant.pk:
        raise ValueError("team belongs to another tenant")
    if environment is not None and environment.tenant_id != tenant.pk:
        raise ValueError("environment belongs to another tenant")
    scope, _ = Scope.objects.get_or_create(tenant=tenant, team=team, environment=environment)
    return scope


def _may_administer(actor: Actor, tenant: Tenant, team: Team | None, environment: Environment | None) -> bool:
    """The system (seed, commands) administers every scope; a user needs a tenant-admin grant over it."""
    if is_system(require_actor(actor)):
        return True
    return can_over(
        actor, Action.ADMINISTER, tenant.pk, team.pk if team else None, environment.pk if environment else None
    )


def _role_scope(
    role: Role | str, actor: Actor, tenant: Tenant, team: Team | None, environment: Environment | None, *, verb: str
) -> tuple[Role, Scope]:
    """The role and the scope a grant or a revocation is about; AccessDenied unless ``actor`` may do it."""
    role = Role(role)
    if not _may_administer(actor, tenant, team, environment):
        raise AccessDenied(f"Only a tenant admin whose own role covers that whole scope may {verb} roles in it.")
    return role, _scope(tenant, team, environment)


@transaction.atomic
def grant_role(
    user: User,
    role: Role | str,
    *,
    tenant: Tenant,
    actor: Actor,
    team: Team | None = None,
    environment: Environment | None = None,
) -> Scope:
    """Give ``user`` a role in a tenant, optionally narrowed to a team and/or environment."""
    role, scope = _role_scope(role, actor, tenant, team, environment, verb="grant")
    if ScopeUserRole.objects.filter(user=user, content_object=scope, permission__codename=f"role_{role}").exists():
        return scope
    assign_perm(f"governance.role_{role}", user, scope)
    forget_grants(user)
    audit.record(
        AuditAction.ROLE_GRANTED,
        actor=actor,
        obj=scope,
        tenant=tenant,
        team_id=team.pk if team else None,
        environment_id=environment.pk if environment else None,
        data={"user": user.get_username(), "role": role.value},
    )
    return scope


@transaction.atomic
def revoke_role(
    user: User,
    role: Role | str,
    *,
    tenant: Tenant,
    actor: Actor,
    team: Team | None = None,
    environment: Environment | None = None,
) -> None:
    role, scope = _role_scope(role, actor, tenant, team, environment, verb="revoke")
    remove_perm(f"governance.role_{role}", user, scope)
    forget_grants(user)
    audit.record(
        AuditAction.ROLE_REVOKED,
        actor=actor,
        obj=scope,
        tenant=tenant,
        data={"user": user.get_username(), "role": role.value},
    )
