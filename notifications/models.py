"""The outbox: every message Governor sends is a row first, delivered and retried from here.

A row is written in the same transaction as the event that causes it (an incident's step, a change
request waiting for review), so nothing is sent for an event that rolled back and nothing is lost
when a channel is down: ``notifications.delivery`` sends due rows, records every attempt and backs
off, outside the scheduler and the workers.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from governance.models import Team, Tenant


class ChannelKind(models.TextChoices):
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Signed webhook"
    APPRISE = "apprise", "Chat (apprise)"


class Channel(models.Model):
    """Where a team's notifications go besides its people's email: a webhook or a chat service."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="notification_channels")
    team = models.ForeignKey(Team, on_delete=models.PROTECT, null=True, blank=True, related_name="channels")
    name = models.SlugField(max_length=100)
    kind = models.CharField(max_length=10, choices=ChannelKind.choices)
    target = models.CharField(max_length=2000, help_text="An email address, a webhook URL or an apprise URL.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="channel_unique_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class NotificationState(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class Notification(models.Model):
    """One message to one recipient (a user's email or a channel); ``dedupe_key`` makes it once only."""

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
    state = models.CharField(max_length=10, choices=NotificationState.choices, default=NotificationState.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(help_text="When delivery is next tried (UTC).")
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(state="pending"),
                name="notification_due",
            )
        ]

    def __str__(self) -> str:
        return f"{self.subject} [{self.state}]"


class DeliveryAttempt(models.Model):
    """Every try at delivering a notification, kept for the channel's history."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="delivery_attempts")
    at = models.DateTimeField()
    ok = models.BooleanField()
    error = models.TextField(blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)

    def __str__(self) -> str:
        return f"attempt at {self.at:%Y-%m-%d %H:%M:%S} ({'ok' if self.ok else 'failed'})"
