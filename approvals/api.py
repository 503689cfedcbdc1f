"""REST endpoints for change requests: propose, submit, approve, reject, resubmit, withdraw.

The only way to create, change or delete a job through the API. Serializers
validate the request's shape; ``approvals.services`` decides everything else.
"""

from __future__ import annotations

from typing import Any, cast

from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter, SearchFilter
from rest_framework.response import Response
from rest_framework.reverse import reverse

from governance.access import Action, restrict
from governance.api import (
    EnvironmentRefSerializer,
    RestrictedViewSet,
    StrictInputMixin,
    TeamRefSerializer,
    TenantRefSerializer,
    UsernameField,
    VisibleRelatedField,
    ref_filter,
)
from governance.models import Environment, Team, Tenant
from jobs.api import JobRefSerializer
from jobs.models import Job

from . import config_changes, services
from .models import (
    CONFIG_KINDS,
    STATE_ACTIONS,
    ChangeAction,
    ChangeRequest,
    ChangeStatus,
    Comment,
    Review,
    TargetKind,
)
from .warnings import WarningKind, change_warnings, with_warning_facts


class ReviewSerializer(serializers.ModelSerializer):
    reviewer = UsernameField()
    current = serializers.SerializerMethodField(help_text="Counts for the request's current revision.")

    class Meta:
        model = Review
        fields = ["id", "reviewer", "decision", "comment", "revision", "current", "created_at"]
        read_only_fields = fields

    def get_current(self, review: Review) -> bool:
        return review.revision == self.context["revision"]


class CommentSerializer(serializers.ModelSerializer):
    author = UsernameField()

    class Meta:
        model = Comment
        fields = ["id", "author", "body", "revision", "created_at"]
        read_only_fields = fields


class DiffRowSerializer(serializers.Serializer):
    field = serializers.CharField()
    before = serializers.JSONField(allow_null=True)
    after = serializers.JSONField(allow_null=True)


class ChangeWarningSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=WarningKind.choices)
    message = serializers.CharField()


class ChangeRequestListSerializer(serializers.ListSerializer):
    """Computes every row's warnings from one load of windows and freezes (constant queries per page)."""

    def to_representation(self, data):
        items = list(data.all() if hasattr(data, "all") else data)
        self.context["change_warnings"] = change_warnings(items)
        self.context["approval_progress"] = services.approval_progress_for(items)
        return super().to_representation(items)


class ChangeRequestSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api-change-request-detail")
    title = serializers.CharField(source="__str__", read_only=True)
    tenant = TenantRefSerializer(read_only=True)
    team = TeamRefSerializer(
        read_only=True, allow_null=True, help_text="Owning team (null for policy, window, calendar and pool changes)."
    )
    environment = EnvironmentRefSerializer(
        read_only=True, allow_null=True, help_text="Null for a tenant-wide maintenance window or holiday calendar."
    )
    job = JobRefSerializer(read_only=True, allow_null=True)
    author = UsernameField()
    approvals = serializers.SerializerMethodField(
        help_text="Approvals of the current revision that still count: by reviewers who may still review it "
        "under today's roles, one per identity (a person and the service accounts they control count once)."
    )
    required_approvals = serializers.SerializerMethodField(
        help_text="Approvals the policy requires, fixed when the request is submitted (null for a draft)."
    )
    warnings = serializers.SerializerMethodField(
        help_text="For reviewers of an open request: maintenance-window collisions of the proposed schedule, "
        "a freeze that holds it, non-standard traits of the job. Empty once the request is closed."
    )

    class Meta:
        model = ChangeRequest
        list_serializer_class = ChangeRequestListSerializer
        fields = [
            "id",
            "url",
            "title",
            "action",
            "target_kind",
            "target_id",
            "status",
            "tenant",
            "team",
            "environment",
            "job",
            "author",
            "justification",
            "ticket",
            "revision",
            "approvals",
            "required_approvals",
            "requires_independent_approver",
            "emergency",
            "apply_after",
            "expires_at",
            "created_at",
            "submitted_at",
            "decided_at",
            "applied_at",
            "applied_version",
            "rejection_reason",
            "warnings",
        ]
        read_only_fields = fields

    @extend_schema_field(ChangeWarningSerializer(many=True))
    def get_warnings(self, change: ChangeRequest) -> list:
        known = self.context.get("change_warnings")
        if known is None or change.pk not in known:
            known = change_warnings([change])
        return known[change.pk]

    def _progress(self, change: ChangeRequest) -> dict:
        known = cast(dict[str, Any], self.context).setdefault("approval_progress", {})
        if change.pk not in known:
            # Constant queries however many reviews (grants of all reviewers load together).
            known.update(services.approval_progress_for([change]))
        return known[change.pk]

    def get_approvals(self, change: ChangeRequest) -> int:
        return self._progress(change)["approvals"]

    def get_required_approvals(self, change: ChangeRequest) -> int | None:
        # The policy is looked up at submit (it depends on criticality); a draft has none yet.
        if change.status == ChangeStatus.DRAFT:
            return None
        return change.required_approvals


