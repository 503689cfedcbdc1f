"""Notification channels: what a valid target is, who may manage a channel, and the audited writes.

A webhook URL and a generic chat URL (apprise ``json://``, ``form://``, ``xml://``) must pass the
tenant's HTTP policy (``hooks.http_policy``: hosts on an allow-list, no internal address unless named
literally and allowed) when the channel is created and again at every delivery. Other apprise URLs
are accepted only for chat services with a fixed public host. A webhook's signing secret is a Vault
reference under one of the tenant's scopes, never a value.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import apprise
import httpx
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction

from governance import audit
from governance.access import Action, can_over
from governance.actors import Actor, is_system, require_actor
from governance.egress import HostRefused, check_url_host
from governance.models import AuditAction, Environment, Team, Tenant
from governance.secrets import SecretScope, parse_reference
from governance.services import AccessDenied

from .hooks import http_policy
from .models import Channel, ChannelKind

# apprise services whose host is fixed by the service (the URL carries only tokens): no egress to pick.
CHAT_SERVICES = frozenset({"slack", "discord", "msteams", "tgram", "gchat", "pagerduty", "opsgenie", "pover"})
# apprise's generic plugins post to any host: the tenant's HTTP policy decides, as for webhooks.
GENERIC_CHAT = {"json": "http", "jsons": "https", "form": "http", "forms": "https", "xml": "http", "xmls": "https"}
POLICY_NAME = "the tenant's"


def may_manage(actor: Actor, tenant_id: int, team_id: int | None) -> bool:
    """Tenant admins manage every channel; an admin narrowed to a team, that team's channels."""
    return is_system(require_actor(actor)) or can_over(actor, Action.ADMINISTER, tenant_id, team_id, None)


def http_url_of(kind: str, target: str) -> str | None:
    """The plain http(s) URL a webhook or generic chat target posts to (None for the other kinds)."""
    if kind == ChannelKind.WEBHOOK:
        return target
    if kind == ChannelKind.APPRISE:
        parts = urlsplit(target)
        scheme = GENERIC_CHAT.get(parts.scheme.lower())
        if scheme:
            return urlunsplit((scheme, parts.netloc, parts.path, "", ""))
    return None


def check_egress(tenant_id: int, kind: str, target: str, *, resolve: bool = True) -> None:
    """HostRefused unless the tenant's HTTP policy lets this channel's URL be called."""
    url = http_url_of(kind, target)
    if url is not None:
        check_url_host(url, http_policy(tenant_id), resolve=resolve, whose=POLICY_NAME)


def chat_service(target: str) -> apprise.plugins.NotifyBase:
    """The apprise plugin for a URL, or ValueError naming what is wrong."""
    scheme = urlsplit(target).scheme.lower()
    if scheme not in CHAT_SERVICES and scheme not in GENERIC_CHAT:
        allowed = ", ".join(sorted(CHAT_SERVICES | set(GENERIC_CHAT)))
        raise ValueError(f"{scheme or 'No'!r} is not a supported chat service; use one of: {allowed}.")
    plugin = apprise.Apprise.instantiate(target)
    if plugin is None:
        raise ValueError(f"apprise cannot parse this {scheme}:// URL; see the apprise wiki for its form.")
    return plugin


def secret_scope(reference: str, tenant: Tenant, team: Team | None) -> tuple[SecretScope, Environment]:
    """The scope a signing secret reference lies in (its environment is the path segment after the
    tenant), or ValueError."""
    parts = reference.split("#", 1)[0].split("/")
    prefix = settings.VAULT_TENANT_PREFIX.strip("/").split("/")
    # vault:<mount>/<prefix...>/<tenant>/<environment>/...
    at = 1 + len(prefix)
    slug = parts[at + 1] if len(parts) > at + 1 and parts[at] == tenant.slug else ""
    environment = Environment.objects.filter(tenant=tenant, slug=slug).first() if slug else None
    if environment is None:
        example = f"vault:{settings.VAULT_MOUNTS[0]}/{settings.VAULT_TENANT_PREFIX}/{tenant.slug}/<environment>/..."
        raise ValueError(f"The signing secret must lie under one of {tenant.slug}'s environments: {example}#<key>.")
    if tenant.secrets_by_team and team is None:
        raise ValueError("This tenant scopes secrets by team: give the channel a team, and the secret under it.")
    scope = SecretScope.of(tenant, environment, team)
    parse_reference(reference, scope)
    return scope, environment


