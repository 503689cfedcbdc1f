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

from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeAlias, TypeVar, cast

from django.contrib.auth.models import User
from django.core.exceptions import MultipleObjectsReturned, ObjectDoesNotExist
from django.db.models import Model, Q, QuerySet
from django.http import Http404

from .actors import Subject
from .models import ApiToken, Role, ScopeGroupRole, ScopeUserRole, ServiceAccount

M = TypeVar("M", bound=Model)
# (tenant field, team field or None, environment field or None): see the module docstring.
AccessFields: TypeAlias = tuple[str, str | None, str | None]


class Action(StrEnum):
    VIEW = "view"
    TRIGGER = "trigger"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    # Acknowledge or resolve an incident (monitoring).
    ACKNOWLEDGE = "acknowledge"
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
    Action.ACKNOWLEDGE: frozenset(_OPERATE),
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


def _member(user: Subject | None) -> User | None:
    """The active signed-in user ``user`` is, or None (anonymous, deactivated, the system actor).

    Duck-typed on purpose: the manifest commands' shell operator (``jobs.management.commands.
    _manifest_cli``) is a read-only stand-in for a superuser, not a User row."""
    if getattr(user, "is_authenticated", False) and getattr(user, "is_active", False):
        return cast(User, user)
    return None


def access_fields(model: type[Model] | Model) -> AccessFields:
    fields: AccessFields = model.ACCESS_FIELDS  # type: ignore[union-attr]
    return fields


def grants_for(user: Subject | None) -> list[Grant]:
    """All role grants of a user (direct and through groups), cached on the user object."""
    member = _member(user)
    if member is None:
        return []
    cached: list[Grant] | None = getattr(member, "_governor_grants", None)
    if cached is not None:
        return cached
    fields = (
        "permission__codename",
        "content_object__tenant_id",
        "content_object__team_id",
        "content_object__environment_id",
    )
    # Direct and group grants in one statement: every page reads them, one round trip fewer.
    direct = ScopeUserRole.objects.filter(user=member).values_list(*fields).order_by()
    grouped = ScopeGroupRole.objects.filter(group__user=member).values_list(*fields).order_by()
    rows = list(direct.union(grouped, all=True))
    grants = [
        Grant(codename.removeprefix("role_"), tenant_id, team_id, env_id)
        for codename, tenant_id, team_id, env_id in rows
        if codename.startswith("role_")
    ]
    member._governor_grants = grants  # type: ignore[attr-defined]
    return grants


def prime_grants(users: Iterable[Subject]) -> None:
    """Load the grants of many users in one query (for pages that check each row's reviewers)."""
    pending = {u.pk: u for u in map(_member, users) if u is not None and getattr(u, "_governor_grants", None) is None}
    if not pending:
        return
    fields = (
        "permission__codename",
        "content_object__tenant_id",
        "content_object__team_id",
        "content_object__environment_id",
    )
    found: dict[int, list[Grant]] = {pk: [] for pk in pending}
    direct = ScopeUserRole.objects.filter(user_id__in=list(pending)).values_list("user_id", *fields).order_by()
    grouped = (
        ScopeGroupRole.objects.filter(group__user__in=list(pending)).values_list("group__user", *fields).order_by()
    )
    rows = list(direct.union(grouped, all=True))
    for user_id, codename, tenant_id, team_id, env_id in rows:
        if codename.startswith("role_"):
            found[user_id].append(Grant(codename.removeprefix("role_"), tenant_id, team_id, env_id))
    for pk, user in pending.items():
        user._governor_grants = found[pk]  # type: ignore[attr-defined]


def forget_grants(user: Subject) -> None:
    if hasattr(user, "_governor_grants"):
        del user._governor_grants


def _grants(user: Subject | None, action: Action | str) -> list[Grant]:
    roles = ROLES_FOR_ACTION[Action(action)]
    return [g for g in grants_for(user) if g.role in roles]


def grant_scopes(
    user: Subject | None, action: Action | str, model: type[Model]
) -> list[tuple[int, int | None, int | None]]:
    """The distinct (tenant, team, environment) scopes ``restrict`` writes one condition each for on
    ``model`` rows (see ``_scopes``); none for an anonymous or inactive user."""
    _, team_f, env_f = access_fields(model)
    return _scopes(user, action, team_f is not None, env_f is not None)


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
    tenant_f, team_f, env_f = access_fields(obj)
    return _value(obj, tenant_f), _value(obj, team_f), _value(obj, env_f)


def can_in(
    user: Subject | None, action: Action | str, tenant_id: Any, team_id: Any = None, environment_id: Any = None
) -> bool:
    """May the user do ``action`` on something placed at (tenant, team, environment)?"""
    member = _member(user)
    if member is None:
        return False
    if member.is_superuser:
        return True
    return any(g.covers(tenant_id, team_id, environment_id) for g in _grants(user, action))


