"""Change requests and their reviews (four-eyes change control)."""

from __future__ import annotations

from typing import Any, cast

from django.apps import apps
from django.conf import settings
from django.db import models
from django.db.models import F, Q
from simple_history.models import HistoricalRecords

from governance.models import Environment, Team, Tenant
from jobs import calendars, pools
from jobs.models import Criticality, Job
from monitoring.models import RECOVERY_RULE_FIELDS
from monitoring.rule_params import RULE_FIELDS


class ChangeAction(models.TextChoices):
    CREATE = "create", "Create job"
    UPDATE = "update", "Update job"
    DELETE = "delete", "Delete job"
    POLICY = "policy", "Change approval policy"
    # Operational state under change control when the environment's policy says so
    # (ApprovalPolicy.pause_requires_change); the proposal is {name, status}, not a definition.
    PAUSE = "pause", "Pause job"
    RESUME = "resume", "Resume job"


# Change requests about a job's schedule state rather than its definition.
STATE_ACTIONS = frozenset({ChangeAction.PAUSE, ChangeAction.RESUME})


class TargetKind(models.TextChoices):
    """What a change request changes. Jobs and policies have their own flows; the others are the
    scheduling configuration objects (approvals.config_changes)."""

    JOB = "job", "Job"
    POLICY = "policy", "Approval policy"
    MAINTENANCE_WINDOW = "maintenance_window", "Maintenance window"
    HOLIDAY_CALENDAR = "holiday_calendar", "Holiday calendar"
    POOL = "pool", "Pool"
    RECOVERY_RULE = "recovery_rule", "Recovery rule"
    ALERT_RULE = "alert_rule", "Alert rule"


CONFIG_KINDS = frozenset(
    {
        TargetKind.MAINTENANCE_WINDOW,
        TargetKind.HOLIDAY_CALENDAR,
        TargetKind.POOL,
        TargetKind.RECOVERY_RULE,
        TargetKind.ALERT_RULE,
    }
)
# The order a window's, calendar's or pool's fields are shown in diffs.
CONFIG_FIELD_ORDER: dict[str, tuple[str, ...]] = {
    TargetKind.MAINTENANCE_WINDOW: calendars.WINDOW_FIELDS,
    TargetKind.HOLIDAY_CALENDAR: calendars.CALENDAR_FIELDS,
    TargetKind.POOL: pools.POOL_FIELDS,
    TargetKind.RECOVERY_RULE: RECOVERY_RULE_FIELDS,
    TargetKind.ALERT_RULE: RULE_FIELDS,
}
# Kinds that may be tenant-wide: their requests have no environment.
TENANT_WIDE_KINDS = frozenset({TargetKind.MAINTENANCE_WINDOW, TargetKind.HOLIDAY_CALENDAR, TargetKind.ALERT_RULE})


class ChangeStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    SUBMITTED = "submitted", "Submitted"
    APPROVED = "approved", "Approved"
    APPLIED = "applied", "Applied"
    REJECTED = "rejected", "Rejected"
    WITHDRAWN = "withdrawn", "Withdrawn"
    SUPERSEDED = "superseded", "Superseded"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired"


OPEN_STATUSES = frozenset({ChangeStatus.DRAFT, ChangeStatus.SUBMITTED, ChangeStatus.APPROVED})