def clean_channel(*, tenant: Tenant, team: Team | None, kind: str, target: str, secret: str) -> dict[str, str]:
    """The cleaned target and secret, or ValidationError naming the field."""
    errors: dict[str, list[str]] = {}
    target = (target or "").strip()
    secret = (secret or "").strip()
    if team is not None and team.tenant_id != tenant.pk:
        errors["team"] = ["No such team in this tenant."]
    if not target:
        errors["target"] = ["This field is required."]
    elif kind == ChannelKind.EMAIL:
        try:
            validate_email(target)
        except ValidationError:
            errors["target"] = ["Enter a valid email address."]
    elif kind == ChannelKind.APPRISE:
        try:
            chat_service(target)
        except ValueError as exc:
            errors["target"] = [str(exc)]
    if "target" not in errors and target:
        try:
            check_egress(tenant.pk, kind, target)
        except HostRefused as exc:
            errors["target"] = [str(exc)]
        except httpx.ConnectError:
            # Not resolvable from here (yet, or split-horizon DNS): every delivery checks it again.
            pass
    if kind == ChannelKind.WEBHOOK:
        if not secret:
            errors["secret"] = ["A webhook is signed: give the Vault reference of its signing secret."]
        elif "team" not in errors:
            try:
                secret_scope(secret, tenant, team)
            except ValueError as exc:
                errors["secret"] = [str(exc)]
    elif secret:
        errors["secret"] = ["Only webhooks have a signing secret."]
    if errors:
        raise ValidationError(errors)
    return {"target": target, "secret": secret}


def _audit_data(channel: Channel) -> dict:
    return {"name": channel.name, "kind": channel.kind, "team": channel.team_id, "target": display_target(channel)}


def display_target(channel: Channel) -> str:
    """The target as anyone who may see the channel reads it: chat tokens and URL credentials hidden."""
    if channel.kind == ChannelKind.APPRISE:
        try:
            return str(chat_service(channel.target).url(privacy=True))
        except ValueError:
            return f"{urlsplit(channel.target).scheme}://…"
    if channel.kind == ChannelKind.WEBHOOK:
        # Paths and query strings often carry tokens (https://hooks.example/T0/B0/secret): the host says
        # where it goes.
        parts = urlsplit(channel.target)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"
    return channel.target


def create_channel(
    *,
    actor: Actor,
    tenant: Tenant,
    name: str,
    kind: str,
    target: str,
    team: Team | None = None,
    secret: str = "",
) -> Channel:
    """Create a channel (tenant admins; team admins for their team), audited."""
    if not may_manage(actor, tenant.pk, team.pk if team else None):
        raise AccessDenied("Only a tenant admin, or an admin of the channel's team, may create notification channels.")
    cleaned = clean_channel(tenant=tenant, team=team, kind=kind, target=target, secret=secret)
    channel = Channel(tenant=tenant, team=team, name=name, kind=kind, created_by=_user(actor), **cleaned)
    try:
        channel.full_clean(exclude=["tenant", "team", "created_by"])
    except ValidationError as exc:
        raise ValidationError(exc.message_dict) from None
    try:
        with transaction.atomic():
            channel.save()
            audit.record(AuditAction.CHANNEL_CREATED, actor=actor, obj=channel, data=_audit_data(channel))
    except IntegrityError:
        raise ValidationError({"name": ["A channel with this name already exists in this tenant."]}) from None
    return channel


def set_channel_enabled(channel: Channel, *, actor: Actor, enabled: bool) -> Channel:
    """Disable (pending messages to it then fail at their next try) or enable a channel, audited."""
    if not may_manage(actor, channel.tenant_id, channel.team_id):
        raise AccessDenied("Only a tenant admin, or an admin of the channel's team, may change this channel.")
    with transaction.atomic():
        channel = Channel.objects.select_for_update().get(pk=channel.pk)
        if channel.enabled == enabled:
            return channel
        channel.enabled = enabled
        channel.save(update_fields=["enabled"])
        action = AuditAction.CHANNEL_ENABLED if enabled else AuditAction.CHANNEL_DISABLED
        audit.record(action, actor=actor, obj=channel, data=_audit_data(channel))
    return channel


def _user(actor: Actor):
    return None if is_system(actor) else actor