class ChangeRequestDetailSerializer(ChangeRequestSerializer):
    proposed = serializers.SerializerMethodField(
        help_text="The complete proposed job definition (null for a delete), or the rule of a policy change."
    )
    base_definition = serializers.SerializerMethodField(help_text="The live definition or rule it was based on.")
    diff = serializers.SerializerMethodField()
    reviews = serializers.SerializerMethodField()
    comments = CommentSerializer(many=True, read_only=True)
    approvers = serializers.SerializerMethodField(
        help_text="Whose approvals of the current revision count (see `approvals`)."
    )
    hold_reason = serializers.SerializerMethodField(help_text="Why an approved request has not applied yet.")
    links = serializers.SerializerMethodField()

    class Meta(ChangeRequestSerializer.Meta):
        fields = [
            *ChangeRequestSerializer.Meta.fields,
            "base_version",
            "proposed",
            "base_definition",
            "diff",
            "approvers",
            "reviews",
            "comments",
            "hold_reason",
            "failure_reason",
            "links",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_proposed(self, change: ChangeRequest) -> dict | None:
        return None if change.action == ChangeAction.DELETE else change.proposed

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_base_definition(self, change: ChangeRequest) -> dict | None:
        return change.base_definition

    @extend_schema_field(DiffRowSerializer(many=True))
    def get_diff(self, change: ChangeRequest) -> list:
        return change.diff()

    @extend_schema_field(ReviewSerializer(many=True))
    def get_reviews(self, change: ChangeRequest) -> list:
        return list(ReviewSerializer(change.reviews.all(), many=True, context={"revision": change.revision}).data)

    def get_approvers(self, change: ChangeRequest) -> list[str]:
        return self._progress(change)["approvers"]

    def get_hold_reason(self, change: ChangeRequest) -> str:
        return services.hold_reason(change) if change.status == ChangeStatus.APPROVED else ""

    @extend_schema_field(
        {
            "type": "object",
            "properties": {
                "self": {"type": "string"},
                "job": {"type": "string", "nullable": True},
                "target": {"type": "string", "nullable": True},
            },
        }
    )
    def get_links(self, change: ChangeRequest) -> dict:
        request = self.context.get("request")
        target = None
        if change.target_id and change.target_kind in TARGET_ROUTES:
            target = reverse(TARGET_ROUTES[change.target_kind], kwargs={"pk": change.target_id}, request=request)
        return {
            "self": reverse("api-change-request-detail", kwargs={"pk": change.pk}, request=request),
            "job": reverse("api-job-detail", kwargs={"pk": change.job_id}, request=request) if change.job_id else None,
            "target": target,
        }


# API routes of the configuration objects a change request may target (links.target).
TARGET_ROUTES: dict[str, str] = {
    TargetKind.MAINTENANCE_WINDOW: "api-maintenance-window-detail",
    TargetKind.HOLIDAY_CALENDAR: "api-holiday-calendar-detail",
    TargetKind.POOL: "api-pool-detail",
    TargetKind.RECOVERY_RULE: "api-recovery-rule-detail",
    TargetKind.ALERT_RULE: "api-alert-rule-detail",
}


class ChangeRequestCreateSerializer(StrictInputMixin, serializers.ModelSerializer):
    """What a client may send. Author, status, tenant and approvals come from the server."""

    action = serializers.ChoiceField(choices=ChangeAction.choices)
    target_kind = serializers.ChoiceField(
        choices=TargetKind.choices,
        default=TargetKind.JOB,
        help_text="What changes: a job (default), an approval policy (action=policy), or a maintenance window, "
        "holiday calendar, pool or recovery rule (actions create, update, delete).",
    )
    target = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        help_text="The id of the maintenance window, holiday calendar, pool or recovery rule to update or delete.",
    )
    target_tenant = VisibleRelatedField(
        queryset=Tenant.objects.all(),
        required=False,
        allow_null=True,
        help_text="Tenant of a new tenant-wide maintenance window or holiday calendar.",
    )
    job = VisibleRelatedField(
        queryset=Job.objects.select_related("team__tenant", "environment"),
        required=False,
        allow_null=True,
        help_text="The job to update or delete.",
    )
    team = VisibleRelatedField(
        queryset=Team.objects.select_related("tenant"),
        required=False,
        allow_null=True,
        help_text="Owning team (create only).",
    )
    environment = VisibleRelatedField(
        queryset=Environment.objects.all(),
        required=False,
        allow_null=True,
        help_text="Environment (create only; omit for a tenant-wide window).",
    )
    definition = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="The job's fields; for an update, only the fields that change (merged over the live job). "
        "For action=policy: the approval rule {criticality, required_approvals, separation_of_duties, "
        "pause_requires_change}. None for pause and resume. "
        "For a maintenance window: {name, starts_at, ends_at} (one-off) or {name, cron, timezone, "
        "duration_minutes} (recurring), and policy defer|skip. For a holiday calendar: {name, dates, country} "
        "and optionally years (add the country's public holidays). For a pool: {name, slots, "
        "reserved_critical_slots, description}. Updates merge over the live object.",
    )
    emergency = serializers.BooleanField(
        default=False,
        help_text="May apply during a freeze window; then needs a review after the fact. "
        "For action=pause: pauses at once, before approval, and needs a review after the fact.",
    )
    apply_after = serializers.DateTimeField(
        required=False, allow_null=True, default=None, help_text="Once approved, apply at this instant (UTC)."
    )
    justification = serializers.CharField(allow_blank=True, max_length=10000, help_text="Why this change is needed.")
    ticket = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    submit = serializers.BooleanField(default=True, help_text="Submit for review at once (false: keep a draft).")

    class Meta:
        model = ChangeRequest
        fields = [
            "id",
            "action",
            "target_kind",
            "target",
            "target_tenant",
            "job",
            "team",
            "environment",
            "definition",
            "justification",
            "ticket",
            "emergency",
            "apply_after",
            "submit",
            "status",
            "author",
            "tenant",
            "required_approvals",
            "revision",
            "proposed",
            "base_version",
            "base_definition",
            "created_at",
            "submitted_at",
            "decided_at",
            "applied_at",
            "applied_version",
            "failure_reason",
        ]
        read_only_fields = [
            "id",
            "status",
            "author",
            "tenant",
            "required_approvals",
            "revision",
            "proposed",
            "base_version",
            "base_definition",
            "created_at",
            "submitted_at",
            "decided_at",
            "applied_at",
            "applied_version",
            "failure_reason",
        ]

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if attrs.get("target_kind") in CONFIG_KINDS:
            return self._validate_config(attrs)
        errors: dict[str, list[str]] = {}
        action = attrs["action"]
        if attrs.get("target_kind") == TargetKind.POLICY and action != ChangeAction.POLICY:
            errors["action"] = ["A policy change has action=policy."]
        for field in ("target", "target_tenant"):
            if attrs.get(field) is not None:
                errors[field] = ["Only window, calendar and pool changes name a target or a target tenant."]
        if action in (ChangeAction.UPDATE, ChangeAction.DELETE):
            for field in ("team", "environment"):
                if attrs.get(field) is not None:
                    errors[field] = [f"An {action} keeps the job's {field}; send only the job."]
        if action == ChangeAction.POLICY:
            for field in ("team", "job"):
                if attrs.get(field) is not None:
                    errors[field] = ["A policy change names only the environment."]
            if attrs.get("environment") is None:
                errors["environment"] = ["Choose the environment whose approval policy changes."]
            if not attrs.get("definition"):
                errors["definition"] = ["Give the proposed rule."]
            if attrs.get("emergency") or attrs.get("apply_after"):
                errors["emergency" if attrs.get("emergency") else "apply_after"] = [
                    "Policy changes apply when approved; they take no emergency flag or apply time."
                ]
        if attrs["action"] == ChangeAction.DELETE and attrs.get("definition"):
            errors["definition"] = ["A delete takes no definition."]
        if action in STATE_ACTIONS:
            for field in ("team", "environment"):
                if attrs.get(field) is not None:
                    errors[field] = [f"A {action} names only the job."]
            if attrs.get("job") is None:
                errors["job"] = [f"Name the job to {action}."]
            if attrs.get("definition"):
                errors["definition"] = [f"A {action} takes no definition."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs

    def _validate_config(self, attrs):
        errors: dict[str, list[str]] = {}
        kind = config_changes.kind_of(attrs["target_kind"])
        action = attrs["action"]
        if action not in (ChangeAction.CREATE, ChangeAction.UPDATE, ChangeAction.DELETE):
            errors["action"] = [f"A {kind.label} change is a create, update or delete."]
        for field in ("team", "job"):
            if attrs.get(field) is not None:
                errors[field] = [f"A {kind.label} change names no {field}."]
        if action == ChangeAction.CREATE:
            if attrs.get("target") is not None:
                errors["target"] = ["A create names no existing object."]
            if attrs.get("target_tenant") is None and attrs.get("environment") is None:
                errors["target_tenant" if kind.environment == "never" else "environment"] = [
                    "Choose the tenant." if kind.environment == "never" else "Choose the environment (or the tenant)."
                ]
        elif action in (ChangeAction.UPDATE, ChangeAction.DELETE):
            if attrs.get("target") is None:
                errors["target"] = [f"Give the id of the {kind.label} to {action}."]
            for field in ("target_tenant", "environment"):
                if attrs.get(field) is not None:
                    errors[field] = [f"An {action} keeps the {kind.label}'s place; send only the target."]
        if action == ChangeAction.DELETE and attrs.get("definition"):
            errors["definition"] = ["A delete takes no definition."]
        if attrs.get("target") is not None and "target" not in errors:
            user = self.context["request"].user
            obj = restrict(kind.model.objects.all(), user, Action.VIEW).filter(pk=attrs["target"]).first()
            if obj is None:
                errors["target"] = [f"No {kind.label} with id {attrs['target']}."]
            attrs["target"] = obj
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


REVISION_HELP = (
    "The revision you reviewed (the request's `revision` when you read it). If the author edited the "
    "request since, nothing is recorded and the answer is 409: read the new revision and decide again."
)


class ApproveSerializer(serializers.Serializer):
    revision = serializers.IntegerField(min_value=1, help_text=REVISION_HELP)
    comment = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")


class ChangeRequestEditSerializer(StrictInputMixin, serializers.Serializer):
    """An edit by the author; every edit is a new revision, so earlier approvals stop counting."""

    based_on_revision = serializers.IntegerField(
        help_text="The revision you edited; an edit of an outdated revision is refused (409)."
    )
    definition = serializers.JSONField(
        required=False, help_text="Changed fields of the proposal (merged over the live job for updates)."
    )
    justification = serializers.CharField(required=False, allow_blank=True, max_length=10000)
    ticket = serializers.CharField(required=False, allow_blank=True, max_length=200)
    apply_after = serializers.DateTimeField(required=False, allow_null=True)


class NewCommentSerializer(serializers.Serializer):
    body = serializers.CharField(allow_blank=True, max_length=10000, help_text="A remark; never an approval.")


REJECT_REASON_REQUIRED = "Say why you reject this change: its author reads the reason."


class RejectSerializer(serializers.Serializer):
    revision = serializers.IntegerField(min_value=1, help_text=REVISION_HELP)
    reason = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=5000,
        help_text="Why it is rejected (required): shown to the author, who may revise and resubmit.",
    )
    comment = serializers.CharField(
        required=False, allow_blank=True, max_length=5000, help_text="Deprecated: the older name of `reason`."
    )

    def validate(self, attrs):
        reason = (attrs.get("reason") or attrs.get("comment") or "").strip()
        if not reason:
            raise serializers.ValidationError({"reason": [REJECT_REASON_REQUIRED]})
        return {"revision": attrs["revision"], "reason": reason}


