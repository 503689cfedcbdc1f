"""Jobs (the live, applied definitions) and their runs."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from simple_history.models import HistoricalRecords

from governance.models import Environment, Team, Tenant

from . import schedule


class Criticality(models.TextChoices):
    CRITICAL = "critical", "Critical"
    HIGH = "high", "High"
    MEDIUM = "medium", "Medium"
    LOW = "low", "Low"


class JobStatus(models.TextChoices):
    ENABLED = "enabled", "Enabled"
    PAUSED = "paused", "Paused"
    DELETED = "deleted", "Deleted"


# --- Scheduling policies (docs/scheduling.md) -------------------------------------------


class GapPolicy(models.TextChoices):
    SHIFT = "shift", "Fire at the end of a DST gap"
    SKIP = "skip", "Skip a time a DST gap removes"


class OverlapPolicy(models.TextChoices):
    ONCE = "once", "Fire at the first occurrence of a repeated time"
    TWICE = "twice", "Fire at both occurrences of a repeated time"


class CatchupPolicy(models.TextChoices):
    SKIP = "skip", "Record missed slots as skipped"
    LATEST = "latest", "Run the newest missed slot within the starting deadline"
    ALL = "all", "Run each missed slot, up to the catch-up limit"


class ConcurrencyPolicy(models.TextChoices):
    ALLOW = "allow", "Allow runs to overlap"
    FORBID = "forbid", "Skip a slot while a run is active"
    REPLACE = "replace", "Cancel the active run and start the new one"


class WindowPolicy(models.TextChoices):
    DEFER = "defer", "Defer the run to the end of the window"
    SKIP = "skip", "Skip the run"


SCHEDULING_FIELDS = (
    "gap",
    "overlap",
    "catchup",
    "catchup_limit",
    "starting_deadline_seconds",
    "windows",
    "window_policy",
    "holiday_calendar",
    "concurrency",
    "max_active_runs",
    "pool",
    "priority",
)

# Job priorities: higher first when deferred runs are released; below the backpressure
# threshold (GOVERNOR_BACKPRESSURE_PRIORITY) runs wait while the queue is too deep.
MIN_PRIORITY = 0
MAX_PRIORITY = 9
DEFAULT_PRIORITY = 5
# Jobs with at least one upstream: the condition of the partial index job_downstream_lookup, which
# a query can use only when it contains the condition too (jobs.workflows.downstream_candidates).
HAS_DEPENDENCIES = ~Q(dependencies=[])

# --- end scheduling policies -----------------------------------------------------------


# --- execution: definition fields (kind, parameters, limits, retries, HTTP, heartbeats, workflow) ---
class JobKind(models.TextChoices):
    COMMAND = "command", "Command"
    HTTP = "http", "HTTP request"
    EXTERNAL = "external", "External (pings only)"


EXECUTION_FIELDS = (
    "kind",
    "parameters",
    "limits",
    "retry",
    "idempotent",
    "http",
    "heartbeat",
    "dependencies",
    "partitions",
)
# --- end execution ---

# --- lifecycle: definition fields (see jobs/lifecycle.py); review dates are operational state ---
LIFECYCLE_FIELDS = (
    "rationale",
    "sunset_on",
)


def default_review_due():
    return (timezone.now() + timedelta(days=settings.GOVERNOR_REVIEW_PERIOD_DAYS)).date()


# --- end lifecycle ---

# --- secrets: references only (governance.secrets); values are never stored ---
SECRET_FIELDS = ("secrets",)
# --- end secrets ---

# The fields a change request proposes; everything else is operational state.
DEFINITION_FIELDS = (
    "name",
    "description",
    "runbook",
    "criticality",
    "tags",
    "command",
    "cron",
    "timezone",
    "timeout_seconds",
    *SCHEDULING_FIELDS,
    *EXECUTION_FIELDS,
    *LIFECYCLE_FIELDS,
    *SECRET_FIELDS,
)


class Job(models.Model):
    """The live definition of a job. Rows change only through ``jobs.services.apply_definition``,
    which approved change requests (or, in ungoverned environments, immediate changes) call."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="jobs")
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="jobs")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="jobs")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    runbook = models.TextField(blank=True, help_text="Markdown: what to do when this job fails.")
    criticality = models.CharField(max_length=10, choices=Criticality.choices, default=Criticality.MEDIUM)
    tags = models.JSONField(
        default=list, blank=True, help_text="Slugs grouping jobs across teams, e.g. for alert rules (at most 20)."
    )
    command = models.JSONField(help_text="argv list; executed without a shell.")
    cron = models.CharField(max_length=120)
    timezone = models.CharField(max_length=64, default="UTC")
    timeout_seconds = models.PositiveIntegerField(default=3600)
    secrets = models.JSONField(
        default=dict,
        blank=True,
        help_text="Environment variable name -> 'vault:<mount>/<path>#<key>'; values are read at run start only.",
    )
    # --- scheduling policies ---
    gap = models.CharField(max_length=8, choices=GapPolicy.choices, default=GapPolicy.SHIFT)
    overlap = models.CharField(max_length=8, choices=OverlapPolicy.choices, default=OverlapPolicy.ONCE)
    catchup = models.CharField(max_length=8, choices=CatchupPolicy.choices, default=CatchupPolicy.SKIP)
    catchup_limit = models.PositiveSmallIntegerField(
        default=10, help_text="catchup=all: at most this many missed slots run; older ones are skipped."
    )
    starting_deadline_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="A slot later than this is skipped, not run (empty: no deadline)."
    )
    windows = models.JSONField(
        default=list,
        blank=True,
        help_text='Allowed run windows: [{"cron": "0 22 * * *", "duration_minutes": 360}] in the job\'s zone.',
    )
    window_policy = models.CharField(max_length=8, choices=WindowPolicy.choices, default=WindowPolicy.DEFER)
    holiday_calendar = models.SlugField(max_length=100, blank=True, help_text="A tenant holiday calendar to skip.")
    # forbid by default: overlapping runs are non-standard and need a rationale (docs/change-control.md, "Job lifecycle").
    concurrency = models.CharField(max_length=8, choices=ConcurrencyPolicy.choices, default=ConcurrencyPolicy.FORBID)
    max_active_runs = models.PositiveSmallIntegerField(default=0, help_text="0: no limit.")
    pool = models.SlugField(
        max_length=100,
        blank=True,
        help_text="A pool of the job's environment whose slots its runs share (empty: none).",
    )
    priority = models.PositiveSmallIntegerField(
        default=DEFAULT_PRIORITY, help_text=f"{MIN_PRIORITY}-{MAX_PRIORITY}; higher runs first when slots free."
    )
    # --- end scheduling policies ---

    # --- execution fields (see jobs/execution_spec.py for their shape) ---
    kind = models.CharField(max_length=10, choices=JobKind.choices, default=JobKind.COMMAND)
    parameters = models.JSONField(
        default=dict, blank=True, help_text='{"schema": JSON Schema, "values": {environment slug: {name: value}}}'
    )
    limits = models.JSONField(
        default=dict, blank=True, help_text="cpu_seconds, memory_mb, file_size_mb, processes for the child."
    )
    retry = models.JSONField(
        default=dict, blank=True, help_text="max_attempts, backoff_seconds, backoff_cap_seconds, transient_exit_codes."
    )
    idempotent = models.BooleanField(
        default=False, help_text="Safe to run again after a lost worker without asking an operator."
    )
    http = models.JSONField(default=dict, blank=True, help_text="HTTP jobs: method, url, headers, body, success.")
    heartbeat = models.JSONField(default=dict, blank=True, help_text="grace_seconds for pings to /hb/<token>.")
    dependencies = models.JSONField(default=list, blank=True, help_text="Upstream jobs and edge conditions.")
    partitions = models.JSONField(
        default=list, blank=True, help_text="Fan-out: one parallel run per partition, joined into the slot's run."
    )
    ping_token = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # --- end execution fields ---
    # --- lifecycle fields ---
    rationale = models.TextField(blank=True, help_text="Why a non-standard job is the way it is.")
    sunset_on = models.DateField(null=True, blank=True, help_text="Deprecated: disabled from this day (UTC).")
    sunset_warned_on = models.DateField(null=True, blank=True, editable=False)
    review_due_on = models.DateField(
        null=True, blank=True, default=default_review_due, help_text="Owners recertify the job by this day."
    )
    # --- end lifecycle fields ---
    # --- insights: who reads the output (jobs/output_reads.py) ---
    last_output_view_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When someone last opened one of its runs' output (written at most once an hour).",
    )
    # --- end insights ---
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.ENABLED)
    version = models.PositiveIntegerField(default=1)
    change_request_id = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="The change request that produced this version."
    )
    next_fire_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords(excluded_fields=["next_fire_at", "updated_at", "last_output_view_at"])

    ACCESS_FIELDS = ("tenant_id", "team_id", "environment_id")

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "environment", "name"],
                condition=~Q(status="deleted"),
                name="job_unique_name_per_environment",
                violation_error_message="A job with this name already exists in this environment.",
            ),
            models.CheckConstraint(
                condition=Q(timeout_seconds__gt=0),
                name="job_timeout_positive",
                violation_error_message="The timeout must be at least one second.",
            ),
            models.CheckConstraint(
                condition=Q(priority__gte=MIN_PRIORITY) & Q(priority__lte=MAX_PRIORITY),
                name="job_priority_in_range",
                violation_error_message=f"The priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}.",
            ),
        ]
        indexes = [
            # The scheduler tick: enabled jobs whose next fire time has come.
            models.Index(fields=["next_fire_at"], condition=Q(status="enabled"), name="job_due"),
            # The overdue-recertification list: a tenant's jobs by review due date.
            models.Index(fields=["tenant", "review_due_on"], name="job_review_due"),
            # When a run finishes, the jobs of its environment that may follow it
            # (jobs.workflows.downstream_candidates). Most jobs have no dependencies: indexing only
            # those that have some keeps the lookup proportional to the jobs with edges.
            models.Index(
                fields=["tenant", "environment", "status"], condition=HAS_DEPENDENCIES, name="job_downstream_lookup"
            ),
            # The dashboard's jobs per environment and status (governor.views.environment_counts),
            # counted from the index alone; the team is last for a reader narrowed to a team.
            models.Index(fields=["tenant", "environment", "status", "team"], name="job_environment_status"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.environment.slug})" if self.environment_id else self.name

    def definition(self) -> dict:
        # Dates as ISO strings: definitions are stored as JSON in change requests and runs.
        return {
            field: value.isoformat() if isinstance(value, date) else value
            for field, value in ((f, getattr(self, f)) for f in DEFINITION_FIELDS)
        }

    @property
    def schedule_seed(self) -> str:
        return schedule.job_seed(self.tenant_id, self.environment_id, self.name)

    def next_runs(self, after: datetime, count: int = 5) -> list[datetime]:
        return schedule.next_n(
            self.cron, self.timezone, after, count, gap=self.gap, overlap=self.overlap, seed=self.schedule_seed
        )

    def next_fire_after(self, after: datetime) -> datetime | None:
        return schedule.next_after(
            self.cron, self.timezone, after, gap=self.gap, overlap=self.overlap, seed=self.schedule_seed
        )


class RunStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    QUEUED = "queued", "Queued"
    DEFERRED = "deferred", "Deferred"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"
    CANCELLED = "cancelled", "Cancelled"
    SKIPPED = "skipped", "Skipped"
    LOST = "lost", "Lost"


TERMINAL_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED, RunStatus.SKIPPED}
)


class TriggerKind(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Manual"
    UPSTREAM = "upstream", "Upstream job"  # execution: a workflow edge
    PING = "ping", "External ping"  # execution: an external job reported in
    RECOVERY = "recovery", "Recovery rule"  # monitoring: a retry or remediation a recovery rule started


class Run(models.Model):
    """One scheduled slot or one manual trigger of a job; (job, scheduled_for) is unique."""

    # No index of their own: run_job_recent and run_tenant_recent_state (Meta.indexes) start with them,
    # and each index less is one less to write for every run the scheduler enqueues.
    job = models.ForeignKey(Job, on_delete=models.PROTECT, related_name="runs", db_index=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+", db_index=False)
    scheduled_for = models.DateTimeField()
    trigger = models.CharField(max_length=10, choices=TriggerKind.choices, default=TriggerKind.SCHEDULE)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reason = models.TextField(blank=True, help_text="Why it was triggered, skipped or cancelled.")
    # ``reason`` ends up holding the outcome (the executor, a cancel or a settle write it); the
    # operator's reason for starting the run is kept here for the run page (issue 17).
    trigger_reason = models.TextField(
        blank=True, default="", help_text="Why an operator (or a workflow) started this run or its current attempt."
    )
    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.QUEUED)
    attempt = models.PositiveSmallIntegerField(default=0)
    job_version = models.PositiveIntegerField()
    definition = models.JSONField(help_text="The exact applied definition this run executes.")
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    output = models.TextField(blank=True)
    output_bytes = models.PositiveBigIntegerField(default=0, help_text="Total output size before truncation.")
    worker = models.CharField(max_length=200, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    cpu_user_s = models.FloatField(null=True, blank=True)
    cpu_sys_s = models.FloatField(null=True, blank=True)
    max_rss_kb = models.PositiveBigIntegerField(null=True, blank=True)
    # --- execution: leases, retries, resource use and overhead ---
    lease_expires_at = models.DateTimeField(
        null=True, blank=True, help_text="A running run whose worker stopped renewing this is lost."
    )
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="When the next retry attempt is due.")
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    block_in = models.PositiveBigIntegerField(null=True, blank=True, help_text="Block input operations.")
    block_out = models.PositiveBigIntegerField(null=True, blank=True, help_text="Block output operations.")
    queue_wait_ms = models.FloatField(null=True, blank=True, help_text="Queued until claimed by a worker.")
    startup_ms = models.FloatField(null=True, blank=True, help_text="Claimed until the process was started.")
    execution_ms = models.FloatField(null=True, blank=True, help_text="Process start until exit.")
    recording_ms = models.FloatField(null=True, blank=True, help_text="Exit until the result was written.")
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last ping received for this run.")
    heartbeat_deadline = models.DateTimeField(
        null=True, blank=True, help_text="A ping is expected before this instant, or the run is a silent failure."
    )
    parent = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="partition_runs",
        help_text="Fan-out: the slot's run this partition run belongs to.",
    )
    partition = models.CharField(max_length=64, blank=True, default="")
    # --- end execution ---
    # --- scheduling ---
    deferred_until = models.DateTimeField(
        null=True, blank=True, help_text="A deferred run is queued at this instant (end of a window)."
    )
    # --- end scheduling ---
    # --- queue reconciler (jobs.scheduler_reconcile.reconcile_queue) ---
    requeues = models.PositiveSmallIntegerField(
        default=0, help_text="Times the queue reconciler enqueued this run again (no live queue message)."
    )
    requeued_at = models.DateTimeField(null=True, blank=True, help_text="When the reconciler last enqueued it again.")
    queue_note = models.CharField(
        max_length=200,
        blank=True,
        help_text="What the queue reconciler did, e.g. 're-enqueued: no queue message after 20 s'.",
    )
    # --- end queue reconciler ---

    ACCESS_FIELDS = ("tenant_id", "job__team_id", "job__environment_id")

    class Meta:
        ordering = ["-scheduled_for", "-id"]
        constraints = [
            # Partition runs of a fan-out share their slot; every other run has partition "".
            models.UniqueConstraint(
                fields=["job", "scheduled_for", "partition"],
                name="run_unique_slot",
                violation_error_message="This job already has a run for that instant.",
            ),
        ]
        indexes = [
            # Run lists: a tenant's newest runs first.
            # With the state: the dashboard's runs-per-hour chart reads the index alone.
            # With the job (here and in the two run-list indexes below): a list filtered through the
            # job (environment, team, a grant narrowed to a team) tests each run's job from the index
            # alone, without reading the run (jobs.run_scope).
            models.Index(fields=["tenant", "-scheduled_for", "status", "job"], name="run_tenant_recent_state"),
            # Job page: a job's newest runs.
            models.Index(fields=["job", "-scheduled_for"], name="run_job_recent"),
            # Recovery sweep: running runs whose worker lease has expired.
            models.Index(fields=["lease_expires_at"], condition=Q(status="running"), name="run_lease"),
            # Recovery sweep: runs waiting for their next retry attempt.
            models.Index(fields=["next_attempt_at"], condition=Q(next_attempt_at__isnull=False), name="run_retry_due"),
            # Scheduler tick: deferred runs whose window has ended.
            models.Index(fields=["deferred_until"], condition=Q(status="deferred"), name="run_deferred_due"),
            # Pool admission and backpressure: a tenant's queued and running runs, counted each tick.
            models.Index(fields=["tenant", "status"], condition=Q(status__in=["queued", "running"]), name="run_active"),
            # Run lists and the dashboard filtered by state (failed since..., deferred): a tenant's
            # runs of one state, newest first.
            models.Index(fields=["tenant", "status", "-scheduled_for", "job"], name="run_tenant_status_recent"),
            # Run lists filtered by trigger (manual runs, pings): set once, never updated.
            models.Index(fields=["tenant", "trigger", "-scheduled_for", "job"], name="run_tenant_trigger_recent"),
            # /metrics: runs not yet finished by state, and the recent window of finished runs.
            models.Index(
                fields=["status"],
                condition=Q(status__in=["scheduled", "queued", "deferred", "running"]),
                name="run_unfinished",
            ),
            models.Index(fields=["finished_at"], name="run_finished_at"),
            # Heartbeat sweep: runs expecting a ping.
            models.Index(
                fields=["heartbeat_deadline"], condition=Q(heartbeat_deadline__isnull=False), name="run_ping_due"
            ),
        ]

    # Not a column: the tenant's allow-list of executables as the executor's claim read it (None: not read).
    allowed_executables: list[str] | None = None

    def __str__(self) -> str:
        return f"run #{self.pk} of {self.definition.get('name', self.job_id)} @ {schedule.isoz(self.scheduled_for)}"

    @property
    def key(self) -> str:
        return f"{self.job_id}:{schedule.isoz(self.scheduled_for)}"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