class ChangeRequest(models.Model):
    """A proposed create, update, delete, pause or resume of a job, or a create, update or delete of a
    maintenance window, a holiday calendar or a pool (or a change of an approval policy), reviewed
    before it applies.

    Policy, window, calendar and pool changes have no team: they govern a whole environment, or
    (windows and calendars without an environment) the whole tenant.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    team = models.ForeignKey(Team, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    environment = models.ForeignKey(
        Environment,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty: a tenant-wide window or calendar.",
    )
    job = models.ForeignKey(Job, on_delete=models.PROTECT, null=True, blank=True, related_name="change_requests")
    target_kind = models.CharField(max_length=20, choices=TargetKind.choices, default=TargetKind.JOB)
    target_id = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="The window, calendar or pool changed (set on apply for a create)."
    )
    action = models.CharField(max_length=10, choices=ChangeAction.choices)
    proposed = models.JSONField(default=dict, blank=True, help_text="The complete proposed definition.")
    base_version = models.PositiveIntegerField(null=True, blank=True, help_text="Live job version it was based on.")
    base_definition = models.JSONField(null=True, blank=True, help_text="Live definition it was based on.")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    justification = models.TextField()
    ticket = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=12, choices=ChangeStatus.choices, default=ChangeStatus.DRAFT)
    revision = models.PositiveIntegerField(default=1, help_text="Bumped on every edit; approvals count per revision.")
    required_approvals = models.PositiveSmallIntegerField(default=0)
    requires_independent_approver = models.BooleanField(
        default=False, help_text="Separation of duties: one approver must come from a team other than the owner."
    )
    emergency = models.BooleanField(
        default=False, help_text="May apply during a freeze; then needs a review after the fact."
    )
    apply_after = models.DateTimeField(null=True, blank=True, help_text="Approved changes wait until this instant.")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Open requests expire at this instant.")
    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    applied_version = models.PositiveIntegerField(null=True, blank=True)
    failure_reason = models.TextField(blank=True)
    rejection_reason = models.TextField(
        blank=True,
        help_text="Why the reviewer rejected it, for the author (cleared when it is resubmitted; the rejecting "
        "review keeps it).",
    )
    history = HistoricalRecords()

    ACCESS_FIELDS = ("tenant_id", "team_id", "environment_id")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(justification=""),
                name="change_justification_required",
                violation_error_message="A justification is required.",
            ),
            models.CheckConstraint(
                condition=~Q(status="rejected") | ~Q(rejection_reason=""),
                name="change_rejection_needs_reason",
                violation_error_message="A rejection needs a reason.",
            ),
            models.CheckConstraint(
                condition=~Q(target_kind="job") | Q(action__in=["create", "policy"]) | Q(job__isnull=False),
                name="change_update_delete_need_job",
                violation_error_message="Updates and deletes must name the job they change.",
            ),
            models.CheckConstraint(
                condition=~Q(target_kind="job") | Q(action="policy") | Q(team__isnull=False),
                name="change_job_changes_need_team",
                violation_error_message="Job changes must name the owning team.",
            ),
            models.CheckConstraint(
                condition=Q(target_kind__in=["job", "policy"]) | Q(action="create") | Q(target_id__isnull=False),
                name="change_config_update_delete_need_target",
                violation_error_message="Updates and deletes of a window, calendar or pool must name it.",
            ),
            models.CheckConstraint(
                condition=Q(environment__isnull=False) | Q(target_kind__in=sorted(TENANT_WIDE_KINDS)),
                name="change_environment_required",
                violation_error_message="Only window and calendar changes may be tenant-wide.",
            ),
            models.CheckConstraint(
                condition=~Q(target_kind="policy") | Q(action="policy"),
                name="change_policy_kind_matches_action",
                violation_error_message="A policy change has the policy action.",
            ),
        ]
        indexes = [
            # Review queues: open requests of a tenant by age.
            models.Index(fields=["tenant", "status", "created_at"], name="change_queue"),
            # expire_changes and apply_due_changes: open requests by deadline.
            models.Index(fields=["status", "expires_at"], name="change_expiry"),
        ]

    def __str__(self) -> str:
        name = (
            (self.proposed or {}).get("name")
            or (self.job.name if self.job is not None else "")
            or self.target_name
            or "?"
        )
        return f"CR-{self.pk}: {self.get_action_display().lower()} {name}"

    def get_action_display(self) -> str:  # type: ignore[no-redef]  # replaces the generated one
        # "Create job" reads wrong for a window: name the kind of object for configuration changes.
        if self.target_kind in CONFIG_KINDS:
            return f"{self.action.capitalize()} {TargetKind(self.target_kind).label.lower()}"
        return ChangeAction(self.action).label if self.action in ChangeAction.values else self.action

    @property
    def is_job_change(self) -> bool:
        return self.target_kind == TargetKind.JOB

    @property
    def is_config_change(self) -> bool:
        return self.target_kind in CONFIG_KINDS

    def is_applying(self) -> bool:
        """Is this request, as stored, approved and so being applied, with the placement, target and
        action this instance says? (``jobs.authority``: the approved request is what authorises change
        control to write the job, so an instance edited in memory authorises nothing.)"""
        return (
            self.pk is not None
            and ChangeRequest.objects.filter(  # type: ignore[misc]  # None matches NULL
                pk=self.pk,
                status=ChangeStatus.APPROVED,
                tenant_id=self.tenant_id,
                team_id=self.team_id,
                environment_id=self.environment_id,
                job_id=self.job_id,
                action=self.action,
            ).exists()
        )

    def field_order(self, before: dict | None, after: dict | None) -> list[str]:
        """The fields of a policy, state or configuration diff in a stable, readable order (PostgreSQL's
        jsonb does not keep the order keys were written in)."""
        keys = [*(before or {}), *(after or {})]
        if self.is_config_change:
            known = CONFIG_FIELD_ORDER.get(self.target_kind, ())
            return [*(f for f in known if f in keys), *sorted(set(keys) - set(known))]
        return list(dict.fromkeys(keys))

    def changed_object(self):
        """The live window, calendar or pool this request changes (None for other kinds, or once deleted)."""
        if not self.is_config_change:
            return None
        return cast(Any, apps.get_app_config("approvals")).live_target(self)

    @property
    def target_name(self) -> str:
        return (self.proposed or {}).get("name") or (self.base_definition or {}).get("name", "")

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def diff(self) -> list[dict]:
        """[{field, before, after}] between the base it was made against and the proposal."""
        return cast(Any, apps.get_app_config("approvals")).kind_of(self).diff(self)


class ApprovalPolicy(models.Model):
    """How many distinct approvers a change in an environment needs, per job criticality.

    ``criticality`` blank is the environment's default rule (kept in sync with
    ``Environment.required_approvals``). Rows change only through approved policy
    change requests (``approvals.services.propose_policy_change``).
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="approval_policies")
    criticality = models.CharField(
        max_length=10, blank=True, choices=Criticality.choices, help_text="Blank: every criticality without a rule."
    )
    required_approvals = models.PositiveSmallIntegerField()
    separation_of_duties = models.BooleanField(
        default=False, help_text="At least one approver from a team other than the owning team."
    )
    pause_requires_change = models.BooleanField(
        default=False,
        help_text="Pausing and resuming these jobs goes through a change request (operators propose, "
        "approvers approve) instead of acting at once.",
    )
    change_request_id = models.PositiveBigIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    ACCESS_FIELDS = ("tenant_id", None, "environment_id")

    class Meta:
        ordering = ["environment", "criticality"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "criticality"],
                name="policy_unique_per_environment_criticality",
                violation_error_message="This environment already has a rule for that criticality.",
            ),
            models.CheckConstraint(
                condition=Q(separation_of_duties=False) | Q(required_approvals__gte=1),
                name="policy_separation_needs_an_approver",
                violation_error_message="Separation of duties needs at least one approval.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.environment}: {self.criticality or 'default'} needs {self.required_approvals}"

    def rule(self) -> dict:
        return {
            "criticality": self.criticality,
            "required_approvals": self.required_approvals,
            "separation_of_duties": self.separation_of_duties,
            "pause_requires_change": self.pause_requires_change,
        }


class FreezeWindow(models.Model):
    """A release-calendar freeze: no change applies inside it except flagged emergencies."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    environment = models.ForeignKey(
        Environment, on_delete=models.PROTECT, null=True, blank=True, related_name="+", help_text="Blank: all."
    )
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=300)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    ACCESS_FIELDS = ("tenant_id", None, "environment_id")

    class Meta:
        ordering = ["starts_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__gt=F("starts_at")),
                name="freeze_ends_after_start",
                violation_error_message="A freeze must end after it starts.",
            ),
        ]

    def __str__(self) -> str:
        where = self.environment.slug if self.environment is not None else "all environments"
        return f"freeze {where} {self.starts_at:%Y-%m-%d %H:%M}Z-{self.ends_at:%Y-%m-%d %H:%M}Z: {self.reason}"


class ReviewDecision(models.TextChoices):
    APPROVE = "approve", "Approve"
    REJECT = "reject", "Reject"


class Review(models.Model):
    """One reviewer's decision on one revision of a change request."""

    change_request = models.ForeignKey(ChangeRequest, on_delete=models.PROTECT, related_name="reviews")
    revision = models.PositiveIntegerField()
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # Copied from the request so the database itself refuses self-review.
    change_author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=10, choices=ReviewDecision.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    ACCESS_FIELDS = ("change_request__tenant_id", "change_request__team_id", "change_request__environment_id")

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["change_request", "revision", "reviewer"],
                name="review_one_per_reviewer",
                violation_error_message="You have already reviewed this revision.",
            ),
            models.CheckConstraint(
                condition=~Q(reviewer=F("change_author")),
                name="review_not_by_author",
                violation_error_message="Nobody reviews their own change.",
            ),
        ]

    def __str__(self) -> str:
        verb = "approved" if self.decision == ReviewDecision.APPROVE else "rejected"
        return f"{self.reviewer} {verb} CR-{self.change_request_id}"


class Comment(models.Model):
    """A remark on a change request by its author or a reviewer; not a decision."""

    change_request = models.ForeignKey(ChangeRequest, on_delete=models.PROTECT, related_name="comments")
    revision = models.PositiveIntegerField()
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    ACCESS_FIELDS = ("change_request__tenant_id", "change_request__team_id", "change_request__environment_id")

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(body=""), name="comment_not_empty", violation_error_message="A comment needs text."
            ),
        ]

    def __str__(self) -> str:
        return f"{self.author} on CR-{self.change_request_id}"


class PostReview(models.Model):
    """The mandatory after-the-fact review of an emergency change applied during a freeze."""

    change_request = models.OneToOneField(ChangeRequest, on_delete=models.PROTECT, related_name="post_review")
    created_at = models.DateTimeField(auto_now_add=True)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    notes = models.TextField(blank=True)
    history = HistoricalRecords()

    ACCESS_FIELDS = ("change_request__tenant_id", "change_request__team_id", "change_request__environment_id")

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        state = "done" if self.reviewed_at else "open"
        return f"post-review of CR-{self.change_request_id} ({state})"

    @property
    def is_open(self) -> bool:
        return self.reviewed_at is None