class ResubmitSerializer(StrictInputMixin, serializers.Serializer):
    """The author's revision of a rejected request; it becomes a new revision, submitted again."""

    based_on_revision = serializers.IntegerField(
        help_text="The rejected revision you revised; an outdated one is refused (409)."
    )
    definition = serializers.JSONField(
        required=False, help_text="Changed fields of the proposal (merged over the rejected proposal)."
    )
    justification = serializers.CharField(required=False, allow_blank=True, max_length=10000)
    ticket = serializers.CharField(required=False, allow_blank=True, max_length=200)


class RollbackSerializer(StrictInputMixin, serializers.Serializer):
    job = VisibleRelatedField(queryset=Job.objects.select_related("team__tenant", "environment"))
    version = serializers.IntegerField(min_value=1, help_text="The earlier version to propose again.")
    justification = serializers.CharField(allow_blank=True, max_length=10000)
    ticket = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")


class PromoteSerializer(StrictInputMixin, serializers.Serializer):
    job = VisibleRelatedField(queryset=Job.objects.select_related("team__tenant", "environment"))
    environment = VisibleRelatedField(
        queryset=Environment.objects.all(),
        required=False,
        allow_null=True,
        help_text="The next environment (default: the one after the job's; no skipping).",
    )
    parameter_values = serializers.JSONField(
        required=False, allow_null=True, help_text="Parameter values for the target environment."
    )
    justification = serializers.CharField(allow_blank=True, max_length=10000)
    ticket = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")


class WithdrawSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")


class ChangeRequestFilter(filters.FilterSet):
    mine = filters.BooleanFilter(method="filter_mine", label="Only requests I authored")
    awaiting_my_review = filters.BooleanFilter(
        method="filter_awaiting_my_review", label="Only submitted requests I may review and have not reviewed yet"
    )
    status = filters.MultipleChoiceFilter(choices=ChangeStatus.choices, distinct=False)  # a plain column
    action = filters.ChoiceFilter(choices=ChangeAction.choices)
    target_kind = filters.ChoiceFilter(choices=TargetKind.choices)
    job = filters.NumberFilter(field_name="job_id")
    tenant = ref_filter("tenant", "Tenant")
    team = ref_filter("team", "Team")
    environment = ref_filter("environment", "Environment")

    class Meta:
        model = ChangeRequest
        fields = ["status", "action", "job", "environment"]

    def filter_mine(self, queryset, name, value):
        if value is None:
            return queryset
        user = self.request.user
        return queryset.filter(author=user) if value else queryset.exclude(author=user)

    def filter_awaiting_my_review(self, queryset, name, value):
        if not value:
            return queryset
        return services.awaiting_review(self.request.user, queryset)


@extend_schema_view(
    list=extend_schema(summary="List change requests"),
    retrieve=extend_schema(summary="A change request with its diff and reviews"),
    create=extend_schema(
        summary="Propose a change to a job",
        request=ChangeRequestCreateSerializer,
        responses={201: ChangeRequestDetailSerializer},
    ),
)
class ChangeRequestViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, RestrictedViewSet
):
    """Proposed creates, updates and deletes of jobs, and their reviews."""

    queryset = ChangeRequest.objects.select_related(
        "tenant", "team", "environment", "job__team", "job__environment", "author"
    )
    serializer_class = ChangeRequestSerializer
    filterset_class = ChangeRequestFilter
    filter_backends = [filters.DjangoFilterBackend, SearchFilter, OrderingFilter]
    search_fields = ["justification", "ticket", "job__name"]
    ordering_fields = ["created_at", "submitted_at", "decided_at", "status"]
    ordering = ["-created_at", "-id"]

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action != "list":
            queryset = queryset.prefetch_related("reviews__reviewer", "comments__author")
        # Warnings come from facts loaded with the rows, so a page costs the same whatever its length.
        return with_warning_facts(queryset)

    def get_serializer_class(self):
        if self.action == "create":
            return ChangeRequestCreateSerializer
        return ChangeRequestSerializer if self.action == "list" else ChangeRequestDetailSerializer

    def _respond(self, change, status_code=status.HTTP_200_OK):
        return self.detail_response(self.get_queryset().get(pk=change.pk), ChangeRequestDetailSerializer, status_code)

    def _revise(self, request, serializer_class, service):
        """An edit or a resubmission: like a create's fields, only what changes is sent; the rest of the
        proposal stays."""
        change = self.get_object()
        body = serializer_class(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        if isinstance(data.get("definition"), dict) and isinstance(change.proposed, dict):
            data["definition"] = {**change.proposed, **data["definition"]}
        return self._respond(service(change, actor=request.user, **data))

    def _review(self, request, serializer_class, service, field):
        """An approval or a rejection of the revision the reviewer saw."""
        change = self.get_object()
        body = serializer_class(data=request.data)
        body.is_valid(raise_exception=True)
        change = service(
            change,
            actor=request.user,
            revision=body.validated_data["revision"],
            **{field: body.validated_data[field]},
        )
        return self._respond(change)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        job, team, environment = data.get("job"), data.get("team"), data.get("environment")
        if data["target_kind"] in CONFIG_KINDS:
            return self._propose_config(request, data)
        if job is not None:
            self.denial_target = job
        elif team is not None:
            self.denial_target = (team.tenant_id, team.pk, environment.pk if environment else None)
        elif environment is not None:
            self.denial_target = environment
        if data["action"] in STATE_ACTIONS:
            change = services.propose_pause_change(
                job,
                actor=request.user,
                paused=data["action"] == ChangeAction.PAUSE,
                justification=data["justification"],
                ticket=data["ticket"],
                emergency=data["emergency"],
                apply_after=data["apply_after"],
                submit=data["submit"],
            )
        elif data["action"] == ChangeAction.POLICY:
            change = services.propose_policy_change(
                actor=request.user,
                environment=environment,
                rule=data["definition"],
                justification=data["justification"],
                ticket=data["ticket"],
                submit=data["submit"],
            )
        else:
            change = services.propose_change(
                actor=request.user,
                action=data["action"],
                justification=data["justification"],
                definition=data.get("definition"),
                job=job,
                team=team,
                environment=environment,
                ticket=data["ticket"],
                submit=data["submit"],
                emergency=data["emergency"],
                apply_after=data["apply_after"],
            )
        return self._respond(change, status.HTTP_201_CREATED)

    def _propose_config(self, request, data):
        target, tenant, environment = data.get("target"), data.get("target_tenant"), data.get("environment")
        if target is not None:
            self.denial_target = target
        elif environment is not None:
            self.denial_target = environment
        elif tenant is not None:
            self.denial_target = (tenant.pk, None, None)
        definition = data.get("definition")
        if target is not None and data["action"] == ChangeAction.UPDATE and isinstance(definition, dict):
            # Like a job update, only the fields that change are sent; the rest stay as live.
            definition = {**config_changes.kind_of(data["target_kind"]).definition(target), **definition}
        change = services.propose_config_change(
            actor=request.user,
            kind=data["target_kind"],
            action=data["action"],
            tenant=tenant,
            environment=environment,
            target=target,
            definition=definition,
            justification=data["justification"],
            ticket=data["ticket"],
            submit=data["submit"],
            emergency=data["emergency"],
            apply_after=data["apply_after"],
        )
        return self._respond(change, status.HTTP_201_CREATED)

    @extend_schema(
        request=ChangeRequestEditSerializer,
        responses={200: ChangeRequestDetailSerializer},
        summary="Edit a draft or submitted request (author only; resets approvals)",
    )
    def partial_update(self, request, pk=None):
        return self._revise(request, ChangeRequestEditSerializer, services.edit_change)

    @extend_schema(request=None, responses={200: ChangeRequestDetailSerializer}, summary="Rebase onto the live job")
    @action(detail=True, methods=["post"])
    def rebase(self, request, pk=None):
        change = services.rebase_change(self.get_object(), actor=request.user)
        return self._respond(change)

    @extend_schema(request=NewCommentSerializer, responses={201: CommentSerializer}, summary="Comment")
    @action(detail=True, methods=["post"])
    def comments(self, request, pk=None):
        change = self.get_object()
        body = NewCommentSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        comment = services.comment_on_change(change, actor=request.user, body=body.validated_data["body"])
        return Response(CommentSerializer(comment).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: ChangeRequestDetailSerializer}, summary="Submit a draft for review")
    @action(detail=True, methods=["post"])
    def submit(self, request, pk=None):
        change = services.submit_change(self.get_object(), actor=request.user)
        return self._respond(change)

    @extend_schema(
        request=ApproveSerializer,
        responses={200: ChangeRequestDetailSerializer},
        summary="Approve the revision you reviewed",
    )
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        return self._review(request, ApproveSerializer, services.approve_change, "comment")

    @extend_schema(
        request=RejectSerializer,
        responses={200: ChangeRequestDetailSerializer},
        summary="Reject the revision you reviewed",
    )
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        return self._review(request, RejectSerializer, services.reject_change, "reason")

    @extend_schema(
        request=ResubmitSerializer,
        responses={200: ChangeRequestDetailSerializer},
        summary="Revise a rejected request and submit it again (author only; a new revision, reviews reset)",
    )
    @action(detail=True, methods=["post"])
    def resubmit(self, request, pk=None):
        return self._revise(request, ResubmitSerializer, services.resubmit_change)

    @extend_schema(request=WithdrawSerializer, responses={200: ChangeRequestDetailSerializer}, summary="Withdraw")
    @action(detail=True, methods=["post"])
    def withdraw(self, request, pk=None):
        change = self.get_object()
        body = WithdrawSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        change = services.withdraw_change(change, actor=request.user, reason=body.validated_data["reason"])
        return self._respond(change)

    @extend_schema(
        request=RollbackSerializer,
        responses={201: ChangeRequestDetailSerializer},
        summary="Propose an earlier version of a job again (diff against live)",
    )
    @action(detail=False, methods=["post"])
    def rollback(self, request):
        body = RollbackSerializer(data=request.data, context=self.get_serializer_context())
        body.is_valid(raise_exception=True)
        data = body.validated_data
        self.denial_target = data["job"]
        change = services.propose_rollback(
            data["job"],
            actor=request.user,
            version=data["version"],
            justification=data["justification"],
            ticket=data["ticket"],
        )
        return self._respond(change, status.HTTP_201_CREATED)

    @extend_schema(
        request=PromoteSerializer,
        responses={201: ChangeRequestDetailSerializer},
        summary="Promote a job to the next environment with that environment's parameter values",
    )
    @action(detail=False, methods=["post"])
    def promote(self, request):
        body = PromoteSerializer(data=request.data, context=self.get_serializer_context())
        body.is_valid(raise_exception=True)
        data = body.validated_data
        self.denial_target = data["job"]
        change = services.propose_promotion(
            data["job"],
            actor=request.user,
            target=data.get("environment"),
            parameter_values=data.get("parameter_values"),
            justification=data["justification"],
            ticket=data["ticket"],
        )
        return self._respond(change, status.HTTP_201_CREATED)
