"""Read-only REST endpoints for maintenance windows, holiday calendars and pools.

They change only through /api/v1/change-requests/ (target_kind maintenance_window,
holiday_calendar or pool); rows are those ``governance.access.restrict`` lets the caller see.
"""

from __future__ import annotations

from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter, SearchFilter

from governance.api import EnvironmentRefSerializer, RestrictedViewSet, TenantRefSerializer, ref_filter

from . import pools
from .models import HolidayCalendar, MaintenanceWindow, Pool


class HistoryEntrySerializer(serializers.Serializer):
    history_date = serializers.DateTimeField()
    history_type = serializers.CharField(help_text="+ created, ~ changed, - deleted")
    history_user = serializers.CharField(source="history_user.username", allow_null=True, default=None)
    change_request_id = serializers.IntegerField(allow_null=True, help_text="The request that made this version.")
    reason = serializers.CharField(source="history_change_reason", allow_null=True)


class ConfigViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RestrictedViewSet):
    @extend_schema(responses={200: HistoryEntrySerializer(many=True)}, summary="Every recorded version")
    @action(detail=True, methods=["get"], filter_backends=[])
    def history(self, request, pk=None):
        obj = self.get_object()
        records = obj.history.select_related("history_user").order_by("-history_date", "-history_id")
        page = self.paginate_queryset(records)
        return self.get_paginated_response(HistoryEntrySerializer(page, many=True).data)


class MaintenanceWindowSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api-maintenance-window-detail")
    tenant = TenantRefSerializer(read_only=True)
    environment = EnvironmentRefSerializer(read_only=True, allow_null=True, help_text="Null: the whole tenant.")

    class Meta:
        model = MaintenanceWindow
        fields = [
            "id",
            "url",
            "name",
            "tenant",
            "environment",
            "starts_at",
            "ends_at",
            "cron",
            "timezone",
            "duration_minutes",
            "policy",
            "change_request_id",
            "created_at",
        ]
        read_only_fields = fields


class HolidayCalendarSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api-holiday-calendar-detail")
    tenant = TenantRefSerializer(read_only=True)

    class Meta:
        model = HolidayCalendar
        fields = ["id", "url", "name", "tenant", "country", "dates", "change_request_id"]
        read_only_fields = fields


class PoolSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api-pool-detail")
    tenant = TenantRefSerializer(read_only=True)
    environment = EnvironmentRefSerializer(read_only=True)
    busy = serializers.IntegerField(read_only=True, help_text="Queued or running runs of the pool's jobs now.")
    free = serializers.IntegerField(read_only=True, help_text="Slots free now (0 when the pool is over-full).")

    class Meta:
        model = Pool
        fields = [
            "id",
            "url",
            "name",
            "tenant",
            "environment",
            "slots",
            "reserved_critical_slots",
            "busy",
            "free",
            "description",
            "change_request_id",
            "updated_at",
        ]
        read_only_fields = fields


class MaintenanceWindowFilter(filters.FilterSet):
    tenant = ref_filter("tenant", "Tenant")
    environment = ref_filter("environment", "Environment")
    policy = filters.ChoiceFilter(choices=MaintenanceWindow._meta.get_field("policy").choices)

    class Meta:
        model = MaintenanceWindow
        fields = ["tenant", "environment", "policy"]


class PoolFilter(filters.FilterSet):
    tenant = ref_filter("tenant", "Tenant")
    environment = ref_filter("environment", "Environment")

    class Meta:
        model = Pool
        fields = ["tenant", "environment"]


class HolidayCalendarFilter(filters.FilterSet):
    tenant = ref_filter("tenant", "Tenant")

    class Meta:
        model = HolidayCalendar
        fields = ["tenant"]


@extend_schema_view(
    list=extend_schema(summary="List maintenance windows"),
    retrieve=extend_schema(summary="A maintenance window"),
)
class MaintenanceWindowViewSet(ConfigViewSet):
    """Live maintenance windows (tenant-wide or per environment). Read-only: propose changes through
    /api/v1/change-requests/ with target_kind=maintenance_window."""

    queryset = MaintenanceWindow.objects.select_related("tenant", "environment")
    serializer_class = MaintenanceWindowSerializer
    filterset_class = MaintenanceWindowFilter
    filter_backends = [filters.DjangoFilterBackend, SearchFilter, OrderingFilter]
    search_fields = ["name"]
    ordering_fields = ["name", "starts_at", "created_at"]
    ordering = ["name", "id"]


@extend_schema_view(
    list=extend_schema(summary="List holiday calendars"),
    retrieve=extend_schema(summary="A holiday calendar with its dates"),
)
class HolidayCalendarViewSet(ConfigViewSet):
    """Tenant holiday calendars. Read-only: propose changes through /api/v1/change-requests/ with
    target_kind=holiday_calendar."""

    queryset = HolidayCalendar.objects.select_related("tenant")
    serializer_class = HolidayCalendarSerializer
    filterset_class = HolidayCalendarFilter
    filter_backends = [filters.DjangoFilterBackend, SearchFilter, OrderingFilter]
    search_fields = ["name"]
    ordering_fields = ["name"]
    ordering = ["name", "id"]


@extend_schema_view(list=extend_schema(summary="List pools"), retrieve=extend_schema(summary="A pool"))
class PoolViewSet(ConfigViewSet):
    """Pools of slots per environment. Read-only: propose changes through /api/v1/change-requests/
    with target_kind=pool."""

    queryset = Pool.objects.select_related("tenant", "environment")
    serializer_class = PoolSerializer
    filterset_class = PoolFilter
    filter_backends = [filters.DjangoFilterBackend, SearchFilter, OrderingFilter]
    search_fields = ["name"]
    ordering_fields = ["name", "slots", "busy", "free"]
    ordering = ["environment__order", "name", "id"]

    def get_queryset(self):
        # busy/free: a correlated count in the same query (jobs.pools.with_usage), whatever the rows.
        return pools.with_usage(super().get_queryset())
