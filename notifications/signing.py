"""Webhook signatures: ``X-Governor-Signature: sha256=<hex>``, an HMAC-SHA256 with the channel's
secret over ``<X-Governor-Timestamp>.<raw body>`` (docs/notifications.md shows the receiver's side)."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Governor-Signature"
TIMESTAMP_HEADER = "X-Governor-Timestamp"
KEY_HEADER = "X-Governor-Idempotency-Key"
ID_HEADER = "X-Governor-Notification-Id"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float, tolerance: float = 300) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent (replays are refused)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)
