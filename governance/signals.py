"""Audit logins, logouts and failed logins; keep the Vault policies in step with tenants, environments and teams."""

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.db.models.signals import post_delete, post_init, post_save
from django.dispatch import receiver

from . import audit, secrets
from .models import AuditAction, Environment, Team, Tenant


def _ip(request) -> str | None:
    return request.META.get("REMOTE_ADDR") if request is not None else None


@receiver(user_logged_in)
def on_login(sender, request, user, **kwargs):
    audit.record(AuditAction.LOGIN, actor=user, ip=_ip(request))


@receiver(user_logged_out)
def on_logout(sender, request, user, **kwargs):
    if user is not None:
        audit.record(AuditAction.LOGOUT, actor=user, ip=_ip(request))


@receiver(user_login_failed)
def on_login_failed(sender, credentials, request=None, **kwargs):
    username = str(credentials.get("username", ""))[:150]
    audit.record(AuditAction.LOGIN_FAILED, actor_repr=username, data={"username": username}, ip=_ip(request))


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
