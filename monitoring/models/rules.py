"""Monitoring: alert rules, the engine's debounce state, and per-job duration samples.

Rules change only through change requests (``approvals.config_changes``, kind ``alert_rule``); the
engine (``monitoring.rules``) reads them and keeps ``RuleState`` rows while a condition holds.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from governance.models import Environment, Team, Tenant
from jobs.models import Job

from .incidents import Severity

__all__ = ["AlertRule", "DurationSamples", "RuleKind", "RuleScope", "RuleState", "Severity"]


class RuleScope(models.TextChoices):
    JOB = "job", "One job"
    TEAM = "team", "A team's jobs"
    TAG = "tag", "Jobs with a tag"


class RuleKind(models.TextChoices):
    RUN_FAILED = "run_failed", "Run failed (after retries)"
    LATE_START = "late_start", "Run late to start"
    LONG_RUNNING = "long_running", "Run still running"
    FAILURE_RATE = "failure_rate", "Failure rate over a window"
    DEADLINE_MISSED = "deadline_missed", "Deadline missed"
    DEADLINE_PREDICTED = "deadline_predicted", "Deadline predicted to be missed"
    HEARTBEAT_SILENCE = "heartbeat_silence", "Heartbeat silence"


class AlertRule(models.Model):
    """When to raise an alert for a job, a team's jobs or the jobs with a tag (docs/monitoring.md,
    "Alert rules"). ``params`` holds the kind's own settings, validated by ``monitoring.rule_params``.

    A job rule stores the job's team and environment too, so that access (ACCESS_FIELDS) follows
    the job; a team or tag rule may be limited to one environment (empty: all of the tenant's)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    environment = models.ForeignKey(
        Environment, on_delete=models.PROTECT, null=True, blank=True, related_name="+", help_text="Empty: all."
    )
    name = models.SlugField(max_length=100)
    scope = models.CharField(max_length=4, choices=RuleScope.choices)
    job = models.ForeignKey(Job, on_delete=models.PROTECT, null=True, blank=True, related_name="alert_rules")
    team = models.ForeignKey(Team, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    tag = models.SlugField(max_length=50, blank=True)
    kind = models.CharField(max_length=20, choices=RuleKind.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.HIGH)
    for_seconds = models.PositiveIntegerField(
        default=0, help_text="The condition must hold this long before the alert fires (debounce)."
    )
    params = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    change_request_id = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="The change request that made this version live."
    )
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    ACCESS_FIELDS = ("tenant_id", "team_id", "environment_id")

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"],
                name="alert_rule_unique_name",
                violation_error_message="This tenant already has an alert rule with this name.",
            ),
            models.CheckConstraint(
                condition=(Q(scope="job") & Q(job__isnull=False) & Q(tag=""))
                | (Q(scope="team") & Q(job__isnull=True) & Q(team__isnull=False) & Q(tag=""))
                | (Q(scope="tag") & Q(job__isnull=True) & Q(team__isnull=True) & ~Q(tag="")),
                name="alert_rule_scope_matches",
                violation_error_message="A rule names exactly what its scope says: a job, a team or a tag.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display().lower()})"

    @property
    def target_label(self) -> str:
        if self.scope == RuleScope.JOB and self.job is not None:
            return f"job {self.job.name}"
        if self.scope == RuleScope.TEAM and self.team is not None:
            return f"team {self.team.slug}"
        return f"tag {self.tag}"


class RuleState(models.Model):
    """A condition that holds now for one fingerprint (a rule or default, and a job): since when the
    engine saw it, and when it fired. The row is deleted when the condition no longer holds; a row
    that had fired then yields a clear (``resolve_fingerprint``)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    fingerprint = models.CharField(max_length=120)
    since = models.DateTimeField()
    fired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "fingerprint"],
                name="rule_state_unique_fingerprint",
                violation_error_message="One state per fingerprint.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.fingerprint} since {self.since:%Y-%m-%d %H:%M}Z"


class DurationSamples(models.Model):
    """The durations (seconds, newest first) of a job's last successful runs, refreshed when a run
    succeeds, so that one query per cycle gives the engine every p90/p95 it needs."""

    job = models.OneToOneField(Job, on_delete=models.CASCADE, primary_key=True, related_name="+")
    seconds = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{len(self.seconds)} durations of job {self.job_id}"
