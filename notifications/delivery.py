"""Delivery: the monitor (``manage.py run_monitor``) sends due outbox rows, records every try and
backs off; nothing here runs in the scheduler or the workers.

Claiming: one transaction picks due ``pending`` rows (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so
several monitors take different rows; SQLite has one writer) and marks them with a claim token and a
claim deadline in ``next_attempt_at``; the attempt is counted then. Sending happens after commit, in a
small thread pool, each send with its own timeout, so one slow or failing channel holds one thread
for at most ``GOVERNOR_NOTIFY_TIMEOUT_SECONDS`` and never the others. The result is written only
over the same claim: delivered (never sent again), failed (after ``GOVERNOR_NOTIFY_MAX_ATTEMPTS``
tries, or when retrying cannot help), or pending again after an exponential backoff with jitter.

Exactly once as a receiver sees it: a delivered row is final. A monitor that dies after sending and
before recording leaves its claim to expire, and the row is sent once more, with the same idempotency
key (email ``Message-ID``, webhook ``X-Governor-Idempotency-Key``), so receivers can drop the copy.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import connection, transaction
from django.db.models import F

from governance.egress import HostRefused, Policy, check_url_host, guarded_client
from governance.secrets import SecretError, resolve_secrets
from governance.utc import isoz

from . import channels as channel_rules
from . import signing
from .hooks import http_policy
from .models import Channel, ChannelKind, DeliveryAttempt, Notification, NotificationState

log = logging.getLogger("governor.notifications")

MAX_ERROR = 2000


@dataclass
class Outcome:
    ok: bool
    error: str = ""
    status_code: int | None = None
    duration_ms: float | None = None
    final: bool = False  # retrying cannot help (no address, channel disabled)


Send = Callable[[], Outcome]


def backoff_seconds(attempt: int, rng: random.Random | None = None) -> float:
    """Wait before try ``attempt + 1``: an exponential ceiling (base, 2 base, 4 base, ... capped), of
    which a random half is jitter, so channels that failed together do not retry together."""
    ceiling = min(
        settings.GOVERNOR_NOTIFY_BACKOFF_CAP_SECONDS, settings.GOVERNOR_NOTIFY_BACKOFF_SECONDS * 2 ** (attempt - 1)
    )
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def claim_seconds(batch: int) -> float:
    """How long a claim holds: every send of the batch may take its whole timeout, a pool's width at once."""
    rounds = math.ceil(batch / max(1, settings.GOVERNOR_NOTIFY_WORKERS))
    return rounds * settings.GOVERNOR_NOTIFY_TIMEOUT_SECONDS + 30


def claim_due(now: datetime, limit: int) -> tuple[str, list[Notification]]:
    token = uuid.uuid4().hex
    until = now + timedelta(seconds=claim_seconds(limit))
    with transaction.atomic():
        due = Notification.objects.filter(state=NotificationState.PENDING, next_attempt_at__lte=now)
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True)
        ids = list(due.order_by("next_attempt_at", "pk").values_list("pk", flat=True)[:limit])
        if ids:
            # Conditional: a row another monitor claimed meanwhile (SQLite) is no longer due.
            Notification.objects.filter(pk__in=ids, state=NotificationState.PENDING, next_attempt_at__lte=now).update(
                claim=token, next_attempt_at=until, attempts=F("attempts") + 1
            )
    if not ids:
        return token, []
    rows = Notification.objects.filter(claim=token).select_related("channel", "user", "tenant", "channel__team")
    return token, list(rows.order_by("pk"))


# --- what to send -------------------------------------------------------------------------------


def message_id(row: Notification) -> str:
    return f"<notification.{row.key}@{settings.GOVERNOR_NOTIFY_MESSAGE_ID_DOMAIN}>"


