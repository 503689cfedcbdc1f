"""The one place that decides access.

``restrict(queryset, user, action)`` filters any tenant-owned queryset to what
the user may do; ``can(user, action, obj)`` answers for one object;
``get_object_or_404_for(user, action, queryset, **lookup)`` turns "missing" and
"not yours" into the same 404. API, views, admin, exports and background tasks
all call these.

Each model names the fields that place it in a tenant, team and environment via
``ACCESS_FIELDS = (tenant_field, team_field_or_None, environment_field_or_None)``.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from django.db.models import Model, Q, QuerySet
from django.http import Http404

from .models import Role, ScopeGroupRole, ScopeUserRole


class Action(StrEnum):
    VIEW = "view"
    TRIGGER = "trigger"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    PROPOSE = "propose"
    REVIEW = "review"
    ADMINISTER = "administer"


_OPERATE = {Role.OPERATOR, Role.AUTHOR, Role.TENANT_ADMIN}
ROLES_FOR_ACTION: dict[Action, frozenset[str]] = {
    Action.VIEW: frozenset(Role.values),
    Action.TRIGGER: frozenset(_OPERATE),
    Action.PAUSE: frozenset(_OPERATE),
    Action.RESUME: frozenset(_OPERATE),
    Action.CANCEL: frozenset(_OPERATE),
    Action.PROPOSE: frozenset({Role.AUTHOR, Role.TENANT_ADMIN}),
    # Approving is its own role: administrators are not reviewers by default.
    Action.REVIEW: frozenset({Role.APPROVER}),
    Action.ADMINISTER: frozenset({Role.TENANT_ADMIN}),
}


@dataclass(frozen=True)
class Grant:
    role: str
    tenant_id: int
    team_id: int | None
    environment_id: int | None

    def covers(self, tenant_id: Any, team_id: Any, environment_id: Any) -> bool:
        if self.tenant_id != tenant_id:
            return False
        if self.team_id is not None and team_id is not None and self.team_id != team_id:
            return False
        return not (
            self.environment_id is not None and environment_id is not None and self.environment_id != environment_id
        )


def grants_for(user) -> list[Grant]:
    """All role grants of a user (direct and through groups), cached on the user object."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return []
    cached = getattr(user, "_governor_grants", None)
    if cached is not None:
        return cached
    fields = (
        "permission__codename",
        "content_object__tenant_id",
        "content_object__team_id",
        "content_object__environment_id",
    )
    rows = list(ScopeUserRole.objects.filter(user=user).values_list(*fields))
    rows += list(ScopeGroupRole.objects.filter(group__user=user).values_list(*fields))
    grants = [
        Grant(codename.removeprefix("role_"), tenant_id, team_id, env_id)
        for codename, tenant_id, team_id, env_id in rows
        if codename.startswith("role_")
    ]
    user._governor_grants = grants
    return grants


def forget_grants(user) -> None:
    if hasattr(user, "_governor_grants"):
        del user._governor_grants


def _grants(user, action: Action | str) -> list[Grant]:
    roles = ROLES_FOR_ACTION[Action(action)]
    return [g for g in grants_for(user) if g.role in roles]


def _value(obj: Model, path: str | None) -> Any:
    if path is None:
        return None
    value: Any = obj
    for part in path.split("__"):
        value = getattr(value, part)
        if value is None:
            return None
    return value


def access_key(obj: Model) -> tuple[Any, Any, Any]:
    tenant_f, team_f, env_f = obj.ACCESS_FIELDS
    return _value(obj, tenant_f), _value(obj, team_f), _value(obj, env_f)


def can_in(user, action: Action | str, tenant_id: Any, team_id: Any = None, environment_id: Any = None) -> bool:
    """May the user do ``action`` on something placed at (tenant, team, environment)?"""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if user.is_superuser:
        return True
    return any(g.covers(tenant_id, team_id, environment_id) for g in _grants(user, action))