# --- Scheduler coordination ----------------------------------------------------------


class SchedulerLease(models.Model):
    """The leader lease several ``run_scheduler`` processes compete for.

    Only the holder ticks, which saves the others from racing for every slot;
    correctness does not depend on it (the conditional claim of
    ``next_fire_at`` and the unique run key do), so a stale leader after a
    pause costs nothing but a lost race.
    """

    name = models.CharField(max_length=50, unique=True)
    holder = models.CharField(max_length=200, help_text="host:pid:nonce of the process holding the lease.")
    expires_at = models.DateTimeField()
    acquired_at = models.DateTimeField()
    term = models.PositiveIntegerField(default=1, help_text="Incremented at each change of holder.")

    def __str__(self) -> str:
        return f"{self.name} lease held by {self.holder} (term {self.term})"


# --- end scheduler coordination ------------------------------------------------------


# --- execution: attempts, alerts and execution policies ---
class Attempt(models.Model):
    """One try of a run. Retries and recoveries add attempts to the same run; the run shows the last."""

    # No index of its own: the unique (run, number) index below starts with it.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="attempts", db_index=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    number = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=12, choices=RunStatus.choices)
    reason = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    output = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    cpu_user_s = models.FloatField(null=True, blank=True)
    cpu_sys_s = models.FloatField(null=True, blank=True)
    max_rss_kb = models.PositiveBigIntegerField(null=True, blank=True)
    retry_delay_s = models.FloatField(null=True, blank=True, help_text="Backoff chosen before the next attempt.")

    ACCESS_FIELDS = ("tenant_id", "run__job__team_id", "run__job__environment_id")

    class Meta:
        ordering = ["run", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "number"],
                name="attempt_unique_number",
                violation_error_message="This run already has an attempt with that number.",
            )
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of run #{self.run_id}: {self.status}"

    @classmethod
    def record_end(cls, run: Run, *, status: str, finished_at: datetime, **fields: Any) -> Attempt:
        """The attempt a run just ended with, outside the executor (lost, silent, reported by ping):
        numbered as the run's current attempt (at least 1)."""
        return cls.objects.create(
            run=run,
            tenant_id=run.tenant_id,
            number=max(run.attempt, 1),
            status=status,
            finished_at=finished_at,
            **fields,
        )


