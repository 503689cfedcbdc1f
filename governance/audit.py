"""Appending to the hash-chained audit trail, and proving it was not rewritten.

Call ``record`` inside the transaction of the change it describes, so the
event and the change commit or roll back together.

Each event's hash is an HMAC-SHA256 under ``GOVERNOR_AUDIT_KEY`` (never in the
database) over the event and the previous hash, so someone who can write the
table cannot re-hash a chain they edited. What the key cannot show is a chain
cut short at its end: each chain's head is also anchored outside the database,
in the SIEM stream (every forwarded event carries its ``seq`` and ``hash``) and
in signed checkpoints that ``write_checkpoints`` appends to a file
(``GOVERNOR_AUDIT_CHECKPOINT_DIR``), which ``verify_all`` compares with the table.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from .actors import Subject, user_of
from .models import AuditChain, AuditEvent, Tenant


def _label(obj: Model | None) -> tuple[str, str, str]:
    if obj is None:
        return "", "", ""
    return obj._meta.label_lower, str(obj.pk), str(obj)[:300]


def record(
    action: str,
    *,
    actor: Subject | None = None,
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
    user = user_of(actor)
    with transaction.atomic():
        chain, _ = AuditChain.objects.get_or_create(tenant_id=tenant_id)  # type: ignore[misc]  # None: the global chain (stubs want a non-null id)
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


CHECKPOINT_FILE = "checkpoints.jsonl"
CHECKPOINT_KIND = "governor-audit-checkpoint/v1"


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that a tenant's chain had ``seq`` events ending in ``hash`` at ``at``."""

    tenant_id: int | None
    tenant: str
    seq: int
    hash: str
    at: str
    signature: str = ""

    def payload(self) -> bytes:
        body = {"kind": CHECKPOINT_KIND, "tenant": self.tenant_id, "seq": self.seq, "hash": self.hash, "at": self.at}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def sign(self, key: bytes | None = None) -> str:
        return hmac.new(key or _key(), self.payload(), hashlib.sha256).hexdigest()

    def valid(self) -> bool:
        return hmac.compare_digest(self.signature, self.sign())

    def line(self) -> str:
        row = {"tenant": self.tenant_id, "tenant_slug": self.tenant, "seq": self.seq, "hash": self.hash, "at": self.at}
        return json.dumps({**row, "signature": self.signature}, sort_keys=True) + "\n"


def _key() -> bytes:
    return settings.GOVERNOR_AUDIT_KEY.encode()


def checkpoint_path(directory: str | os.PathLike | None = None) -> Path:
    return Path(directory or settings.GOVERNOR_AUDIT_CHECKPOINT_DIR) / CHECKPOINT_FILE


def read_checkpoints(directory: str | os.PathLike | None = None) -> tuple[dict[int | None, Checkpoint], list[str]]:
    """The newest checkpoint with a valid signature per chain, and a problem per unreadable or
    badly signed line (an edited file, or one signed under another key)."""
    path = checkpoint_path(directory)
    latest: dict[int | None, Checkpoint] = {}
    problems: list[str] = []
    if not path.exists():
        return latest, problems
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
                point = Checkpoint(
                    tenant_id=row["tenant"],
                    tenant=str(row.get("tenant_slug") or "platform"),
                    seq=int(row["seq"]),
                    hash=str(row["hash"]),
                    at=str(row["at"]),
                    signature=str(row["signature"]),
                )
            except (ValueError, KeyError, TypeError):
                problems.append(f"{path}:{number}: not a checkpoint line")
                continue
            if not point.valid():
                problems.append(
                    f"{path}:{number}: bad signature on the checkpoint of {point.tenant} at seq {point.seq}"
                )
                continue
            if point.tenant_id not in latest or point.seq >= latest[point.tenant_id].seq:
                latest[point.tenant_id] = point
    return latest, problems