def can_over(
    user: Subject | None, action: Action | str, tenant_id: Any, team_id: Any = None, environment_id: Any = None
) -> bool:
    """May the user do ``action`` over the WHOLE of (tenant, team?, environment?)?

    ``can_in`` lets a grant narrowed to one team or environment act on tenant-level rows (it may read
    them). Writes whose effect reaches past one team or environment (granting roles, a tenant-wide
    freeze) need a grant at least as broad as their target, or a narrowed admin could widen itself.
    """
    member = _member(user)
    if member is None:
        return False
    if member.is_superuser:
        return True
    return any(
        g.tenant_id == tenant_id
        and (g.team_id is None or g.team_id == team_id)
        and (g.environment_id is None or g.environment_id == environment_id)
        for g in _grants(user, action)
    )


def can_over_all(user: Subject | None, action: Action | str, scopes: list[tuple[Any, Any, Any]]) -> bool:
    """``can_over`` for every (tenant, team, environment) scope in the list (an empty list: never)."""
    return bool(scopes) and all(can_over(user, action, *scope) for scope in scopes)


def service_account_scopes(account: ServiceAccount) -> list[tuple[Any, Any, Any]]:
    """What a service account reaches: the scope of each of its grants. An account without grants
    counts as tenant-wide, so only an admin of the whole tenant manages it."""
    scopes = [(g.tenant_id, g.team_id, g.environment_id) for g in grants_for(account.user)]
    return scopes or [(account.tenant_id, None, None)]


def can_manage_service_account(user: Subject | None, account: ServiceAccount) -> bool:
    """Issuing or revoking a service account's tokens needs a tenant-admin grant over all it reaches:
    an admin narrowed to one team must not borrow a tenant-wide account's powers."""
    return can_over_all(user, Action.ADMINISTER, service_account_scopes(account))


# --- Identity for separation of duties --------------------------------------------------------
# A person and the service accounts they control (created, or issued a token for) are one identity:
# whoever can act as an account must not approve its changes, and two approvals by such a pair
# count once. Each user has a set of identity keys: a person {self}; a service account {self} plus
# every person who created it or issued one of its tokens (revoked tokens included: the holder had
# it). Two users are the same identity when their key sets meet.


def identity_keys(user_ids: Iterable[int | None]) -> dict[int, frozenset[int]]:
    """Identity keys of each user id, in one query whatever the number of users."""
    ids = {pk for pk in user_ids if pk is not None}
    keys: dict[int, set[int]] = {pk: {pk} for pk in ids}
    if not ids:
        return {}
    creators = ServiceAccount.objects.filter(user_id__in=ids).values_list("user_id", "created_by_id").order_by()
    issuers = (
        ApiToken.objects.filter(user_id__in=ids, user__service_account__isnull=False)
        .values_list("user_id", "created_by_id")
        .order_by()
    )
    for account_user, controller in creators.union(issuers, all=True):
        if controller is not None:
            keys[account_user].add(controller)
    return {pk: frozenset(k) for pk, k in keys.items()}


def same_identity(user: User | int | None, other: User | int | None) -> bool:
    """Is ``other`` the same person as ``user``, or a service account one of them controls?"""
    a = user.pk if isinstance(user, User) else user
    b = other.pk if isinstance(other, User) else other
    if a is None or b is None:
        return False
    if a == b:
        return True
    keys = identity_keys([a, b])
    return bool(keys[a] & keys[b])


def distinct_identities(user_ids: Iterable[int], keys: dict[int, frozenset[int]] | None = None) -> list[list[int]]:
    """Group user ids into identities (in first-seen order): users whose key sets meet, directly or
    through another member, are one identity."""
    ordered = list(dict.fromkeys(user_ids))
    keys = keys if keys is not None else identity_keys(ordered)
    groups: list[tuple[set[int], list[int]]] = []
    for pk in ordered:
        own = set(keys.get(pk, {pk}))
        members = [pk]
        for group in [g for g in groups if g[0] & own]:
            groups.remove(group)
            own |= group[0]
            members = group[1] + members
        groups.append((own, members))
    return [members for _, members in groups]


def same_identity_q(user: User, field: str) -> Q:
    """Rows whose ``field`` (a user foreign key) is the same identity as ``user`` (see above), as
    subqueries: the review queue and its nav badge pay no extra round trip for it."""
    from django.contrib.auth import get_user_model

    creators = ServiceAccount.objects.filter(user_id=user.pk).values("created_by_id")
    issuers = ApiToken.objects.filter(user_id=user.pk, user__service_account__isnull=False).values("created_by_id")
    # The user's keys: itself, plus its controllers when it is a service account (never NULL: pks).
    keys = get_user_model().objects.filter(Q(pk=user.pk) | Q(pk__in=creators) | Q(pk__in=issuers)).values("pk")
    controlled = ServiceAccount.objects.filter(created_by__in=keys).values("user_id")
    issued = ApiToken.objects.filter(created_by__in=keys, user__service_account__isnull=False).values("user_id")
    return Q(**{f"{field}__in": keys}) | Q(**{f"{field}__in": controlled}) | Q(**{f"{field}__in": issued})


