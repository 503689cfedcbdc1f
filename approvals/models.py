"""Change requests and their reviews (four-eyes change control)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from simple_history.models import HistoricalRecords

from governance.models import Environment, Team, Tenant
from jobs.models import Job


class ChangeAction(models.TextChoices):
    CREATE = "create", "Create job"
    UPDATE = "update", "Update job"
    DELETE = "delete", "Delete job"


class ChangeStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    SUBMITTED = "submitted", "Submitted"
    APPROVED = "approved", "Approved"
    APPLIED = "applied", "Applied"
    REJECTED = "rejected", "Rejected"
    WITHDRAWN = "withdrawn", "Withdrawn"
    SUPERSEDED = "superseded", "Superseded"
    FAILED = "failed", "Failed"


OPEN_STATUSES = frozenset({ChangeStatus.DRAFT, ChangeStatus.SUBMITTED, ChangeStatus.APPROVED})


class ChangeRequest(models.Model):
    """A proposed create, update or delete of a job, reviewed before it applies."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="+")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="+")
    job = models.ForeignKey(Job, on_delete=models.PROTECT, null=True, blank=True, related_name="change_requests")
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
    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    applied_version = models.PositiveIntegerField(null=True, blank=True)
    failure_reason = models.TextField(blank=True)
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
                condition=Q(action="create") | Q(job__isnull=False),
                name="change_update_delete_need_job",
                violation_error_message="Updates and deletes must name the job they change.",
            ),
        ]
        indexes = [
            # Review queues: open requests of a tenant by age.
            models.Index(fields=["tenant", "status", "created_at"], name="change_queue"),
        ]

    def __str__(self) -> str:
        name = (self.proposed or {}).get("name") or (self.job.name if self.job_id else "?")
        return f"CR-{self.pk}: {self.get_action_display().lower()} {name}"

    @property
    def target_name(self) -> str:
        return (self.proposed or {}).get("name") or (self.base_definition or {}).get("name", "")

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


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
        return f"{self.reviewer} {self.decision}d CR-{self.change_request_id}"