def write_checkpoints(directory: str | os.PathLike | None = None) -> tuple[list[Checkpoint], list[ChainReport]]:
    """Verify each chain from its last checkpoint on, then append a signed checkpoint of its head.

    A chain that does not verify gets no checkpoint (that would bless the damage): it is returned
    in the second list. The file is opened for appending only, created 0600 in a 0700 directory.
    """
    path = checkpoint_path(directory)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    previous, _ = read_checkpoints(directory)
    written, broken = [], []
    lines = []
    for report in verify_all(checkpoints=previous, incremental=True):
        if not report.ok:
            broken.append(report)
            continue
        if report.checked == 0:
            continue
        # Exactly what was verified, not the head as it is now (events may have been appended since).
        point = Checkpoint(report.tenant_id, report.tenant, report.checked, report.head_hash, _instant(timezone.now()))
        point = Checkpoint(**{**point.__dict__, "signature": point.sign()})
        written.append(point)
        lines.append(point.line())
    if lines:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
            handle.write("".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
    return written, broken


def _instant(value) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def verify_chain(tenant_id: int | None, start: Checkpoint | None = None) -> tuple[int, AuditEvent | None, str]:
    """Walk one chain, from the start or from a checkpoint; return (events checked, first bad
    event or None, reason). Each event's HMAC is checked under the configured key."""
    checked, bad, reason, _ = _walk(tenant_id, start)
    return checked, bad, reason


def _walk(tenant_id: int | None, start: Checkpoint | None) -> tuple[int, AuditEvent | None, str, str]:
    """``verify_chain`` plus the hash of the last event verified.

    The head is read first and the walk stops at it, so events appended while it runs (a live
    system) are left for the next run instead of looking like a mismatch with the head.
    """
    key = _key()
    head = AuditChain.objects.filter(tenant_id=tenant_id).values_list("last_seq", "last_hash").first()  # type: ignore[misc]  # None: the global chain (stubs want a non-null id)
    previous = ""
    expected_seq = 1
    checked = 0
    events = AuditEvent.objects.filter(tenant_id=tenant_id)  # type: ignore[misc]  # None: the global chain (stubs want a non-null id)
    if head is not None:
        events = events.filter(seq__lte=head[0])
    if start is not None and start.seq:
        anchor = events.filter(seq=start.seq).values_list("hash", flat=True).first()
        if anchor != start.hash:
            return 0, None, "the event at the last checkpoint is missing or differs (chain rewritten)", ""
        events = events.filter(seq__gt=start.seq)
        previous, expected_seq, checked = start.hash, start.seq + 1, start.seq
    for event in events.order_by("seq").iterator(chunk_size=2000):
        if event.seq != expected_seq:
            return checked, event, f"sequence gap: expected {expected_seq}, found {event.seq} (events deleted)", ""
        if event.prev_hash != previous:
            return checked, event, "link broken: prev_hash does not match the previous event", ""
        if not hmac.compare_digest(event.compute_hash(key), event.hash):
            reason = "content changed: the HMAC does not match the event (edited, or re-hashed without the key)"
            return checked, event, reason, ""
        previous = event.hash
        expected_seq += 1
        checked += 1
    if head is None:
        return checked, None, "chain head missing (deleted)" if checked else "", previous
    if head[0] != checked:
        return checked, None, f"chain head says {head[0]} events, found {checked} (events deleted at the end)", ""
    if head[1] != previous:
        return checked, None, "chain head hash does not match the last event (last event changed or replaced)", ""
    # Rows past the head that the head has not reached since: written beside the chain, not by it.
    # The rows are read before the head: an event committed in between moved the head with it.
    last = AuditEvent.objects.filter(tenant_id=tenant_id).order_by("-seq").first()  # type: ignore[misc]  # None: the global chain (stubs want a non-null id)
    now = AuditChain.objects.filter(tenant_id=tenant_id).values_list("last_seq", flat=True).first() or 0  # type: ignore[misc]  # None: the global chain (stubs want a non-null id)
    if last is not None and last.seq > now:
        stray = AuditEvent.objects.filter(tenant_id=tenant_id, seq__gt=now).order_by("seq").first() or last  # type: ignore[misc]  # None: the global chain (stubs want a non-null id)
        return checked, stray, f"event seq {stray.seq} lies past the chain head (inserted beside the chain)", ""
    return checked, None, "", previous


def _against_checkpoint(tenant_id: int | None, checked: int, point: Checkpoint) -> tuple[int | None, str]:
    """A chain that verifies by itself must still contain its last checkpoint: (first bad seq, reason)."""
    if checked < point.seq:
        return checked + 1, (
            f"truncated: the checkpoint of {point.at} covers seq {point.seq}, the chain ends at seq {checked}"
        )
    stored = AuditEvent.objects.filter(tenant_id=tenant_id, seq=point.seq).values_list("hash", flat=True).first()  # type: ignore[misc]  # None: the global chain (stubs want a non-null id)
    if stored != point.hash:
        return point.seq, f"event {point.seq} differs from the checkpoint of {point.at} (chain rewritten)"
    return None, ""


@dataclass(frozen=True)
class ChainReport:
    tenant_id: int | None
    tenant: str
    checked: int
    ok: bool
    broken_seq: int | None
    broken_id: int | None
    reason: str
    checkpoint_seq: int | None = None
    head_hash: str = ""


def verify_all(
    checkpoints: dict[int | None, Checkpoint] | None = None, *, incremental: bool = False
) -> list[ChainReport]:
    """Verify every tenant's chain and the platform chain (tenant NULL), each against its newest
    checkpoint when given. ``incremental``: walk each chain only from its checkpoint on."""
    checkpoints = checkpoints or {}
    tenant_ids: set[int | None] = set(AuditChain.objects.values_list("tenant_id", flat=True))
    tenant_ids |= set(AuditEvent.objects.order_by().values_list("tenant_id", flat=True).distinct())
    tenant_ids |= set(checkpoints)
    slugs = dict(Tenant.objects.values_list("pk", "slug"))
    reports = []
    for tenant_id in sorted(tenant_ids, key=lambda t: (t is not None, t or 0)):
        point = checkpoints.get(tenant_id)
        checked, bad, reason, head_hash = _walk(tenant_id, point if incremental else None)
        broken_seq = bad.seq if bad is not None else None
        if not reason and point is not None:
            broken_seq, reason = _against_checkpoint(tenant_id, checked, point)
        elif incremental and point is not None and not checked and reason:
            broken_seq = point.seq
        name = "platform" if tenant_id is None else slugs.get(tenant_id) or (point.tenant if point else str(tenant_id))
        reports.append(
            ChainReport(
                tenant_id=tenant_id,
                tenant=name,
                checked=checked,
                ok=not reason,
                broken_seq=broken_seq,
                broken_id=bad.pk if bad is not None else None,
                reason=reason,
                checkpoint_seq=point.seq if point is not None else None,
                head_hash=head_hash if not reason else "",
            )
        )
    return reports