def webhook_body(row: Notification) -> bytes:
    document = {
        "id": row.pk,
        "idempotency_key": str(row.key),
        "tenant": row.tenant.slug,
        "subject": row.subject,
        "body": row.body,
        "source": row.source,
        "event": row.payload,
        "created_at": isoz(row.created_at),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _email(row: Notification, to: str) -> Send:
    headers = {"Message-ID": message_id(row), signing.KEY_HEADER: str(row.key)}
    subject, body = row.subject, row.body
    timeout = settings.GOVERNOR_NOTIFY_TIMEOUT_SECONDS

    def send() -> Outcome:
        message = EmailMessage(
            subject,
            body,
            settings.DEFAULT_FROM_EMAIL,
            [to],
            connection=get_connection(timeout=timeout),
            headers=headers,
        )
        message.send()
        return Outcome(True)

    return send


@dataclass
class PassCache:
    """What one pass reads once: each tenant's HTTP policy, each webhook's signing secret."""

    policies: dict[int, Policy] = field(default_factory=dict)
    secrets: dict[int, str] = field(default_factory=dict)

    def policy(self, tenant_id: int) -> Policy:
        if tenant_id not in self.policies:
            self.policies[tenant_id] = http_policy(tenant_id)
        return self.policies[tenant_id]


def _guarded(policy: Policy, kind: str, target: str, send: Send) -> Send:
    """Check the URL against the policy again, resolving the name, in the sending thread (a slow DNS
    answer holds that thread only): the policy may have changed, and the name may resolve elsewhere."""
    url = channel_rules.http_url_of(kind, target)

    def guarded() -> Outcome:
        if url is not None:
            try:
                check_url_host(url, policy, whose=channel_rules.POLICY_NAME)
            except HostRefused as exc:
                return Outcome(False, f"Refused by the tenant's HTTP policy: {exc}")
        return send()

    return guarded


def _webhook(row: Notification, channel: Channel, now: datetime, cache: PassCache) -> Send:
    policy = cache.policy(row.tenant_id)
    check_url_host(channel.target, policy, resolve=False, whose=channel_rules.POLICY_NAME)
    if channel.pk not in cache.secrets:
        # Read once per channel and pass (each read is audited), with a token for the secret's scope only.
        _, environment = channel_rules.secret_scope(channel.secret, row.tenant, channel.team)
        cache.secrets[channel.pk] = resolve_secrets(
            {"SIGNING_SECRET": channel.secret}, row.tenant, environment=environment, team=channel.team, obj=channel
        )["SIGNING_SECRET"]
    secret = cache.secrets[channel.pk]
    body = webhook_body(row)
    timestamp = int(now.timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Governor-Webhook/1",
        signing.TIMESTAMP_HEADER: str(timestamp),
        signing.SIGNATURE_HEADER: signing.sign(secret, timestamp, body),
        signing.KEY_HEADER: str(row.key),
        signing.ID_HEADER: str(row.pk),
    }
    url, timeout = channel.target, settings.GOVERNOR_NOTIFY_TIMEOUT_SECONDS

    def send() -> Outcome:
        # The client connects only to the address its guard checked (no DNS rebinding).
        with guarded_client(policy, timeout) as client:
            response = client.post(url, content=body, headers=headers)
        if 200 <= response.status_code < 300:
            return Outcome(True, status_code=response.status_code)
        return Outcome(False, f"HTTP {response.status_code} from the receiver.", status_code=response.status_code)

    return _guarded(policy, channel.kind, channel.target, send)


def _chat(row: Notification, channel: Channel, cache: PassCache) -> Send:
    policy = cache.policy(row.tenant_id)
    plugin = channel_rules.chat_service(channel.target)
    plugin.socket_connect_timeout = plugin.socket_read_timeout = settings.GOVERNOR_NOTIFY_TIMEOUT_SECONDS
    title, body = row.subject, row.body

    def send() -> Outcome:
        if plugin.notify(body=body, title=title):
            return Outcome(True)
        return Outcome(False, f"{plugin.service_name} refused or could not be reached (the monitor's log says why).")

    return _guarded(policy, channel.kind, channel.target, send)


def prepare(row: Notification, now: datetime, cache: PassCache) -> Send | Outcome:
    """What to send for ``row`` (read here, in the monitor's thread: users, policy, Vault), or why not."""
    channel = row.channel
    try:
        if channel is None:
            email = getattr(row.user, "email", "")
            if not email:
                return Outcome(False, "The user has no email address.", final=True)
            return _email(row, email)
        if not channel.enabled:
            return Outcome(False, f"Channel {channel.name} is disabled.", final=True)
        if channel.kind == ChannelKind.EMAIL:
            return _email(row, channel.target)
        if channel.kind == ChannelKind.WEBHOOK:
            return _webhook(row, channel, now, cache)
        return _chat(row, channel, cache)
    except HostRefused as exc:
        return Outcome(False, f"Refused by the tenant's HTTP policy: {exc}")
    except SecretError as exc:
        return Outcome(False, f"Signing secret: {exc}")
    except (ValueError, httpx.HTTPError) as exc:
        return Outcome(False, str(exc))


def _timed(send: Send) -> Outcome:
    started = time.monotonic()
    try:
        outcome = send()
    except Exception as exc:  # noqa: BLE001 - any failure of a channel is that channel's result
        outcome = Outcome(False, f"{exc.__class__.__name__}: {exc}")
    outcome.duration_ms = round((time.monotonic() - started) * 1000, 1)
    return outcome


def send_all(work: dict[int, Send]) -> dict[int, Outcome]:
    """Run the sends in a pool; a send still running after its share of time counts as timed out (its
    thread is left to end on its own timeout)."""
    if not work:
        return {}
    width = max(1, min(settings.GOVERNOR_NOTIFY_WORKERS, len(work)))
    pool = ThreadPoolExecutor(max_workers=width, thread_name_prefix="notify")
    futures = {pk: pool.submit(_timed, send) for pk, send in work.items()}
    rounds = math.ceil(len(work) / width)
    wait(futures.values(), timeout=rounds * (settings.GOVERNOR_NOTIFY_TIMEOUT_SECONDS + 2))
    pool.shutdown(wait=False, cancel_futures=True)
    timeout = settings.GOVERNOR_NOTIFY_TIMEOUT_SECONDS
    return {
        pk: future.result()
        if future.done() and not future.cancelled()
        else Outcome(False, f"No answer within {timeout} s.")
        for pk, future in futures.items()
    }


def record(row: Notification, token: str, outcome: Outcome, now: datetime) -> str:
    """Write the attempt and the row's next state, over our claim only; the new state."""
    update: dict = {"claim": ""}
    if outcome.ok:
        state = NotificationState.DELIVERED
        update.update(state=state, delivered_at=now, last_error="")
    elif outcome.final or row.attempts >= settings.GOVERNOR_NOTIFY_MAX_ATTEMPTS:
        state = NotificationState.FAILED
        update.update(state=state, failed_at=now, last_error=outcome.error[:MAX_ERROR])
    else:
        state = NotificationState.PENDING
        retry_at = now + timedelta(seconds=backoff_seconds(row.attempts))
        update.update(next_attempt_at=retry_at, last_error=outcome.error[:MAX_ERROR])
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            notification=row,
            at=now,
            ok=outcome.ok,
            error=outcome.error[:MAX_ERROR],
            status_code=outcome.status_code,
            duration_ms=outcome.duration_ms,
        )
        Notification.objects.filter(pk=row.pk, claim=token).update(**update)
    if state == NotificationState.FAILED:
        log.warning("notification %s to %s failed for good: %s", row.pk, _recipient(row), outcome.error)
    return state


def _recipient(row: Notification) -> str:
    return f"channel {row.channel.name}" if row.channel else f"user {row.user_id}"


def deliver_due(now: datetime, *, limit: int | None = None) -> dict[str, int]:
    """One delivery pass: claim up to ``limit`` due rows, send them, record. Counts per new state."""
    token, rows = claim_due(now, limit or settings.GOVERNOR_NOTIFY_BATCH)
    counts = dict.fromkeys(NotificationState.values, 0)
    if not rows:
        return counts
    outcomes: dict[int, Outcome] = {}
    work: dict[int, Send] = {}
    cache = PassCache()
    for row in rows:
        prepared = prepare(row, now, cache)
        if isinstance(prepared, Outcome):
            outcomes[row.pk] = prepared
        else:
            work[row.pk] = prepared
    outcomes.update(send_all(work))
    for row in rows:
        counts[record(row, token, outcomes[row.pk], now)] += 1
    return counts


def deliver_step(now: datetime) -> None:
    """The monitor's step: passes until no full batch is left (bounded, so other steps get their turn)."""
    batch = settings.GOVERNOR_NOTIFY_BATCH
    for _ in range(10):
        counts = deliver_due(now, limit=batch)
        if sum(counts.values()) < batch:
            return
