"""The scheduler process's loop: a leader lease keeps the other schedulers idle while one is alive,
and the leader ticks (jobs.scheduler), sweeps (jobs.recovery) and reconciles the queue
(jobs.scheduler_reconcile)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, close_old_connections, transaction
from django.db.models import F
from django.utils import timezone

from governance import secrets

from .models import SchedulerLease
from .recovery import sweep
from .scheduler import seconds_until_next_due, tick
from .scheduler_reconcile import reconcile_queue

log = logging.getLogger("jobs.scheduler")

LEASE_NAME = "scheduler"


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def hold_lease(holder: str, ttl: float, now: datetime | None = None) -> bool:
    """Acquire or renew the leader lease; True while ``holder`` is the leader."""
    now = now or timezone.now()
    expires = now + timedelta(seconds=ttl)
    renewed = SchedulerLease.objects.filter(name=LEASE_NAME, holder=holder, expires_at__gt=now).update(
        expires_at=expires
    )
    if renewed:
        return True
    taken = SchedulerLease.objects.filter(name=LEASE_NAME, expires_at__lte=now).update(
        holder=holder, expires_at=expires, acquired_at=now, term=F("term") + 1
    )
    if taken:
        log.info("scheduler %s took over the leader lease", holder)
        return True
    if SchedulerLease.objects.filter(name=LEASE_NAME).exists():
        return False
    try:
        with transaction.atomic():
            SchedulerLease.objects.create(name=LEASE_NAME, holder=holder, expires_at=expires, acquired_at=now)
    except IntegrityError:
        return False
    log.info("scheduler %s holds the new leader lease", holder)
    return True


def release_lease(holder: str) -> None:
    """Give the lease up at a clean shutdown so a follower takes over at once."""
    SchedulerLease.objects.filter(name=LEASE_NAME, holder=holder).update(expires_at=timezone.now())


def reconcile_vault_policy(next_check: float) -> float:
    """Every VAULT_POLICY_RECONCILE_SECONDS, make the Vault policy cover every tenant (when this
    process holds a policy token); a failure is retried within a minute. Returns the next check time."""
    period = settings.VAULT_POLICY_RECONCILE_SECONDS
    if not period or not secrets.policy_token() or time.monotonic() < next_check:
        return next_check
    outcome = secrets.reconcile_policy(reason="scheduler reconcile")
    return time.monotonic() + (min(period, 60) if outcome == "failed" else period)


def run_forever(stop: threading.Event, max_sleep: float | None = None, lease_seconds: float | None = None) -> None:
    """While leader: tick, then sleep until the next due instant (at most ``max_sleep``, so changes are seen)."""
    max_sleep = settings.GOVERNOR_SCHEDULER_MAX_SLEEP if max_sleep is None else max_sleep
    ttl = settings.GOVERNOR_SCHEDULER_LEASE_SECONDS if lease_seconds is None else lease_seconds
    # Renew well before expiry; a follower polls at the same pace so handover takes at most ttl + this.
    beat = min(max_sleep, ttl / 3)
    holder = holder_id()
    leading = False
    next_policy_check = 0.0
    # A run is re-enqueued at most a quarter of the bound late. A pass is one query over queued runs; it reads
    # the broker's queue only when some queued run is older than the bound (a backlog, or an orphan).
    reconcile_every = max(0.5, settings.GOVERNOR_REQUEUE_AFTER_SECONDS / 4)
    next_reconcile = 0.0
    try:
        while not stop.is_set():
            try:
                now = timezone.now()
                if not hold_lease(holder, ttl, now):
                    if leading:
                        log.warning("scheduler %s lost the leader lease", holder)
                    leading = False
                    stop.wait(beat)
                    continue
                leading = True
                result = tick()
                # Lost workers, due retries and missed pings (jobs.heartbeats).
                sweep()
                # Queued runs whose queue message is gone (a crash between commit and enqueue, a killed cluster).
                if time.monotonic() >= next_reconcile:
                    reconcile_queue()
                    next_reconcile = time.monotonic() + reconcile_every
                next_policy_check = reconcile_vault_policy(next_policy_check)
                if result.created or result.skipped or result.deferred or result.promoted or result.lost_race:
                    log.info(
                        "tick: %s due, %s runs created, %s skipped, %s deferred, %s promoted, %s taken by another",
                        result.due,
                        result.created,
                        result.skipped,
                        result.deferred,
                        result.promoted,
                        result.lost_race,
                    )
                if result.due:
                    continue
                delay = seconds_until_next_due(timezone.now(), beat)
            except Exception:
                log.exception("scheduler tick failed; retrying")
                close_old_connections()
                delay = beat
            stop.wait(delay)
    finally:
        if leading:
            try:
                release_lease(holder)
            except Exception:  # pragma: no cover - shutting down anyway
                log.exception("could not release the leader lease")
