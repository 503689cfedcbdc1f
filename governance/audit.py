"""Appending to the hash-chained audit trail.

Call ``record`` inside the transaction of the change it describes, so the
event and the change commit or roll back together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from .models import AuditChain, AuditEvent, Tenant


def _label(obj: Model | None) -> tuple[str, str, str]:
    if obj is None:
        return "", "", ""
    return obj._meta.label_lower, str(obj.pk), str(obj)[:300]


def record(
    action: str,
    *,
    actor=None,
    obj: Model | None = None,
    tenant: Tenant | int | None = None,
    team_id: int | None = None,
    environment_id: int | None = None,
    data: dict[str, Any] | None = None,
    ip: str | None = None,
    actor_repr: str | None = None,
) -> AuditEvent:
    """Append one event to its tenant's chain (the tenant is taken from ``obj`` when not given)."""
    tenant_id = tenant.pk if isinstance(tenant, Tenant) else tenant
    if obj is not None and tenant_id is None:
        tenant_id = getattr(obj, "tenant_id", None)
    if obj is not None:
        team_id = team_id if team_id is not None else getattr(obj, "team_id", None)
        environment_id = environment_id if environment_id is not None else getattr(obj, "environment_id", None)
    object_type, object_id, object_repr = _label(obj)
    user = actor if getattr(actor, "is_authenticated", False) else None
    with transaction.atomic():
        chain, _ = AuditChain.objects.get_or_create(tenant_id=tenant_id)
        # Lock the chain head: appends to one tenant's chain are serialised.
        chain = AuditChain.objects.select_for_update().get(pk=chain.pk)
        event = AuditEvent(
            tenant_id=tenant_id,
            seq=chain.last_seq + 1,
            created_at=timezone.now(),
            actor=user,
            actor_repr=actor_repr if actor_repr is not None else (user.get_username() if user else "system"),
            action=action,
            object_type=object_type,
            object_id=object_id,
            object_repr=object_repr,
            team_id=team_id,
            environment_id=environment_id,
            data=data or {},
            ip=ip,
            prev_hash=chain.last_hash,
        )
        event.hash = event.compute_hash()
        event.save(force_insert=True)
        AuditChain.objects.filter(pk=chain.pk).update(last_seq=event.seq, last_hash=event.hash)
    return event


def verify_chain(tenant_id: int | None) -> tuple[int, AuditEvent | None, str]:
    """Walk one chain; return (events checked, first bad event or None, reason)."""
    previous = ""
    expected_seq = 1
    checked = 0
    for event in AuditEvent.objects.filter(tenant_id=tenant_id).order_by("seq").iterator(chunk_size=2000):
        if event.seq != expected_seq:
            return checked, event, f"sequence gap: expected {expected_seq}, found {event.seq} (events deleted)"
        if event.prev_hash != previous:
            return checked, event, "link broken: prev_hash does not match the previous event"
        if event.compute_hash() != event.hash:
            return checked, event, "content changed: hash does not match the event"
        previous = event.hash
        expected_seq += 1
        checked += 1
    head = AuditChain.objects.filter(tenant_id=tenant_id).first()
    if head is None and checked:
        return checked, None, "chain head missing (deleted)"
    if head is not None and head.last_seq != checked:
        return checked, None, f"chain head says {head.last_seq} events, found {checked} (events deleted at the end)"
    if head is not None and head.last_hash != previous:
        return checked, None, "chain head hash does not match the last event (last event changed or replaced)"
    return checked, None, ""


@dataclass(frozen=True)
class ChainReport:
    tenant_id: int | None
    tenant: str
    checked: int
    ok: bool
    broken_seq: int | None
    broken_id: int | None
    reason: str


def verify_all() -> list[ChainReport]:
    """Verify every tenant's chain and the platform chain (tenant NULL)."""
    tenant_ids: set[int | None] = set(AuditChain.objects.values_list("tenant_id", flat=True))
    tenant_ids |= set(AuditEvent.objects.order_by().values_list("tenant_id", flat=True).distinct())
    slugs = dict(Tenant.objects.values_list("pk", "slug"))
    reports = []
    for tenant_id in sorted(tenant_ids, key=lambda t: (t is not None, t or 0)):
        checked, bad, reason = verify_chain(tenant_id)
        reports.append(
            ChainReport(
                tenant_id=tenant_id,
                tenant=slugs.get(tenant_id, "platform") if tenant_id is not None else "platform",
                checked=checked,
                ok=not reason,
                broken_seq=bad.seq if bad is not None else None,
                broken_id=bad.pk if bad is not None else None,
                reason=reason,
            )
        )
    return reports
