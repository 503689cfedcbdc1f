"""Audit logins, logouts and failed logins; keep the Vault policies in step with tenants, environments and teams."""

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.db.models.signals import post_delete, post_init, post_save
from django.dispatch import receiver

from . import audit, secrets
from .models import AuditAction, Environment, ScopeGroupRole, ScopeUserRole, ServiceAccount, Team, Tenant


def _ip(request) -> str | None:
    return request.META.get("REMOTE_ADDR") if request is not None else None


def _member_tenants(user) -> list[int | None]:
    """The tenants whose audit shows this user's sign-ins: every tenant where they hold a role (or
    their service account's tenant); none (the platform chain) for users of no tenant."""
    if user is None or not getattr(user, "pk", None):
        return [None]
    tenants = set(ScopeUserRole.objects.filter(user=user).values_list("content_object__tenant_id", flat=True))
    tenants |= set(ScopeGroupRole.objects.filter(group__user=user).values_list("content_object__tenant_id", flat=True))
    tenants |= set(ServiceAccount.objects.filter(user=user).values_list("tenant_id", flat=True))
    member: list[int | None] = [*sorted(tenants)]
    return member or [None]


def _record_sign_in(action: str, user, **fields) -> None:
    # One event in each member tenant's chain, so each tenant's auditors see it in their own trail
    # (never another tenant's); each append is its own chain, so the hash chains stay intact.
    for tenant_id in _member_tenants(user):
        audit.record(action, tenant=tenant_id, **fields)


@receiver(user_logged_in)
def on_login(sender, request, user, **kwargs):
    _record_sign_in(AuditAction.LOGIN, user, actor=user, ip=_ip(request))


@receiver(user_logged_out)
def on_logout(sender, request, user, **kwargs):
    if user is not None:
        _record_sign_in(AuditAction.LOGOUT, user, actor=user, ip=_ip(request))


@receiver(user_login_failed)
def on_login_failed(sender, credentials, request=None, **kwargs):
    username = str(credentials.get("username", ""))[:150]
    # A known user's failed sign-ins go to their tenants' trails; an unknown name to the platform's.
    user_model = get_user_model()
    user = user_model.objects.filter(**{user_model.USERNAME_FIELD: username}).first() if username else None
    _record_sign_in(AuditAction.LOGIN_FAILED, user, actor_repr=username, data={"username": username}, ip=_ip(request))


@receiver(post_init, sender=Tenant)
def remember_secret_scoping(sender, instance, **kwargs):
    # Read from __dict__: a tenant loaded with .only() must not run a query here.
    instance._loaded_secrets_by_team = instance.__dict__.get("secrets_by_team")


@receiver(post_save, sender=Tenant)
def on_tenant_saved(sender, instance, created, raw=False, **kwargs):
    # Every path that creates a tenant (admin, seed_demo, a shell) saves the model; the policy is
    # written after the commit, so an unreachable Vault never blocks or undoes the tenant.
    if created and not raw:
        tenant_id, slug = instance.pk, instance.slug
        transaction.on_commit(lambda: secrets.reconcile_policy(reason=f"tenant {slug} created", tenant_id=tenant_id))
    elif not raw and instance._loaded_secrets_by_team not in (None, instance.secrets_by_team):
        # Switching team scoping replaces the tenant's per-environment policies by per-team ones (or back).
        tenant_id, slug = instance.pk, instance.slug
        transaction.on_commit(
            lambda: secrets.reconcile_policy(reason=f"tenant {slug} secret scoping changed", tenant_id=tenant_id)
        )
    instance._loaded_secrets_by_team = instance.secrets_by_team


@receiver(post_save, sender=Environment)
@receiver(post_save, sender=Team)
def on_scope_created(sender, instance, created, raw=False, **kwargs):
    # A new environment (or team, where the tenant scopes secrets by team) is a new Vault policy.
    if created and not raw:
        tenant_id, what = instance.tenant_id, f"{sender._meta.model_name} {instance.slug} created"
        transaction.on_commit(lambda: secrets.reconcile_policy(reason=what, tenant_id=tenant_id))


@receiver(post_delete, sender=Environment)
@receiver(post_delete, sender=Team)
def on_scope_deleted(sender, instance, **kwargs):
    tenant_id, what = instance.tenant_id, f"{sender._meta.model_name} {instance.slug} deleted"
    transaction.on_commit(lambda: secrets.reconcile_policy(reason=what, tenant_id=tenant_id))
