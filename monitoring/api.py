"""REST endpoints for incidents: list, detail with the timeline, acknowledge and resolve."""

from __future__ import annotations

from django.db.models import Case, IntegerField, Value, When
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers
from rest_framework.decorators import action

from governance.access import Action, can
from governance.api import (
    EnvironmentRefSerializer,
    RestrictedViewSet,
    TeamRefSerializer,
    UsernameField,
    ref_filter,
)
from governance.services import AccessDenied

from . import incidents
from .models import Incident, IncidentEvent, IncidentState, Severity


class IncidentEventSerializer(serializers.ModelSerializer):
    actor = UsernameField()

    class Meta:
        model = IncidentEvent
        fields = ["id", "at", "kind", "actor", "message", "step", "round", "run_id", "data"]


class IncidentSerializer(serializers.ModelSerializer):
    team = TeamRefSerializer(read_only=True)
    environment = EnvironmentRefSerializer(read_only=True)
    job_name = serializers.CharField(source="job.name", read_only=True, allow_null=True, default=None)
    acknowledged_by = UsernameField()
    resolved_by = UsernameField()
    escalation_policy = serializers.CharField(source="escalation_policy.name", read_only=True, default=None)

    class Meta:
        model = Incident
        fields = [
            "id",
            "tenant",
            "team",
            "environment",
            "job",
            "job_name",
            "fingerprint",
            "kind",
            "severity",
            "summary",
            "state",
            "opened_at",
            "alert_count",
            "last_alert_at",
            "acknowledged_at",
            "acknowledged_by",
            "resolved_at",
            "resolved_by",
            "resolution",
            "escalation_policy",
            "escalation_step",
            "escalation_round",
            "next_escalation_at",
            "silenced_until",
            "silence_reason",
        ]
        read_only_fields = fields


class IncidentDetailSerializer(IncidentSerializer):
    timeline = IncidentEventSerializer(source="events", many=True, read_only=True)

    class Meta(IncidentSerializer.Meta):
        fields = [*IncidentSerializer.Meta.fields, "timeline"]
        read_only_fields = fields


class ResolveSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=2000,
        error_messages={
            "blank": "Give a reason: it is recorded on the timeline and in the audit trail.",
            "required": "Give a reason: it is recorded on the timeline and in the audit trail.",
        },
    )


class IncidentFilter(filters.FilterSet):
    state = filters.MultipleChoiceFilter(choices=IncidentState.choices)
    severity = filters.MultipleChoiceFilter(choices=Severity.choices)
    team = ref_filter("team", "Team")
    environment = ref_filter("environment", "Environment")
    tenant = ref_filter("tenant", "Tenant")
    open = filters.BooleanFilter(method="filter_open", label="Only open (triggered or acknowledged) incidents")

    class Meta:
        model = Incident
        fields = ["state", "severity", "team", "environment", "tenant", "job", "open"]

    def filter_open(self, queryset, name, value):
        if value is None:
            return queryset
        return (
            queryset.exclude(state=IncidentState.RESOLVED) if value else queryset.filter(state=IncidentState.RESOLVED)
        )


def open_first(queryset):
    """Open incidents first (triggered, then acknowledged), newest first within each state."""
    rank = Case(
        When(state=IncidentState.TRIGGERED, then=Value(0)),
        When(state=IncidentState.ACKNOWLEDGED, then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )
    return queryset.annotate(state_rank=rank).order_by("state_rank", "-opened_at", "-id")


class IncidentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RestrictedViewSet):
    """Incidents (open first); acknowledge stops the escalation, resolve closes the incident."""

    queryset = Incident.objects.select_related(
        "team", "environment", "job", "acknowledged_by", "resolved_by", "escalation_policy"
    )
    serializer_class = IncidentSerializer
    filterset_class = IncidentFilter

    def get_queryset(self):
        queryset = open_first(super().get_queryset())
        if self.action == "retrieve":
            queryset = queryset.prefetch_related("events__actor")
        return queryset

    def get_serializer_class(self):
        return IncidentDetailSerializer if self.action in ("retrieve", "acknowledge", "resolve") else IncidentSerializer

    def _acted_on(self) -> Incident:
        incident = self.get_object()
        if not can(self.request.user, Action.ACKNOWLEDGE, incident):
            raise AccessDenied("You need the operator role for this incident's team to acknowledge or resolve it.")
        return incident

    def _answer(self, incident: Incident):
        fresh = self.get_queryset().prefetch_related("events__actor").get(pk=incident.pk)
        return self.detail_response(fresh, IncidentDetailSerializer)

    @extend_schema(request=None, responses={200: IncidentDetailSerializer}, summary="Acknowledge: stop the escalation")
    @action(detail=True, methods=["post"])
    def acknowledge(self, request, pk=None):
        incident = self._acted_on()
        return self._answer(incidents.acknowledge(incident, actor=request.user))

    @extend_schema(
        request=ResolveSerializer, responses={200: IncidentDetailSerializer}, summary="Resolve with a reason"
    )
    @action(detail=True, methods=["post"])
    def resolve(self, request, pk=None):
        incident = self._acted_on()
        body = ResolveSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._answer(incidents.resolve(incident, actor=request.user, reason=body.validated_data["reason"]))
