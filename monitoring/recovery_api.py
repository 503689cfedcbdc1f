"""Read-only REST endpoints for recovery rules and what they did (/api/v1/recovery-rules/,
/api/v1/recovery-actions/). Rules change only through /api/v1/change-requests/ with
target_kind=recovery_rule; rows are those ``governance.access.restrict`` lets the caller see."""

from __future__ import annotations

from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers
from rest_framework.filters import OrderingFilter

from governance.api import EnvironmentRefSerializer, RestrictedViewSet, TenantRefSerializer, ref_filter
from jobs.config_api import ConfigViewSet

from .models import RECOVERY_RULE_FIELDS, RecoveryAction, RecoveryRule


class RecoveryRuleSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api-recovery-rule-detail")
    tenant = TenantRefSerializer(read_only=True)
    environment = EnvironmentRefSerializer(read_only=True)
    job = serializers.CharField(source="job.name", allow_null=True, default=None, help_text="The job it watches.")
    team = serializers.CharField(source="team.slug", allow_null=True, default=None, help_text="Or its team.")
    remediation_job = serializers.CharField(source="remediation_job.name", allow_null=True, default=None)

    class Meta:
        model = RecoveryRule
        # Where the rule lives, then its definition in diff order (name first), then its provenance.
        fields = [
            "id",
            "url",
            "name",
            "tenant",
            "environment",
            *RECOVERY_RULE_FIELDS[1:],
            "change_request_id",
            "updated_at",
        ]
        read_only_fields = fields


class RecoveryRuleFilter(filters.FilterSet):
    tenant = ref_filter("tenant", "Tenant")
    environment = ref_filter("environment", "Environment")

    class Meta:
        model = RecoveryRule
        fields = ["tenant", "environment", "action"]


@extend_schema_view(list=extend_schema(summary="List recovery rules"), retrieve=extend_schema(summary="A rule"))
class RecoveryRuleViewSet(ConfigViewSet):
    """Recovery rules per environment. Read-only: propose changes through /api/v1/change-requests/
    with target_kind=recovery_rule."""

    queryset = RecoveryRule.objects.select_related("tenant", "environment", "job", "team", "remediation_job")
    serializer_class = RecoveryRuleSerializer
    filterset_class = RecoveryRuleFilter
    filter_backends = [filters.DjangoFilterBackend, OrderingFilter]
    ordering_fields = ["name", "updated_at"]
    ordering = ["environment__order", "name", "id"]


class RecoveryActionSerializer(serializers.ModelSerializer):
    rule = serializers.IntegerField(source="rule_id", allow_null=True, help_text="Null once the rule was deleted.")
    job = serializers.CharField(source="job.name")
    run = serializers.IntegerField(source="run_id")
    started_run = serializers.IntegerField(source="started_run_id", allow_null=True)

    class Meta:
        model = RecoveryAction
        fields = ["id", "at", "rule", "rule_name", "job", "run", "action", "outcome", "detail", "started_run"]
        read_only_fields = fields


class RecoveryActionFilter(filters.FilterSet):
    class Meta:
        model = RecoveryAction
        fields = ["rule", "run", "action", "outcome"]


@extend_schema_view(list=extend_schema(summary="What recovery rules did"), retrieve=extend_schema(summary="One"))
class RecoveryActionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RestrictedViewSet):
    """Every action of a recovery rule on a failed run (or why it held back), newest first."""

    queryset = RecoveryAction.objects.select_related("job")
    serializer_class = RecoveryActionSerializer
    filterset_class = RecoveryActionFilter
    filter_backends = [filters.DjangoFilterBackend]
    ordering = ["-at", "-id"]
