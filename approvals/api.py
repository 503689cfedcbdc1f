"""REST endpoints for change requests: propose, submit, approve, reject, withdraw.

The only way to create, change or delete a job through the API. Serializers
validate the request's shape; ``approvals.services`` decides everything else.
"""

from __future__ import annotations

from django.db.models import Count, Exists, F, OuterRef, Q
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter, SearchFilter
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
from governance.models import Environment, Team
from jobs.api import DefinitionSerializer, JobRefSerializer
from jobs.definitions import diff
from jobs.models import DEFINITION_FIELDS, Job

from . import services
from .models import ChangeAction, ChangeRequest, ChangeStatus, Review, ReviewDecision


class ReviewSerializer(serializers.ModelSerializer):
    reviewer = UsernameField()
    current = serializers.SerializerMethodField(help_text="Counts for the request's current revision.")

    class Meta:
        model = Review
        fields = ["id", "reviewer", "decision", "comment", "revision", "current", "created_at"]
        read_only_fields = fields

    def get_current(self, review: Review) -> bool:
        return review.revision == self.context["revision"]


class DiffRowSerializer(serializers.Serializer):
    field = serializers.ChoiceField(choices=DEFINITION_FIELDS)
    before = serializers.JSONField(allow_null=True)
    after = serializers.JSONField(allow_null=True)


class ChangeRequestSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api-change-request-detail")
    title = serializers.CharField(source="__str__", read_only=True)
    tenant = TenantRefSerializer(read_only=True)
    team = TeamRefSerializer(read_only=True)
    environment = EnvironmentRefSerializer(read_only=True)
    job = JobRefSerializer(read_only=True, allow_null=True)
    author = UsernameField()
    approvals = serializers.IntegerField(
        source="approval_count", read_only=True, help_text="Approvals of the current revision."
    )
    required_approvals = serializers.SerializerMethodField()

    class Meta:
        model = ChangeRequest
        fields = [
            "id",
            "url",
            "title",
            "action",
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
            "created_at",
            "submitted_at",
            "decided_at",
            "applied_at",
            "applied_version",
        ]
        read_only_fields = fields

    def get_required_approvals(self, change: ChangeRequest) -> int:
        # A draft has not taken its policy yet; show what submitting it would require.
        if change.status == ChangeStatus.DRAFT:
            return change.environment.required_approvals
        return change.required_approvals


class ChangeRequestDetailSerializer(ChangeRequestSerializer):
    proposed = serializers.SerializerMethodField(help_text="The complete proposed definition (null for a delete).")
    base_definition = serializers.SerializerMethodField(help_text="The live definition it was based on.")
    diff = serializers.SerializerMethodField()
    reviews = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()

    class Meta(ChangeRequestSerializer.Meta):
        fields = [
            *ChangeRequestSerializer.Meta.fields,
            "base_version",
            "proposed",
            "base_definition",
            "diff",
            "reviews",
            "failure_reason",
            "links",
        ]
        read_only_fields = fields

    @extend_schema_field(DefinitionSerializer(allow_null=True))
    def get_proposed(self, change: ChangeRequest) -> dict | None:
        return None if change.action == ChangeAction.DELETE else change.proposed

    @extend_schema_field(DefinitionSerializer(allow_null=True))
    def get_base_definition(self, change: ChangeRequest) -> dict | None:
        return change.base_definition

    @extend_schema_field(ReviewSerializer(many=True))
    def get_reviews(self, change: ChangeRequest) -> list:
        return ReviewSerializer(change.reviews.all(), many=True, context={"revision": change.revision}).data

    @extend_schema_field(DiffRowSerializer(many=True))
    def get_diff(self, change: ChangeRequest) -> list:
        after = None if change.action == ChangeAction.DELETE else change.proposed
        return diff(change.base_definition, after)

    @extend_schema_field(
        {"type": "object", "properties": {"self": {"type": "string"}, "job": {"type": "string", "nullable": True}}}
    )
    def get_links(self, change: ChangeRequest) -> dict:
        request = self.context.get("request")
        return {
            "self": reverse("api-change-request-detail", kwargs={"pk": change.pk}, request=request),
            "job": reverse("api-job-detail", kwargs={"pk": change.job_id}, request=request) if change.job_id else None,
        }