class AlertKind(models.TextChoices):
    SILENT_FAILURE = "silent_failure", "Silent failure (missing ping)"
    LOST_RUN = "lost_run", "Run lost with its worker"
    SECRETS_UNAVAILABLE = "secrets_unavailable", "Secrets could not be read from Vault"
    STUCK_QUEUED = "stuck_queued", "Queued run never picked up by a worker"
    SANDBOX_UNAVAILABLE = "sandbox_unavailable", "The worker could not start the job's sandbox"


class Alert(models.Model):
    """Something an operator must look at; routing to people comes later."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    job = models.ForeignKey(Job, on_delete=models.PROTECT, related_name="alerts")
    run = models.ForeignKey(Run, on_delete=models.PROTECT, null=True, blank=True, related_name="alerts")
    kind = models.CharField(max_length=20, choices=AlertKind.choices)
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    ACCESS_FIELDS = ("tenant_id", "job__team_id", "job__environment_id")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # The sweep may see the same missed ping twice; it alerts once per run and kind.
            models.UniqueConstraint(fields=["run", "kind"], name="alert_once_per_run_and_kind"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.message[:80]}"


class TenantExecutionPolicy(models.Model):
    """Which programs a tenant's command jobs may start (fnmatch patterns on absolute paths)."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="execution_policy")
    allowed_executables = models.JSONField(
        default=list, blank=True, help_text='Absolute paths or patterns, e.g. ["/usr/bin/rsync", "/opt/acme/bin/*"].'
    )
    queue_depth_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Queued runs past which low-priority runs are deferred (empty: GOVERNOR_QUEUE_DEPTH_LIMIT; 0: none).",
    )
    history = HistoricalRecords()

    ACCESS_FIELDS = ("tenant_id", None, None)

    def __str__(self) -> str:
        return f"execution policy of {self.tenant_id}"