def can_over(user, action: Action | str, tenant_id: Any, team_id: Any = None, environment_id: Any = None) -> bool:
    """May the user do ``action`` over the WHOLE of (tenant, team?, environment?)?

    ``can_in`` lets a grant narrowed to one team or environment act on tenant-level rows (it may read
    them). Writes whose effect reaches past one team or environment (granting roles, a tenant-wide
    freeze) need a grant at least as broad as their target, or a narrowed admin could widen itself.
    """
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if user.is_superuser:
        return True
    return any(
        g.tenant_id == tenant_id
        and (g.team_id is None or g.team_id == team_id)
        and (g.environment_id is None or g.environment_id == environment_id)
        for g in _grants(user, action)
    )


def can(user, action: Action | str, obj: Model) -> bool:
    return can_in(user, action, *access_key(obj))


def restrict(queryset: QuerySet, user, action: Action | str = Action.VIEW) -> QuerySet:
    """Filter a tenant-owned queryset to the rows the user may ``action``."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return queryset.none()
    if user.is_superuser:
        return queryset
    tenant_f, team_f, env_f = queryset.model.ACCESS_FIELDS
    condition = Q(pk__in=[])
    for grant in _grants(user, action):
        clause = Q(**{tenant_f: grant.tenant_id})
        if grant.team_id is not None and team_f is not None:
            # Tenant-level rows (no team, e.g. some audit events) stay visible, as in can().
            clause &= Q(**{team_f: grant.team_id}) | Q(**{f"{team_f}__isnull": True})
        if grant.environment_id is not None and env_f is not None:
            clause &= Q(**{env_f: grant.environment_id}) | Q(**{f"{env_f}__isnull": True})
        condition |= clause
    return queryset.filter(condition)


def tenant_ids(user, action: Action | str = Action.VIEW) -> set[int]:
    """Tenants in which the user holds any role allowing ``action``."""
    return {g.tenant_id for g in _grants(user, action)}


def get_object_or_404_for(user, action: Action | str, queryset: QuerySet, **lookup) -> Model:
    """Fetch one object the user may ``action``; missing and not-yours are the same 404."""
    try:
        obj = restrict(queryset, user, Action.VIEW).get(**lookup)
    except (queryset.model.DoesNotExist, ValueError, TypeError):
        _audit_hidden(user, action, queryset, lookup)
        raise Http404("Not found.") from None
    if action != Action.VIEW and not can(user, action, obj):
        # Visible but not allowed: a permission error, not a hiding 404.
        from django.core.exceptions import PermissionDenied

        record_denied(user, action, obj, reason="role does not allow this action")
        raise PermissionDenied(f"You may not {action} this {queryset.model._meta.verbose_name}.")
    return obj


# Refusals recorded while serving the current request: the UI's safety net
# (security.DeniedAccessAuditMiddleware) records any 403 that no view recorded itself.
denials_recorded: ContextVar[int] = ContextVar("governor_denials_recorded", default=0)


def record_denied(user, action: Action | str, obj: Model, *, reason: str) -> None:
    """Audit a refused attempt in the object's tenant chain (the caller answers 403 or 404)."""
    from . import audit
    from .models import AuditAction

    denials_recorded.set(denials_recorded.get() + 1)
    tenant_id, team_id, env_id = access_key(obj)
    audit.record(
        AuditAction.ACCESS_DENIED,
        actor=user,
        obj=obj,
        tenant=tenant_id,
        team_id=team_id,
        environment_id=env_id,
        data={"action": str(action), "reason": reason},
    )


def _audit_hidden(user, action: Action | str, queryset: QuerySet, lookup: dict) -> None:
    """A 404 for an object that exists but is hidden is a probe worth recording; a truly missing one is not."""
    if not getattr(user, "is_authenticated", False):
        return
    try:
        obj = queryset.get(**lookup)
    except (queryset.model.DoesNotExist, queryset.model.MultipleObjectsReturned, ValueError, TypeError):
        return
    record_denied(user, action, obj, reason="object not visible to the user")
