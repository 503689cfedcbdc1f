"""Incidents: alerts deduplicated by fingerprint into one incident while it is open, with a timeline.

State machine (monitoring.incidents): triggered -> acknowledged -> resolved (triggered -> resolved
too). While triggered, the escalation step (monitoring.escalation) notifies the incident's policy
step by step; acknowledging or resolving stops it.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from governance.models import Environment, Team, Tenant

__all__ = ["Incident", "IncidentEvent", "IncidentEventKind", "IncidentState", "Severity"]


class Severity(models.TextChoices):
    CRITICAL = "critical", "Critical"
    HIGH = "high", "High"
    MEDIUM = "medium", "Medium"
    LOW = "low", "Low"


class IncidentState(models.TextChoices):
    TRIGGERED = "triggered", "Triggered"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    RESOLVED = "resolved", "Resolved"


OPEN_STATES = (IncidentState.TRIGGERED, IncidentState.ACKNOWLEDGED)


class Incident(models.Model):
    """One problem, however many alerts report it: the alerts with one fingerprint while it is open."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    # Copied from the job when the incident opens, so access (ACCESS_FIELDS) needs no join.
    team = models.ForeignKey(Team, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    job = models.ForeignKey("jobs.Job", on_delete=models.PROTECT, null=True, blank=True, related_name="incidents")
    fingerprint = models.CharField(max_length=300, help_text="Alerts with this fingerprint join the open incident.")
    kind = models.CharField(max_length=40, help_text="The first alert's kind, e.g. run_failed or lost_run.")
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.HIGH)
    summary = models.CharField(max_length=500)
    state = models.CharField(max_length=12, choices=IncidentState.choices, default=IncidentState.TRIGGERED)
    opened_at = models.DateTimeField()
    alert_count = models.PositiveIntegerField(default=1)
    last_alert_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    # Empty with resolved_at set: resolved automatically (the next run succeeded, the rule cleared).
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    resolution = models.CharField(max_length=2000, blank=True)
    # --- escalation (monitoring.escalation) ---
    escalation_policy = models.ForeignKey(
        "monitoring.EscalationPolicy", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    escalation_step = models.PositiveSmallIntegerField(default=0, help_text="The next step to notify (0: the first).")
    escalation_round = models.PositiveSmallIntegerField(default=0, help_text="Rounds of the policy already repeated.")
    next_escalation_at = models.DateTimeField(
        null=True, blank=True, help_text="When the next step notifies (empty: nothing more to notify)."
    )
    silenced_until = models.DateTimeField(null=True, blank=True)
    silence_reason = models.CharField(max_length=500, blank=True)
    # --- end escalation ---

    ACCESS_FIELDS = ("tenant_id", "team_id", "environment_id")

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            # A partial unique index: two workers raising the same fingerprint at once open one incident
            # (the loser's insert fails and it joins the winner's, monitoring.incidents.raise_alert).
            models.UniqueConstraint(
                fields=["tenant", "fingerprint"],
                condition=~Q(state="resolved"),
                name="incident_one_open_per_fingerprint",
                violation_error_message="An incident with this fingerprint is already open.",
            ),
        ]
        indexes = [
            # The escalation step: triggered incidents whose next step is due.
            models.Index(fields=["next_escalation_at"], condition=Q(state="triggered"), name="incident_escalation_due"),
            # A run succeeded: its job's open incidents resolve (monitoring.listeners).
            models.Index(fields=["job"], condition=~Q(state="resolved"), name="incident_open_by_job"),
            # The incidents page and the nav count: a tenant's incidents by state.
            models.Index(fields=["tenant", "state"], name="incident_tenant_state"),
        ]

    def __str__(self) -> str:
        return f"INC-{self.pk}: {self.summary[:80]}"

    @property
    def is_open(self) -> bool:
        return self.state != IncidentState.RESOLVED


class IncidentEventKind(models.TextChoices):
    OPENED = "opened", "Opened"
    ALERT = "alert", "Alert joined"
    NOTIFIED = "notified", "Notified"
    SILENCED = "silenced", "Silenced"
    UNROUTED = "unrouted", "No one to notify"
    EXHAUSTED = "exhausted", "Escalation ended without acknowledgement"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    RESOLVED = "resolved", "Resolved"


class IncidentEvent(models.Model):
    """One line of an incident's timeline."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField()
    kind = models.CharField(max_length=12, choices=IncidentEventKind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    message = models.TextField(blank=True)
    step = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Escalation step notified (1: the first).")
    round = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Round of the policy (1: the first).")
    # A plain id: runs are archived and deleted, the timeline stays.
    run_id = models.PositiveBigIntegerField(null=True, blank=True)
    # Makes an alert or a step join the timeline once (raise_alert and the escalation step are idempotent).
    dedupe_key = models.CharField(max_length=200, blank=True)
    data = models.JSONField(default=dict, blank=True)

    ACCESS_FIELDS = ("incident__tenant_id", "incident__team_id", "incident__environment_id")

    class Meta:
        ordering = ["at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["incident", "dedupe_key"],
                condition=~Q(dedupe_key=""),
                name="incident_event_once",
                violation_error_message="This alert or step is already on the incident's timeline.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} at {self.at:%Y-%m-%d %H:%M:%S}"