class ChangeRequestCreateSerializer(StrictInputMixin, serializers.ModelSerializer):
    """What a client may send. Author, status, tenant and approvals come from the server."""

    action = serializers.ChoiceField(choices=ChangeAction.choices)
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
        queryset=Environment.objects.all(), required=False, allow_null=True, help_text="Environment (create only)."
    )
    definition = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="The job's fields; for an update, only the fields that change (merged over the live job).",
    )
    justification = serializers.CharField(allow_blank=True, max_length=10000, help_text="Why this change is needed.")
    ticket = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    submit = serializers.BooleanField(default=True, help_text="Submit for review at once (false: keep a draft).")

    class Meta:
        model = ChangeRequest
        fields = [
            "id",
            "action",
            "job",
            "team",
            "environment",
            "definition",
            "justification",
            "ticket",
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
        errors: dict[str, list[str]] = {}
        if attrs["action"] != ChangeAction.CREATE:
            for field in ("team", "environment"):
                if attrs.get(field) is not None:
                    errors[field] = [f"An {attrs['action']} keeps the job's {field}; send only the job."]
        if attrs["action"] == ChangeAction.DELETE and attrs.get("definition"):
            errors["definition"] = ["A delete takes no definition."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class CommentSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")


class RejectSerializer(serializers.Serializer):
    comment = serializers.CharField(
        max_length=5000, error_messages={"blank": "Say why you reject this change."}, help_text="Why it is rejected."
    )


class WithdrawSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")


class ChangeRequestFilter(filters.FilterSet):
    mine = filters.BooleanFilter(method="filter_mine", label="Only requests I authored")
    awaiting_my_review = filters.BooleanFilter(
        method="filter_awaiting_my_review", label="Only submitted requests I may review and have not reviewed yet"
    )
    status = filters.MultipleChoiceFilter(choices=ChangeStatus.choices)
    action = filters.ChoiceFilter(choices=ChangeAction.choices)
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
        user = self.request.user
        reviewed = Review.objects.filter(change_request=OuterRef("pk"), revision=OuterRef("revision"), reviewer=user)
        return (
            restrict(queryset, user, Action.REVIEW)
            .filter(status=ChangeStatus.SUBMITTED)
            .exclude(author=user)
            .exclude(Exists(reviewed))
        )


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
        queryset = (
            super()
            .get_queryset()
            .annotate(
                approval_count=Count(
                    "reviews",
                    filter=Q(reviews__decision=ReviewDecision.APPROVE, reviews__revision=F("revision")),
                )
            )
        )
        if self.action != "list":
            queryset = queryset.prefetch_related("reviews__reviewer")
        return queryset

    def get_serializer_class(self):
        if self.action == "create":
            return ChangeRequestCreateSerializer
        return ChangeRequestSerializer if self.action == "list" else ChangeRequestDetailSerializer

    def _respond(self, change, status_code=status.HTTP_200_OK):
        return self.detail_response(self.get_queryset().get(pk=change.pk), ChangeRequestDetailSerializer, status_code)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        job, team, environment = data.get("job"), data.get("team"), data.get("environment")
        if job is not None:
            self.denial_target = job
        elif team is not None:
            self.denial_target = (team.tenant_id, team.pk, environment.pk if environment else None)
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
        )
        return self._respond(change, status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: ChangeRequestDetailSerializer}, summary="Submit a draft for review")
    @action(detail=True, methods=["post"])
    def submit(self, request, pk=None):
        change = services.submit_change(self.get_object(), actor=request.user)
        return self._respond(change)

    @extend_schema(request=CommentSerializer, responses={200: ChangeRequestDetailSerializer}, summary="Approve")
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        change = self.get_object()
        body = CommentSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        change = services.approve_change(change, actor=request.user, comment=body.validated_data["comment"])
        return self._respond(change)

    @extend_schema(request=RejectSerializer, responses={200: ChangeRequestDetailSerializer}, summary="Reject")
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        change = self.get_object()
        body = RejectSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        change = services.reject_change(change, actor=request.user, comment=body.validated_data["comment"])
        return self._respond(change)

    @extend_schema(request=WithdrawSerializer, responses={200: ChangeRequestDetailSerializer}, summary="Withdraw")
    @action(detail=True, methods=["post"])
    def withdraw(self, request, pk=None):
        change = self.get_object()
        body = WithdrawSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        change = services.withdraw_change(change, actor=request.user, reason=body.validated_data["reason"])
        return self._respond(change)
