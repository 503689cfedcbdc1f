"""Audit logins, logouts and failed logins; extend the Vault policy to each new tenant."""

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from . import audit, secrets
from .models import AuditAction, Tenant


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


@receiver(post_save, sender=Tenant)
def on_tenant_created(sender, instance, created, raw=False, **kwargs):
    # Every path that creates a tenant (admin, seed_demo, a shell) saves the model; the policy is
    # written after the commit, so an unreachable Vault never blocks or undoes the tenant.
    if created and not raw:
        tenant_id, slug = instance.pk, instance.slug
        transaction.on_commit(lambda: secrets.reconcile_policy(reason=f"tenant {slug} created", tenant_id=tenant_id))
