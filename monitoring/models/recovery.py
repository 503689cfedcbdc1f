"""Monitoring: recovery rules (a failure pattern and what Governor does about it) and the log of
what they did (monitoring/recovery.py evaluates them; approvals governs them as change kind
``recovery_rule``)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from governance.models import Environment, Team, Tenant
from jobs.models import Job, Run

from .incidents import Severity

__all__ = [
    "RECOVERY_RULE_FIELDS",
    "RecoveryAction",
    "RecoveryActionKind",
    "RecoveryOutcome",
    "RecoveryRule",
]


# A rule's definition (change control), in the order diffs show it (monitoring/recovery_rules.py).
RECOVERY_RULE_FIELDS = (
    "name",
    "job",
    "team",
    "exit_codes",
    "output_pattern",
    "http_statuses",
    "action",
    "retry_attempts",
    "retry_delay_seconds",
    "retry_factor",
    "remediation_job",
    "severity",
    "max_actions",
    "window_minutes",
)


class RecoveryActionKind(models.TextChoices):
    RETRY = "retry", "Retry with backoff"
    REMEDIATE = "remediate", "Run a remediation job"
    PAUSE = "pause", "Pause the job"
    PAGE = "page", "Page (raise an alert)"


class RecoveryRule(models.Model):
    """For the failed runs of one job, or of a team's jobs, of one environment: when the exit code,
    the output (an RE2 pattern) and the HTTP status all match what the rule names, do ``action``, at
    most ``max_actions`` times per ``window_minutes`` for each job. Created, changed and deleted only
    through approved change requests (kind ``recovery_rule``)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="+")
    name = models.SlugField(max_length=100)
    job = models.ForeignKey(Job, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    team = models.ForeignKey(Team, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    exit_codes = models.JSONField(default=list, blank=True, help_text="Match these exit codes (empty: any).")
    output_pattern = models.TextField(blank=True, help_text="Match output with this RE2 pattern (empty: any).")
    http_statuses = models.JSONField(default=list, blank=True, help_text="Match these HTTP statuses (empty: any).")
    action = models.CharField(max_length=10, choices=RecoveryActionKind.choices)
    retry_attempts = models.PositiveSmallIntegerField(default=3)
    retry_delay_seconds = models.PositiveIntegerField(default=30, help_text="Delay before the first retry.")
    retry_factor = models.FloatField(default=2.0, help_text="Each further retry waits this many times longer.")
    remediation_job = models.ForeignKey(Job, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.HIGH)
    max_actions = models.PositiveSmallIntegerField(default=3, help_text="Actions per job and window at most.")
    window_minutes = models.PositiveIntegerField(default=60)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    change_request_id = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="The change request that made this version live."
    )
    history = HistoricalRecords(excluded_fields=["updated_at"])

    ACCESS_FIELDS = ("tenant_id", None, "environment_id")

    class Meta:
        ordering = ["environment", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "name"],
                name="recovery_rule_unique_name_per_environment",
                violation_error_message="A recovery rule with this name already exists in this environment.",
            ),
            models.CheckConstraint(
                condition=Q(job__isnull=True) ^ Q(team__isnull=True),
                name="recovery_rule_job_or_team",
                violation_error_message="A recovery rule applies to one job or to one team.",
            ),
        ]

    def __str__(self) -> str:
        return f"recovery rule {self.name}"

    @property
    def scope_label(self) -> str:
        return f"job {self.job.name}" if self.job_id and self.job else f"team {self.team.slug if self.team else ''}"


class RecoveryOutcome(models.TextChoices):
    DONE = "done", "Done"
    CAPPED = "capped", "Not done: the rule's cap for the window is reached"
    EXHAUSTED = "exhausted", "Not done: no retry left"
    REFUSED = "refused", "Not done: refused"
    FAILED = "failed", "Failed"


class RecoveryAction(models.Model):
    """What one rule did (or why it did nothing) about one failed run; audited as ``recovery.action``."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    rule = models.ForeignKey(RecoveryRule, on_delete=models.SET_NULL, null=True, related_name="actions")
    rule_name = models.CharField(max_length=100)
    job = models.ForeignKey(Job, on_delete=models.PROTECT, related_name="+")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="+")
    action = models.CharField(max_length=10, choices=RecoveryActionKind.choices)
    outcome = models.CharField(max_length=10, choices=RecoveryOutcome.choices)
    detail = models.TextField(blank=True)
    started_run = models.ForeignKey(Run, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    retry_number = models.PositiveSmallIntegerField(null=True, blank=True)
    at = models.DateTimeField()

    ACCESS_FIELDS = ("tenant_id", "job__team_id", "job__environment_id")

    class Meta:
        ordering = ["-at", "-id"]
        constraints = [
            # A run reported finished twice (a redelivered task) is acted on once per rule.
            models.UniqueConstraint(fields=["rule", "run"], name="recovery_action_once_per_rule_and_run"),
        ]
        indexes = [models.Index(fields=["rule", "job", "at"], name="recovery_action_window")]

    def __str__(self) -> str:
        return f"{self.rule_name}: {self.action} for run {self.run_id} ({self.outcome})"
