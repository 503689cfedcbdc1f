"""Read-only REST endpoint of alert rules (/api/v1/alert-rules/).

Rules change only through /api/v1/change-requests/ (target_kind alert_rule); rows are those
``governance.access.restrict`` lets the caller see (another tenant's rule is a 404).
"""

from __future__ import annotations

from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers
from rest_framework.filters import OrderingFilter, SearchFilter

from governance.api import EnvironmentRefSerializer, RestrictedViewSet, TenantRefSerializer, ref_filter

from .models import AlertRule, RuleKind, RuleScope


class AlertRuleSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api-alert-rule-detail")
    tenant = TenantRefSerializer(read_only=True)
    environment = EnvironmentRefSerializer(read_only=True, allow_null=True, help_text="Null: every environment.")
    job = serializers.CharField(source="job.name", read_only=True, allow_null=True, default=None)
    team = serializers.CharField(source="team.slug", read_only=True, allow_null=True, default=None)

    class Meta:
        model = AlertRule
        fields = [
            "id",
            "url",
            "name",
            "tenant",
            "environment",
            "scope",
            "job",
            "team",
            "tag",
            "kind",
            "severity",
            "for_seconds",
            "params",
            "enabled",
            "change_request_id",
            "updated_at",
        ]
        read_only_fields = fields


class AlertRuleFilter(filters.FilterSet):
    tenant = ref_filter("tenant", "Tenant")
    environment = ref_filter("environment", "Environment")
    kind = filters.ChoiceFilter(choices=RuleKind.choices)
    scope = filters.ChoiceFilter(choices=RuleScope.choices)

    class Meta:
        model = AlertRule
        fields = ["tenant", "environment", "kind", "scope", "enabled"]


@extend_schema_view(list=extend_schema(summary="List alert rules"), retrieve=extend_schema(summary="An alert rule"))
class AlertRuleViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RestrictedViewSet):
    """Explicit alert rules. Read-only: propose changes through /api/v1/change-requests/ with
    target_kind=alert_rule. Jobs without an explicit rule of a kind get the defaults of their
    criticality (docs/monitoring.md)."""

    queryset = AlertRule.objects.select_related("tenant", "environment", "job", "team")
    serializer_class = AlertRuleSerializer
    filterset_class = AlertRuleFilter
    filter_backends = [filters.DjangoFilterBackend, SearchFilter, OrderingFilter]
    search_fields = ["name", "tag"]
    ordering_fields = ["name", "kind", "severity"]
    ordering = ["name", "id"]