class EnvironmentExecutionPolicy(models.Model):
    """Which hosts HTTP jobs in an environment may call.

    ``allow_private_addresses`` opens internal addresses only to hosts the list
    names literally; a wildcard entry never reaches them."""

    environment = models.OneToOneField(Environment, on_delete=models.CASCADE, related_name="execution_policy")
    http_allowed_hosts = models.JSONField(
        default=list, blank=True, help_text='Host names or patterns, e.g. ["api.example.com", "*.internal.acme"].'
    )
    allow_private_addresses = models.BooleanField(
        default=False, help_text="Allow loopback, link-local, private and metadata addresses (SSRF guard off)."
    )
    history = HistoricalRecords()

    ACCESS_FIELDS = ("environment__tenant_id", None, "environment_id")

    def __str__(self) -> str:
        return f"execution policy of environment {self.environment_id}"


# --- end execution ---


# --- Windows and calendars (docs/scheduling.md, "Windows, calendars, concurrency") -----


class MaintenanceWindow(models.Model):
    """An interval in which no run of a tenant (or of one of its environments) may start.

    One-off (``starts_at``..``ends_at``) or recurring (opens at each fire of
    ``cron`` in ``timezone`` and lasts ``duration_minutes``). A run due inside
    is deferred to the end of the window or skipped, by ``policy``, with the
    reason on the run. Changed only through change requests (approvals.config_changes).
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="maintenance_windows")
    environment = models.ForeignKey(
        Environment,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="maintenance_windows",
        help_text="Empty: the whole tenant.",
    )
    name = models.CharField(max_length=200)
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    cron = models.CharField(max_length=120, blank=True, help_text="Recurring windows: when each one opens.")
    timezone = models.CharField(max_length=64, default="UTC")
    duration_minutes = models.PositiveIntegerField(null=True, blank=True)
    policy = models.CharField(max_length=8, choices=WindowPolicy.choices, default=WindowPolicy.DEFER)
    created_at = models.DateTimeField(auto_now_add=True)
    change_request_id = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="The change request that made this version live."
    )
    history = HistoricalRecords()

    ACCESS_FIELDS = ("tenant_id", None, "environment_id")

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(starts_at__isnull=True) | Q(ends_at__gt=F("starts_at")),
                name="maintenance_window_ends_after_start",
                violation_error_message="A maintenance window must end after it starts.",
            ),
            models.CheckConstraint(
                condition=Q(duration_minutes__isnull=True) | Q(duration_minutes__gt=0),
                name="maintenance_window_duration_positive",
                violation_error_message="A recurring window lasts at least one minute.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        recurring = bool(self.cron)
        if recurring:
            try:
                schedule.validate_cron(self.cron, seed=None)
            except schedule.ScheduleError as exc:
                errors["cron"] = [str(exc)]
            try:
                schedule.validate_zone(self.timezone)
            except schedule.ScheduleError as exc:
                errors["timezone"] = [str(exc)]
            if not self.duration_minutes:
                errors["duration_minutes"] = ["A recurring window needs a duration of at least one minute."]
        else:
            if self.starts_at is None:
                errors["starts_at"] = ["A one-off window needs a start (or give cron for a recurring one)."]
            if self.ends_at is None:
                errors["ends_at"] = ["A one-off window needs an end."]
            elif self.starts_at is not None and self.ends_at <= self.starts_at:
                errors["ends_at"] = [
                    f"The window ends ({schedule.isoz(self.ends_at)}) before it starts ({schedule.isoz(self.starts_at)})."
                ]
        if errors:
            raise ValidationError(errors)

    def covering(self, instant: datetime) -> tuple[datetime, datetime] | None:
        """The (start, end) of this window's interval containing ``instant``, if any."""
        if not self.cron:
            if self.starts_at is not None and self.ends_at is not None and self.starts_at <= instant < self.ends_at:
                return self.starts_at, self.ends_at
            return None
        length = timedelta(minutes=self.duration_minutes or 0)
        opened = schedule.next_after(self.cron, self.timezone, instant - length)
        if opened is not None and opened <= instant:
            return opened, opened + length
        return None


