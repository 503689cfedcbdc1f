"""Queue messages: the one entry point other apps use to notify people (monitoring, approvals)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import Channel, Notification


def enqueue(
    *,
    tenant_id: int,
    subject: str,
    body: str,
    dedupe_key: str,
    users: Iterable[Any] = (),
    channels: Iterable[Channel] = (),
    payload: dict | None = None,
    source: str = "",
    due_at: dt.datetime | None = None,
) -> list[Notification]:
    """One pending notification per recipient; a recipient already notified under ``dedupe_key`` is skipped.

    Call it inside the transaction that records the event: the rows commit (or roll back) with it.
    Users without an email address are skipped. Returns the rows created. ``due_at`` (default: now)
    is when delivery may first try: the monitor passes its cycle's instant, so that what a cycle's
    escalation queues is delivered by the same cycle's delivery step (``monitoring.loop``).
    """
    now = due_at or timezone.now()
    created: list[Notification] = []
    recipients: list[tuple[str, dict]] = [
        (f"user:{user.pk}", {"user": user}) for user in users if getattr(user, "email", "")
    ] + [(f"channel:{channel.pk}", {"channel": channel}) for channel in channels if channel.enabled]
    for recipient, target in recipients:
        try:
            with transaction.atomic():
                created.append(
                    Notification.objects.create(
                        tenant_id=tenant_id,
                        subject=subject[:300],
                        body=body,
                        payload=payload or {},
                        source=source,
                        dedupe_key=f"{dedupe_key}|{recipient}"[:300],
                        next_attempt_at=now,
                        **target,
                    )
                )
        except IntegrityError:
            continue  # already queued for this recipient
    return created
