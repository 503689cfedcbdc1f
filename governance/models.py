"""Tenancy, roles and the audit trail: the base layer every other app builds on."""

from __future__ import annotations

import hashlib
import hmac
import json

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Value
from django.db.models.functions import Coalesce
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase
from simple_history.models import HistoricalRecords

from .patterns import validate_user_pattern

slug_validator = RegexValidator(
    r"^[a-z0-9]+(-[a-z0-9]+)*$", "Use lower-case letters, digits and single dashes (e.g. 'payments')."
)

DEFAULT_NAMING_PATTERN = r"^(?P<team>[a-z0-9-]+)\.[a-z0-9-]+\.[a-z0-9-]+$"


class Tenant(models.Model):
    """The isolation boundary: every object belongs to exactly one tenant."""

    slug = models.SlugField(max_length=50, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200)
    naming_pattern = models.CharField(
        max_length=200,
        default=DEFAULT_NAMING_PATTERN,
        validators=[validate_user_pattern],
        help_text="Regular expression (RE2 syntax) job names must match; the named group 'team' must equal the "
        "owning team.",
    )
    secrets_by_team = models.BooleanField(
        default=False,
        help_text="Each team reads only its own secrets: references live under "
        "<prefix>/<tenant>/<environment>/<team>/ instead of <prefix>/<tenant>/<environment>/.",
    )
    run_retention_days = models.PositiveIntegerField(
        default=400,
        validators=[MinValueValidator(31)],
        help_text="Finished runs older than this many days are archived (manage.py archive_runs) and then "
        "deleted from the database; at least 31.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    ACCESS_FIELDS = ("id", None, None)


class Team(models.Model):
    """Owns jobs inside a tenant; job names start with the team's slug."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="teams")
    slug = models.SlugField(max_length=50, validators=[slug_validator])
    name = models.CharField(max_length=200)
    history = HistoricalRecords()

    class Meta:
        ordering = ["tenant__slug", "slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "slug"],
                name="team_unique_slug_per_tenant",
                violation_error_message="A team with this slug already exists in the tenant.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.slug}"

    ACCESS_FIELDS = ("tenant_id", "id", None)


class Environment(models.Model):
    """A stage such as dev, staging or prod; governed when its policy requires approvals."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="environments")
    slug = models.SlugField(max_length=50, validators=[slug_validator])
    name = models.CharField(max_length=200)
    order = models.PositiveSmallIntegerField(default=0, help_text="Promotion order: dev < staging < prod.")
    required_approvals = models.PositiveSmallIntegerField(
        default=0, help_text="Distinct approvers (never the author) a change needs before it applies."
    )
    history = HistoricalRecords()

    class Meta:
        ordering = ["tenant__slug", "order", "slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "slug"],
                name="environment_unique_slug_per_tenant",
                violation_error_message="An environment with this slug already exists in the tenant.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.slug}"

    @property
    def governed(self) -> bool:
        return self.required_approvals > 0

    ACCESS_FIELDS = ("tenant_id", None, "id")


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    OPERATOR = "operator", "Operator"
    AUTHOR = "author", "Author"
    APPROVER = "approver", "Approver"
    TENANT_ADMIN = "tenant_admin", "Tenant admin"


class Scope(models.Model):
    """Where a role applies: a tenant, optionally narrowed to a team and/or an environment.

    Roles are django-guardian object permissions (``governance.role_<role>``)
    granted to users or groups on a Scope row; ``governance.access`` reads them.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="scopes")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, null=True, blank=True, related_name="+")

    class Meta:
        permissions = [(f"role_{value}", f"Role: {label}") for value, label in Role.choices]
        constraints = [
            # Expressions, so "no team" counts as one value on SQLite and PostgreSQL alike.
            models.UniqueConstraint(
                "tenant",
                Coalesce("team", Value(0)),
                Coalesce("environment", Value(0)),
                name="scope_unique",
                violation_error_message="This scope already exists.",
            )
        ]

    def __str__(self) -> str:
        parts = [self.tenant.slug]
        if self.team is not None:
            parts.append(f"team {self.team.slug}")
        if self.environment is not None:
            parts.append(f"env {self.environment.slug}")
        return " / ".join(parts)


class ScopeUserRole(UserObjectPermissionBase):
    """A user's role on a scope (guardian direct foreign-key object permission)."""

    content_object = models.ForeignKey(Scope, on_delete=models.CASCADE, related_name="user_roles")
    history = HistoricalRecords()

    class Meta(UserObjectPermissionBase.Meta):
        verbose_name = "user role"


class ScopeGroupRole(GroupObjectPermissionBase):
    """A group's role on a scope (guardian direct foreign-key object permission)."""

    content_object = models.ForeignKey(Scope, on_delete=models.CASCADE, related_name="group_roles")
    history = HistoricalRecords()

    class Meta(GroupObjectPermissionBase.Meta):
        verbose_name = "group role"


class AuditAction(models.TextChoices):
    LOGIN = "auth.login", "Login"
    LOGIN_FAILED = "auth.login_failed", "Failed login"
    LOGOUT = "auth.logout", "Logout"
    ACCESS_DENIED = "access.denied", "Access denied"
    ROLE_GRANTED = "role.granted", "Role granted"
    ROLE_REVOKED = "role.revoked", "Role revoked"
    CHANGE_CREATED = "change.created", "Change proposed"
    CHANGE_SUBMITTED = "change.submitted", "Change submitted"
    CHANGE_APPROVED = "change.approved", "Change approved"
    CHANGE_REJECTED = "change.rejected", "Change rejected"
    CHANGE_WITHDRAWN = "change.withdrawn", "Change withdrawn"
    CHANGE_APPLIED = "change.applied", "Change applied"
    CHANGE_FAILED = "change.failed", "Change failed to apply"
    # Change-control workflow and lifecycle (approvals app).
    CHANGE_EDITED = "change.edited", "Change edited"
    CHANGE_REBASED = "change.rebased", "Change rebased"
    CHANGE_RESUBMITTED = "change.resubmitted", "Rejected change revised and resubmitted"
    CHANGE_EXPIRED = "change.expired", "Change expired"
    CHANGE_COMMENTED = "change.commented", "Change commented"
    CHANGE_HELD = "change.held", "Change held (apply time or freeze)"
    CHANGE_POST_REVIEWED = "change.post_reviewed", "Emergency change reviewed after the fact"
    POLICY_CHANGED = "policy.changed", "Approval policy changed"
    CONFIG_CHANGED = "config.changed", "Maintenance window, holiday calendar or pool changed"
    FREEZE_CREATED = "freeze.created", "Freeze window created"
    JOB_RECERTIFIED = "job.recertified", "Job recertified"
    JOB_SUNSET_WARNING = "job.sunset_warning", "Job nears its sunset date"
    JOB_SUNSET = "job.sunset", "Job disabled at its sunset date"
    JOB_CREATED = "job.created", "Job created"
    JOB_UPDATED = "job.updated", "Job updated"
    JOB_DELETED = "job.deleted", "Job deleted"
    JOB_PAUSED = "job.paused", "Job paused"
    JOB_RESUMED = "job.resumed", "Job resumed"
    RUN_TRIGGERED = "run.triggered", "Run triggered"
    RUN_CANCELLED = "run.cancelled", "Run cancelled"
    RUN_RERUN = "run.rerun", "Run rerun by an operator"
    RUN_MARKED_SUCCEEDED = "run.marked_succeeded", "Run marked succeeded by an operator"
    RUN_REQUEUED = "run.requeued", "Queued run enqueued again (no queue message)"
    RECOVERY_ACTION = "recovery.action", "Recovery rule acted on a failed run"
    RUNS_ARCHIVED = "runs.archived", "Runs archived and deleted"
    RUNS_RESTORED = "runs.restored", "Runs restored from an archive"
    RUNS_EXPORTED = "runs.exported", "Runs exported"
    SECRET_READ = "secret.read", "Secret read"
    TOKEN_ISSUED = "token.issued", "API token issued"
    TOKEN_REVOKED = "token.revoked", "API token revoked"
    SERVICE_ACCOUNT_CREATED = "service_account.created", "Service account created"
    EXPORT = "audit.exported", "Audit exported"
    VAULT_POLICY_APPLIED = "vault.policy_applied", "Vault policy updated for the tenants"
    VAULT_POLICY_FAILED = "vault.policy_failed", "Vault policy could not be updated"
    CHANNEL_CREATED = "channel.created", "Notification channel created"
    CHANNEL_DISABLED = "channel.disabled", "Notification channel disabled"
    CHANNEL_ENABLED = "channel.enabled", "Notification channel enabled"
    # Incidents, on-call and silences (monitoring).
    INCIDENT_OPENED = "incident.opened", "Incident opened"
    INCIDENT_NOTIFIED = "incident.notified", "Incident escalation step notified"
    INCIDENT_SILENCED = "incident.silenced", "Incident silenced (notifies nobody)"
    INCIDENT_ACKNOWLEDGED = "incident.acknowledged", "Incident acknowledged"
    INCIDENT_RESOLVED = "incident.resolved", "Incident resolved"
    ONCALL_CHANGED = "oncall.changed", "Rotation, override, escalation policy or route changed"
    SILENCE_CREATED = "silence.created", "Silence created"
    SILENCE_ENDED = "silence.ended", "Silence ended early"
    # Writes by platform administrators in the Django admin (governance.admin.AuditedAdminMixin).
    ADMIN_CREATED = "admin.created", "Created in the Django admin"
    ADMIN_CHANGED = "admin.changed", "Changed in the Django admin"
    ADMIN_DELETED = "admin.deleted", "Deleted in the Django admin"


class AuditChain(models.Model):
    """The head of one tenant's hash chain (tenant NULL: platform events), locked while appending."""

    tenant = models.OneToOneField(Tenant, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    last_seq = models.PositiveBigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default="")

    def __str__(self) -> str:
        return f"chain {self.tenant_id or 'platform'} @ {self.last_seq}"


class AuditEvent(models.Model):
    """An append-only record of something that happened, hash-chained per tenant."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    seq = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    actor_repr = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=40, choices=AuditAction.choices)
    object_type = models.CharField(max_length=60, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=300, blank=True)
    # Team and environment of the object, so narrowed roles see only their part of the trail.
    team = models.ForeignKey(Team, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    data = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64)

    ACCESS_FIELDS = ("tenant_id", "team_id", "environment_id")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "seq"], name="audit_unique_seq_per_tenant"),
        ]
        indexes = [
            # Audit search and exports: one tenant's events in time order.
            models.Index(fields=["tenant", "created_at"], name="audit_tenant_time"),
            # "Everything that happened to this object" on detail pages and the audit filter, newest first.
            models.Index(fields=["object_type", "object_id", "-created_at"], name="audit_object_time"),
            # The audit filter by action: one tenant's events of one action, newest first.
            models.Index(fields=["tenant", "action", "-created_at"], name="audit_tenant_action_time"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%dT%H:%M:%SZ} {self.actor_repr or 'system'} {self.action} {self.object_repr}"

    def canonical(self) -> bytes:
        """The bytes the chain authenticates: every field but the id and the hash itself."""
        payload = {
            "tenant": self.tenant_id,
            "seq": self.seq,
            "created_at": self.created_at.isoformat(),
            "actor": self.actor_id,
            "actor_repr": self.actor_repr,
            "action": self.action,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "object_repr": self.object_repr,
            "team": self.team_id,
            "environment": self.environment_id,
            "data": self.data,
            "ip": self.ip,
            "prev_hash": self.prev_hash,
        }
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()

    def compute_hash(self, key: bytes | None = None) -> str:
        """HMAC-SHA256 of the event under the audit key (``GOVERNOR_AUDIT_KEY``, never stored in the
        database): someone who can write the table but lacks the key cannot forge a valid chain."""
        if key is None:
            key = settings.GOVERNOR_AUDIT_KEY.encode()
        return hmac.new(key, self.canonical(), hashlib.sha256).hexdigest()


class ServiceAccount(models.Model):
    """A non-human API client (CI pipeline, GitOps) confined to one tenant and a limited role.

    It is backed by a user row with no usable password (it can never log in to the UI);
    its roles are ordinary scope grants inside its own tenant.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="service_accounts")
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="service_account")
    name = models.SlugField(max_length=50, validators=[slug_validator])
    description = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    history = HistoricalRecords()

    ACCESS_FIELDS = ("tenant_id", None, None)

    class Meta:
        ordering = ["tenant__slug", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"],
                name="service_account_unique_name_per_tenant",
                violation_error_message="A service account with this name already exists in the tenant.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}"


class ApiToken(models.Model):
    """An API token: only its SHA-256 is stored; it expires, can be revoked and records its last use."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    # Tokens are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    key_hash = models.CharField(max_length=64, unique=True)
    # The first characters, shown so an owner can tell tokens apart; useless for authentication.
    prefix = models.CharField(max_length=12)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @property
    def active(self) -> bool:
        from django.utils import timezone

        return self.revoked_at is None and self.expires_at > timezone.now()


class SiemCursor(models.Model):
    """How far one SIEM destination has received one hash chain (the outbox is the audit table itself)."""

    destination = models.CharField(max_length=100)
    # The chain's tenant id; 0 for the platform chain (tenant NULL).
    chain = models.PositiveBigIntegerField()
    last_seq = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["destination", "chain"], name="siem_cursor_unique_destination_chain")
        ]

    def __str__(self) -> str:
        return f"{self.destination} chain {self.chain} @ {self.last_seq}"
