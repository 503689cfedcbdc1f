"""API tokens for people and service accounts: stored hashed, expiring, revocable, last use recorded.

A token is shown once, when issued (``gov_`` + 43 URL-safe characters, 256 random
bits); only its SHA-256 is kept. Service accounts are tenant-scoped users with no
password whose roles are ordinary grants inside their tenant, limited to
``SERVICE_ACCOUNT_ROLES`` so a pipeline can never approve or administer.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from . import audit
from .access import Action, can_in, can_manage_service_account, can_over
from .actors import Actor
from .models import ApiToken, AuditAction, Environment, Role, ServiceAccount, Team, Tenant
from .services import AccessDenied, grant_role

TOKEN_PREFIX = "gov_"
SERVICE_ACCOUNT_ROLES = (Role.VIEWER, Role.OPERATOR, Role.AUTHOR)
# Writing last_used_at on every request would turn every read into a write.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def _account_of(user) -> ServiceAccount | None:
    return ServiceAccount.objects.filter(user=user).select_related("tenant", "user").first()


def may_manage_tokens(actor: Actor, user: User) -> bool:
    """Anyone manages their own tokens; a service account's tokens are managed by a tenant admin
    whose grant covers everything the account reaches (``access.can_manage_service_account``)."""
    if actor.pk == user.pk:
        return True
    account = _account_of(user)
    return account is not None and can_manage_service_account(actor, account)


@transaction.atomic
def issue_token(
    user: User, *, actor: User, name: str = "", expires_in_days: int | None = None, ip: str | None = None
) -> tuple[ApiToken, str]:
    """Issue a token for ``user``; return the row and the raw token (shown once, never stored)."""
    max_days = settings.GOVERNOR_TOKEN_MAX_DAYS
    days = settings.GOVERNOR_TOKEN_DAYS if expires_in_days is None else expires_in_days
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= max_days:
        raise ValidationError({"expires_in_days": [f"Must be a whole number of days between 1 and {max_days}."]})
    if not user.is_active:
        raise ValidationError({"user": ["This account is disabled."]})
    account = _account_of(user)
    tenant = account.tenant if account else None
    # Never for other people; for a service account, only by an admin over all the account reaches.
    if not may_manage_tokens(actor, user):
        raise AccessDenied(
            "Only a tenant admin whose role covers everything this service account reaches may issue its tokens."
        )
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name[:100],
        key_hash=hash_token(raw),
        prefix=raw[: len(TOKEN_PREFIX) + 6],
        created_by=actor,
        expires_at=timezone.now() + timedelta(days=days),
    )
    audit.record(
        AuditAction.TOKEN_ISSUED,
        actor=actor,
        tenant=tenant,
        data={
            "token": token.pk,
            "prefix": token.prefix,
            "for": user.get_username(),
            "kind": "service_account" if tenant else "user",
            "expires_at": token.expires_at.isoformat(),
        },
        ip=ip,
    )
    return token, raw


@transaction.atomic
def revoke_token(token: ApiToken, *, actor: User, ip: str | None = None) -> ApiToken:
    account = _account_of(token.user)
    tenant = account.tenant if account else None
    if not may_manage_tokens(actor, token.user):
        raise AccessDenied(
            "You may revoke only your own tokens, or tokens of service accounts whose whole reach your "
            "tenant admin role covers."
        )
    if token.revoked_at is None:
        ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        token.refresh_from_db()
        audit.record(
            AuditAction.TOKEN_REVOKED,
            actor=actor,
            tenant=tenant,
            data={"token": token.pk, "prefix": token.prefix, "for": token.user.get_username()},
            ip=ip,
        )
    return token


def authenticate_token(raw: str, *, ip=None) -> ApiToken | None:
    """The live token matching ``raw`` (recording its use), or None when unknown, expired or revoked."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    now = timezone.now()
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=hash_token(raw), revoked_at__isnull=True, expires_at__gt=now)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION or token.last_used_ip != ip:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now, last_used_ip=ip)
        token.last_used_at, token.last_used_ip = now, ip
    return token


@transaction.atomic
def create_service_account(
    *,
    actor: User,
    tenant: Tenant,
    name: str,
    role: Role | str,
    team: Team | None = None,
    environment: Environment | None = None,
    description: str = "",
) -> ServiceAccount:
    """A tenant admin creates a password-less account holding one limited role in their tenant."""
    if not can_in(actor, Action.ADMINISTER, tenant.pk):
        raise AccessDenied("Only a tenant admin may create service accounts.")
    errors: dict[str, list[str]] = {}
    if role not in SERVICE_ACCOUNT_ROLES:
        errors["role"] = [f"Service accounts may hold only: {', '.join(SERVICE_ACCOUNT_ROLES)}."]
    if team is not None and team.tenant_id != tenant.pk:
        errors["team"] = ["Not a team of this tenant."]
    if environment is not None and environment.tenant_id != tenant.pk:
        errors["environment"] = ["Not an environment of this tenant."]
    account = ServiceAccount(tenant=tenant, name=name, description=description, created_by=actor)
    try:
        account.full_clean(exclude=["user"])
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    if not can_over(
        actor, Action.ADMINISTER, tenant.pk, team.pk if team else None, environment.pk if environment else None
    ):
        raise AccessDenied("Your tenant admin role is narrowed: a service account may not reach past it.")
    user = get_user_model()(username=f"sa.{tenant.slug}.{name}"[:150], is_active=True)
    user.set_unusable_password()
    user.save()
    account.user = user
    account.save()
    audit.record(
        AuditAction.SERVICE_ACCOUNT_CREATED,
        actor=actor,
        obj=account,
        data={
            "name": name,
            "role": str(role),
            "team": team.slug if team else None,
            "environment": environment.slug if environment else None,
        },
    )
    grant_role(user, role, tenant=tenant, team=team, environment=environment, actor=actor)
    return account