def can(user: Subject | None, action: Action | str, obj: Model) -> bool:
    return can_in(user, action, *access_key(obj))


def restrict(queryset: QuerySet[M], user: Subject | None, action: Action | str = Action.VIEW) -> QuerySet[M]:
    """Filter a tenant-owned queryset to the rows the user may ``action``."""
    member = _member(user)
    if member is None:
        return queryset.none()
    if member.is_superuser:
        return queryset
    tenant_f, team_f, env_f = access_fields(queryset.model)
    condition = Q(pk__in=[])
    for tenant_id, team_id, environment_id in _scopes(user, action, team_f is not None, env_f is not None):
        clause = Q(**{tenant_f: tenant_id})
        if team_id is not None and team_f is not None:
            # Tenant-level rows (no team, e.g. some audit events) stay visible, as in can().
            clause &= Q(**{team_f: team_id}) | Q(**{f"{team_f}__isnull": True})
        if environment_id is not None and env_f is not None:
            clause &= Q(**{env_f: environment_id}) | Q(**{f"{env_f}__isnull": True})
        condition |= clause
    return queryset.filter(condition)


def _scopes(
    user: Subject | None, action: Action | str, by_team: bool, by_environment: bool
) -> list[tuple[int, int | None, int | None]]:
    """The distinct (tenant, team, environment) scopes of the user's grants for ``action``, as far as
    the model tells teams and environments apart, without those a tenant-wide scope already covers.
    One role or two over the same team (an author who also approves) is one condition: SQLite's
    planner reads the same condition written twice, over a join, as a reason to scan every run of
    every job (with 1,000,000 runs, the recent failures of an author-and-approver of one team took
    960 ms, 2 ms with the condition written once; their dashboard 5.8 s)."""
    scopes = dict.fromkeys(
        (g.tenant_id, g.team_id if by_team else None, g.environment_id if by_environment else None)
        for g in _grants(user, action)
    )
    whole = {tenant for tenant, team, env in scopes if team is None and env is None}
    return [s for s in scopes if s[0] not in whole or (s[1] is None and s[2] is None)]


def is_narrowed(user: Subject | None, model: type[Model], action: Action | str = Action.VIEW) -> bool:
    """Does ``restrict`` filter ``model`` rows for this user by team or environment (not only by
    tenant)? Pages choose a plan by it: a condition on a team or environment of a related row is a
    join for every row."""
    member = _member(user)
    if member is None or member.is_superuser:
        return False
    return any(team is not None or env is not None for _, team, env in grant_scopes(user, action, model))


def over_q(user: Subject | None, action: Action | str, model: type[Model]) -> Q:
    """``can_over`` as a query condition on ``model`` (by its ACCESS_FIELDS): rows whose WHOLE
    (tenant, team, environment) one of the user's grants for ``action`` covers. A grant narrowed to
    a team or environment reaches only rows of that team or environment, never rows without one."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return Q(pk__in=[])
    if user.is_superuser:
        return Q()
    tenant_f, team_f, env_f = model.ACCESS_FIELDS  # type: ignore[attr-defined]
    condition = Q(pk__in=[])
    for grant in _grants(user, action):
        clause = Q(**{tenant_f: grant.tenant_id})
        if grant.team_id is not None:
            clause &= Q(**{team_f: grant.team_id}) if team_f is not None else Q(pk__in=[])
        if grant.environment_id is not None:
            clause &= Q(**{env_f: grant.environment_id}) if env_f is not None else Q(pk__in=[])
        condition |= clause
    return condition


def tenant_ids(user: Subject | None, action: Action | str = Action.VIEW) -> set[int]:
    """Tenants in which the user holds any role allowing ``action``."""
    return {g.tenant_id for g in _grants(user, action)}


def get_object_or_404_for(user: Subject | None, action: Action | str, queryset: QuerySet[M], **lookup: Any) -> M:
    """Fetch one object the user may ``action``; missing and not-yours are the same 404."""
    try:
        obj = restrict(queryset, user, Action.VIEW).get(**lookup)
    except (ObjectDoesNotExist, ValueError, TypeError):
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


def record_denied(user: Subject | None, action: Action | str, obj: Model, *, reason: str) -> None:
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


def _audit_hidden(user: Subject | None, action: Action | str, queryset: QuerySet[M], lookup: dict[str, Any]) -> None:
    """A 404 for an object that exists but is hidden is a probe worth recording; a truly missing one is not."""
    if not getattr(user, "is_authenticated", False):
        return
    try:
        obj = queryset.get(**lookup)
    except (ObjectDoesNotExist, MultipleObjectsReturned, ValueError, TypeError):
        return
    record_denied(user, action, obj, reason="object not visible to the user")
