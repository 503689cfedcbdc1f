"""On-call: who is paged for a team (rotations, layers, overrides), how incidents escalate (policies
and their steps), which policy an incident follows (routes), and who is not to be paged (silences).

Managed by the team's admins and tenant admins through the API (monitoring.oncall_services) and the
Django admin, every write audited; no change request (docs/monitoring.md, "On-call and escalation").
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce

from governance.models import Environment, Team, Tenant

__all__ = [
    "EscalationPolicy",
    "EscalationStep",
    "Override",
    "Rotation",
    "RotationLayer",
    "RotationMember",
    "Route",
    "Silence",
]

MAX_REPEAT = 10


class Rotation(models.Model):
    """A team's on-call schedule: layers (the highest layer with someone on call wins) and overrides."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="+")
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    ACCESS_FIELDS = ("tenant_id", "team_id", None)

    class Meta:
        ordering = ["team__slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["team"], name="rotation_one_per_team", violation_error_message="This team has a rotation."
            )
        ]

    def __str__(self) -> str:
        return self.name


class RotationLayer(models.Model):
    """People taking turns: ``users[k mod n]`` is on call from the k-th handoff (``starts_on`` plus
    k x ``rotation_days`` days, at ``handoff_time`` on the wall clock of ``timezone``) to the next."""

    rotation = models.ForeignKey(Rotation, on_delete=models.CASCADE, related_name="layers")
    position = models.PositiveSmallIntegerField(help_text="Higher layers win over lower ones (0: the base).")
    name = models.CharField(max_length=100)
    starts_on = models.DateField(help_text="The first handoff's local date: the first user is on call from then.")
    rotation_days = models.PositiveSmallIntegerField(
        default=7, validators=[MinValueValidator(1), MaxValueValidator(366)]
    )
    handoff_time = models.TimeField(help_text="Local time of each handoff, in the layer's zone.")
    timezone = models.CharField(max_length=64, default="UTC")
    weekdays = models.JSONField(
        default=list, blank=True, help_text="Local weekdays the layer covers (0 Monday .. 6 Sunday); empty: every day."
    )

    ACCESS_FIELDS = ("rotation__tenant_id", "rotation__team_id", None)

    class Meta:
        ordering = ["rotation", "position"]
        constraints = [
            models.UniqueConstraint(fields=["rotation", "position"], name="rotation_layer_unique_position"),
            models.CheckConstraint(
                condition=Q(rotation_days__gte=1),
                name="rotation_layer_days_positive",
                violation_error_message="A rotation lasts at least one day.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rotation} / {self.name}"


class RotationMember(models.Model):
    """A user's turn in a layer, in order."""

    layer = models.ForeignKey(RotationLayer, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["layer", "position"]
        constraints = [models.UniqueConstraint(fields=["layer", "position"], name="rotation_member_unique_position")]

    def __str__(self) -> str:
        return f"{self.layer} #{self.position}: {self.user}"


class Override(models.Model):
    """Someone else on call for an interval (a swap, a holiday cover): wins over every layer."""

    rotation = models.ForeignKey(Rotation, on_delete=models.CASCADE, related_name="overrides")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    ACCESS_FIELDS = ("rotation__tenant_id", "rotation__team_id", None)

    class Meta:
        ordering = ["starts_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__gt=F("starts_at")),
                name="override_ends_after_start",
                violation_error_message="An override must end after it starts.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} on call {self.starts_at:%Y-%m-%d %H:%M}..{self.ends_at:%Y-%m-%d %H:%M} UTC"


class EscalationPolicy(models.Model):
    """Who is notified, step after step, until someone acknowledges; ``repeat`` more rounds after the last."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    team = models.ForeignKey(
        Team, on_delete=models.PROTECT, null=True, blank=True, related_name="+", help_text="Empty: tenant-wide."
    )
    name = models.CharField(max_length=200)
    description = models.CharField(max_length=500, blank=True)
    repeat = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(MAX_REPEAT)],
        help_text=f"Rounds repeated after the last step (0..{MAX_REPEAT}).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    ACCESS_FIELDS = ("tenant_id", "team_id", None)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "escalation policies"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"],
                name="escalation_policy_unique_name",
                violation_error_message="An escalation policy with this name already exists in the tenant.",
            ),
            models.CheckConstraint(
                condition=Q(repeat__lte=MAX_REPEAT),
                name="escalation_policy_repeat_bounded",
                violation_error_message=f"A policy repeats at most {MAX_REPEAT} times.",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class EscalationStep(models.Model):
    """Step n notifies its targets; ``delay_minutes`` later, without an acknowledgement, step n+1 does
    (after the last step: the first step of the next round, while rounds remain)."""

    policy = models.ForeignKey(EscalationPolicy, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    delay_minutes = models.PositiveIntegerField(
        default=15,
        validators=[MinValueValidator(1), MaxValueValidator(10080)],
        help_text="Minutes to wait for an acknowledgement before the next step.",
    )
    notify_on_call = models.BooleanField(default=True, help_text="Notify who is on call for the incident's team.")
    users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")
    channels = models.ManyToManyField("notifications.Channel", blank=True, related_name="+")

    ACCESS_FIELDS = ("policy__tenant_id", "policy__team_id", None)

    class Meta:
        ordering = ["policy", "position"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "position"], name="escalation_step_unique_position"),
            models.CheckConstraint(
                condition=Q(delay_minutes__gte=1),
                name="escalation_step_delay_positive",
                violation_error_message="A step waits at least one minute.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.policy} step {self.position + 1}"


class Route(models.Model):
    """Which policy an incident follows: the most specific route of the job's team, else of the
    tenant, matching the job's criticality and environment (empty: any); the one with neither set
    is the default."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    team = models.ForeignKey(
        Team, on_delete=models.PROTECT, null=True, blank=True, related_name="+", help_text="Empty: tenant-wide."
    )
    criticality = models.CharField(
        max_length=10,
        blank=True,
        choices=[("critical", "Critical"), ("high", "High"), ("medium", "Medium"), ("low", "Low")],
        help_text="Empty: any criticality.",
    )
    environment = models.ForeignKey(
        Environment, on_delete=models.PROTECT, null=True, blank=True, related_name="+", help_text="Empty: any."
    )
    policy = models.ForeignKey(EscalationPolicy, on_delete=models.PROTECT, related_name="routes")
    page_during_maintenance = models.BooleanField(
        default=False, help_text="Notify even while a maintenance window covers the job (default: silenced)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    ACCESS_FIELDS = ("tenant_id", "team_id", "environment_id")

    class Meta:
        ordering = ["tenant", "team", "criticality", "environment"]
        constraints = [
            models.UniqueConstraint(
                "tenant",
                Coalesce("team", Value(0)),
                "criticality",
                Coalesce("environment", Value(0)),
                name="route_unique_match",
                violation_error_message="A route for this team, criticality and environment already exists.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.criticality or 'any'}/{self.environment_id or 'any'} -> {self.policy_id}"


class Silence(models.Model):
    """Incidents of a job, a team's jobs or the jobs with a tag are recorded but notify nobody until ``ends_at``."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    # The job's team for a job silence: who may manage it and who sees it.
    team = models.ForeignKey(Team, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    job = models.ForeignKey("jobs.Job", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    tag = models.CharField(max_length=100, blank=True)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=500)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    ACCESS_FIELDS = ("tenant_id", "team_id", None)

    class Meta:
        ordering = ["-ends_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__gt=F("starts_at")),
                name="silence_ends_after_start",
                violation_error_message="A silence must end after it starts.",
            ),
            models.CheckConstraint(
                condition=Q(job__isnull=False) | Q(team__isnull=False) | ~Q(tag=""),
                name="silence_matches_something",
                violation_error_message="A silence names a job, a team or a tag.",
            ),
        ]
        indexes = [
            # Is this incident silenced: a tenant's silences still running.
            models.Index(fields=["tenant", "ends_at"], name="silence_tenant_ends"),
        ]

    def __str__(self) -> str:
        what = f"job {self.job_id}" if self.job_id else f"tag {self.tag}" if self.tag else f"team {self.team_id}"
        return f"silence of {what} until {self.ends_at:%Y-%m-%d %H:%M} UTC"
