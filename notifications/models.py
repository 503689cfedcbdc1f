"""The outbox: every message Governor sends is a row first, delivered and retried from here.

A row is written in the same transaction as the event that causes it (an incident's step, a change
request waiting for review), so nothing is sent for an event that rolled back and nothing is lost
when a channel is down: ``notifications.delivery`` sends due rows, records every attempt and backs
off, outside the scheduler and the workers.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from governance.models import Team, Tenant


class ChannelKind(models.TextChoices):
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Signed webhook"
    APPRISE = "apprise", "Chat (apprise)"


class Channel(models.Model):
    """Where a team's notifications go besides its people's email: an address, a webhook or a chat service.

    A webhook's signing secret is never stored here: ``secret`` is a Vault reference
    (``vault:<mount>/<prefix>/<tenant>/<environment>[/<team>]/...#key``) read at delivery."""

    ACCESS_FIELDS = ("tenant_id", "team_id", None)

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="notification_channels")
    team = models.ForeignKey(Team, on_delete=models.PROTECT, null=True, blank=True, related_name="channels")
    name = models.SlugField(max_length=100)
    kind = models.CharField(max_length=10, choices=ChannelKind.choices)
    target = models.CharField(max_length=2000, help_text="An email address, a webhook URL or an apprise URL.")
    secret = models.CharField(
        max_length=600,
        blank=True,
        help_text="Webhooks: the Vault reference of the signing secret, e.g. vault:secret/governor/acme/prod/hooks#key.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="channel_unique_name"),
            models.CheckConstraint(
                condition=~models.Q(kind="webhook") | ~models.Q(secret=""),
                name="channel_webhook_signed",
                violation_error_message="A webhook needs the Vault reference of its signing secret.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class NotificationState(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class Notification(models.Model):
    """One message to one recipient (a user's email or a channel); ``dedupe_key`` makes it once only.

    ``key`` is the idempotency key receivers see (email Message-ID, webhook header): a row is sent
    again only when a monitor died between sending and recording, and then with the same key."""

    ACCESS_FIELDS = ("tenant_id", "channel__team_id", None)

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, null=True, blank=True, related_name="notifications")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="notifications"
    )
    subject = models.CharField(max_length=300)
    body = models.TextField()
    payload = models.JSONField(default=dict, blank=True, help_text="The event as JSON (webhook body).")
    source = models.CharField(max_length=100, blank=True, help_text="What caused it, e.g. incident:12.")
    dedupe_key = models.CharField(max_length=300, unique=True)
    key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    state = models.CharField(max_length=10, choices=NotificationState.choices, default=NotificationState.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(
        help_text="When delivery is next tried (UTC); while a monitor sends it, the end of its claim."
    )
    claim = models.CharField(max_length=32, blank=True, help_text="The monitor cycle that holds it (while sending).")
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(state="pending"),
                name="notification_due",
            ),
            # The failures page and governor_notification_failures: failed rows, newest first.
            models.Index(fields=["failed_at"], condition=models.Q(state="failed"), name="notification_failed"),
        ]

    def __str__(self) -> str:
        return f"{self.subject} [{self.state}]"


class DeliveryAttempt(models.Model):
    """Every try at delivering a notification, kept for the channel's history."""

    ACCESS_FIELDS = ("notification__tenant_id", "notification__channel__team_id", None)

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="delivery_attempts")
    at = models.DateTimeField()
    ok = models.BooleanField()
    error = models.TextField(blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)

    class Meta:
        # The channels page and governor_notification_delivery_errors: recent attempts.
        indexes = [models.Index(fields=["at"], name="delivery_attempt_at")]

    def __str__(self) -> str:
        return f"attempt at {self.at:%Y-%m-%d %H:%M:%S} ({'ok' if self.ok else 'failed'})"