class HolidayCalendar(models.Model):
    """Dates (in a job's own time zone) on which a tenant's jobs that reference it do not run.
    Changed only through change requests (approvals.config_changes)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="holiday_calendars")
    name = models.SlugField(max_length=100)
    dates = models.JSONField(default=list, blank=True, help_text="ISO dates, e.g. 2026-12-25.")
    country = models.CharField(max_length=8, blank=True, help_text="Built from the holidays package for this country.")
    change_request_id = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="The change request that made this version live."
    )
    history = HistoricalRecords()

    ACCESS_FIELDS = ("tenant_id", None, None)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"],
                name="holiday_calendar_unique_name",
                violation_error_message="This tenant already has a holiday calendar with this name.",
            )
        ]

    def __str__(self) -> str:
        return self.name


# --- end windows and calendars ------------------------------------------------------------


# --- Pools (docs/scheduling.md, "Pools, priorities and backpressure") ------------------


class Pool(models.Model):
    """A bounded number of slots that the active runs of an environment's jobs share.

    A job names its pool (``Job.pool``); at most ``slots`` of the pool's runs
    are queued or running at once, and the last ``reserved_critical_slots`` of
    them only admit critical jobs. A run that finds the pool full is deferred
    and released by priority when a slot frees (jobs/pools.py).
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="pools")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="pools")
    name = models.SlugField(max_length=100)
    slots = models.PositiveIntegerField(help_text="Active runs at most (0: the pool admits nothing, e.g. to drain).")
    reserved_critical_slots = models.PositiveIntegerField(
        default=0, help_text="Slots only critical jobs may use; at most the pool's slots."
    )
    description = models.TextField(blank=True)
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
                name="pool_unique_name_per_environment",
                violation_error_message="A pool with this name already exists in this environment.",
            ),
            models.CheckConstraint(
                condition=Q(slots__gte=0),
                name="pool_slots_not_negative",
                violation_error_message="A pool cannot have a negative number of slots.",
            ),
            models.CheckConstraint(
                condition=Q(reserved_critical_slots__gte=0) & Q(reserved_critical_slots__lte=F("slots")),
                name="pool_reserved_within_slots",
                violation_error_message="A pool cannot reserve more slots for critical jobs than it has.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.environment.slug}/{self.name}" if self.environment_id else self.name

    def admits(self, busy: int, *, critical: bool) -> bool:
        """Whether one more run fits when ``busy`` runs of the pool are active."""
        return busy < (self.slots if critical else self.slots - self.reserved_critical_slots)


# --- end pools ------------------------------------------------------------------------------
