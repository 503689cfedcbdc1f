"""Forwarding the audit trail to a SIEM, at least once: syslog (RFC 5424 over TCP, octet-counted
framing, RFC 6587) or HTTP JSON.

The outbox is the audit table itself. Each destination keeps a cursor per hash
chain (tenant): the last ``seq`` delivered. Within a chain ``seq`` is assigned
under the chain-head lock and committed in order, so "everything after the
cursor" never skips an event that commits late. The cursor advances only after
the destination accepted a batch; a failure resends the batch later
(duplicates are possible, losses are not: receivers deduplicate by event id).
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from urllib.parse import urlparse

import httpx
from django.conf import settings
from django.db import transaction

from .export import COLUMNS, NAMES, _instant_text
from .models import AuditAction, AuditChain, AuditEvent, SiemCursor

FACILITY_AUDIT = 13  # "log audit"
SEVERITY_WARNING, SEVERITY_INFO = 4, 6
WARNING_ACTIONS = {AuditAction.LOGIN_FAILED, AuditAction.ACCESS_DENIED, AuditAction.CHANGE_FAILED}
SD_ID = "governor@32473"
BOM = "\ufeff".encode()


class DeliveryError(Exception):
    """The destination did not accept a batch; its cursor stays where it was."""


@dataclass(frozen=True)
class Destination:
    url: str
    kind: str  # "syslog" or "http"
    host: str = ""
    port: int = 0

    @property
    def name(self) -> str:
        return self.url[:100]


def parse_destination(url: str) -> Destination:
    parsed = urlparse(url)
    if parsed.scheme in {"syslog", "syslog+tcp", "tcp"}:
        if not parsed.hostname or not parsed.port:
            raise ValueError(f"{url!r}: give a host and port, e.g. syslog+tcp://siem.example.com:6514")
        return Destination(url, "syslog", parsed.hostname, parsed.port)
    if parsed.scheme in {"http", "https"} and parsed.hostname:
        return Destination(url, "http")
    raise ValueError(f"{url!r}: use syslog+tcp://host:port or http(s)://host/path")


def event_dict(row: tuple) -> dict:
    out = dict(zip(NAMES, row, strict=True))
    out["created_at"] = _instant_text(out["created_at"])
    return out


def _sd_value(value) -> str:
    # RFC 5424 section 6.3.3: escape '"', '\' and ']' inside PARAM-VALUE.
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _printable(value: str, limit: int) -> str:
    cleaned = "".join(ch if 33 <= ord(ch) <= 126 else "_" for ch in value)[:limit]
    return cleaned or "-"


def syslog_message(event: dict, hostname: str | None = None) -> bytes:
    """One RFC 5424 message: header, structured data naming the event, and the event as JSON."""
    severity = SEVERITY_WARNING if event["action"] in WARNING_ACTIONS else SEVERITY_INFO
    pri = FACILITY_AUDIT * 8 + severity
    host = _printable(hostname or settings.GOVERNOR_SIEM_HOSTNAME or socket.gethostname(), 255)
    params = {
        "id": event["id"],
        "tenant": event["tenant"] or "platform",
        "seq": event["seq"],
        "actor": event["actor"],
        "object": f"{event['object_type']}:{event['object_id']}" if event["object_type"] else "",
        "hash": event["hash"],
    }
    sd = "[" + SD_ID + "".join(f' {k}="{_sd_value(v)}"' for k, v in params.items()) + "]"
    header = f"<{pri}>1 {event['created_at']} {host} governor - {_printable(event['action'], 32)} {sd} "
    body = json.dumps(event, sort_keys=True, separators=(",", ":"))
    return header.encode() + BOM + body.encode()


def octet_frame(message: bytes) -> bytes:
    return f"{len(message)} ".encode() + message


def _send_syslog(destination: Destination, events: list[dict]) -> None:
    payload = b"".join(octet_frame(syslog_message(event)) for event in events)
    timeout = settings.GOVERNOR_SIEM_TIMEOUT_SECONDS
    try:
        with socket.create_connection((destination.host, destination.port), timeout=timeout) as sock:
            sock.sendall(payload)
            # TCP syslog has no acknowledgement: close our side and wait for the receiver to close
            # its side, so a receiver that died mid-batch shows up as an error, not as delivered.
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
    except OSError as exc:
        raise DeliveryError(f"syslog {destination.host}:{destination.port}: {exc.__class__.__name__}: {exc}") from None


def _send_http(destination: Destination, events: list[dict]) -> None:
    try:
        response = httpx.post(
            destination.url,
            json={"source": "governor", "events": events},
            timeout=settings.GOVERNOR_SIEM_TIMEOUT_SECONDS,
        )
    except httpx.HTTPError as exc:
        raise DeliveryError(f"HTTP {destination.url}: {exc.__class__.__name__}") from None
    if response.status_code >= 300:
        raise DeliveryError(f"HTTP {destination.url}: status {response.status_code}")


def send(destination: Destination, events: list[dict]) -> None:
    if destination.kind == "syslog":
        _send_syslog(destination, events)
    else:
        _send_http(destination, events)


def _chain_key(tenant_id: int | None) -> int:
    return tenant_id or 0


def forward_once(destination: Destination, *, batch_size: int = 500) -> int:
    """Deliver everything pending for one destination; return how many events were delivered.

    Raises DeliveryError when the destination refuses; what was delivered before stays delivered.
    """
    cursors = {c.chain: c.last_seq for c in SiemCursor.objects.filter(destination=destination.name)}
    lookups = [lookup for _, lookup in COLUMNS]
    delivered = 0
    for tenant_id, head in AuditChain.objects.values_list("tenant_id", "last_seq"):
        key = _chain_key(tenant_id)
        last = cursors.get(key, 0)
        while last < head:
            rows = list(
                AuditEvent.objects.filter(tenant_id=tenant_id, seq__gt=last)
                .order_by("seq")
                .values_list(*lookups)[:batch_size]
            )
            if not rows:
                break
            events = [event_dict(row) for row in rows]
            try:
                send(destination, events)
            except DeliveryError as exc:
                SiemCursor.objects.update_or_create(
                    destination=destination.name, chain=key, defaults={"last_error": str(exc)[:500]}
                )
                raise
            last = events[-1]["seq"]
            with transaction.atomic():
                SiemCursor.objects.update_or_create(
                    destination=destination.name, chain=key, defaults={"last_seq": last, "last_error": ""}
                )
            delivered += len(events)
    return delivered
