"""Jobs, runs, maintenance windows and holiday calendars in the admin: read-only, because they change
only through change requests."""

from django.contrib import admin

from governance.admin import EditableHistoryAdmin, ReadOnlyAdmin, ReadOnlyHistoryAdmin

from .models import (
    Alert,
    Attempt,
    EnvironmentExecutionPolicy,
    HolidayCalendar,
    Job,
    MaintenanceWindow,
    Pool,
    Run,
    SchedulerLease,
    TenantExecutionPolicy,
)


@admin.register(Job)
class JobAdmin(ReadOnlyHistoryAdmin):
    read_only_what = "jobs"
    list_display = ("name", "tenant", "team", "environment", "criticality", "status", "version", "next_fire_at")
    list_filter = ("status", "criticality", "environment__slug", "tenant")
    search_fields = ("name", "description")
    list_select_related = ("tenant", "team", "environment")


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    read_only_what = "runs are written by the scheduler and workers; they"
    list_display = ("id", "job", "status", "scheduled_for", "started_at", "finished_at", "exit_code", "trigger")
    list_filter = ("status", "trigger", "tenant")
    search_fields = ("job__name",)
    date_hierarchy = "scheduled_for"
    list_select_related = ("job", "job__environment")


@admin.register(SchedulerLease)
class SchedulerLeaseAdmin(ReadOnlyAdmin):
    read_only_what = "scheduler leases are held by run_scheduler processes; they"
    list_display = ("name", "holder", "term", "acquired_at", "expires_at")

    def has_view_permission(self, request, obj=None):
        # Platform state, no tenant: superusers only.
        return request.user.is_active and request.user.is_superuser


@admin.register(Attempt)
class AttemptAdmin(ReadOnlyAdmin):
    read_only_what = "attempts are written by the workers; they"
    list_display = ("__str__", "run", "number", "status", "started_at", "finished_at", "exit_code")
    list_filter = ("status",)
    list_select_related = ("run",)


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    read_only_what = "alerts are raised by the scheduler and workers; they"
    list_display = ("__str__", "job", "kind", "created_at", "resolved_at")
    list_filter = ("kind", "tenant")
    list_select_related = ("job",)


@admin.register(TenantExecutionPolicy)
class TenantExecutionPolicyAdmin(EditableHistoryAdmin):
    list_display = ("tenant", "allowed_executables")
    list_select_related = ("tenant",)


@admin.register(EnvironmentExecutionPolicy)
class EnvironmentExecutionPolicyAdmin(EditableHistoryAdmin):
    list_display = ("environment", "http_allowed_hosts", "allow_private_addresses")
    list_select_related = ("environment", "environment__tenant")


@admin.register(MaintenanceWindow)
class MaintenanceWindowAdmin(ReadOnlyHistoryAdmin):
    read_only_what = "maintenance windows"
    list_display = ("name", "tenant", "environment", "starts_at", "ends_at", "cron", "duration_minutes", "policy")
    list_filter = ("policy", "tenant")
    list_select_related = ("tenant", "environment")


@admin.register(HolidayCalendar)
class HolidayCalendarAdmin(ReadOnlyHistoryAdmin):
    read_only_what = "holiday calendars"
    list_display = ("name", "tenant", "country")
    list_select_related = ("tenant",)


@admin.register(Pool)
class PoolAdmin(ReadOnlyHistoryAdmin):
    # Pool slots are part of what change control governs (docs/change-control.md, "Windows, calendars and pools").
    read_only_what = "pools"
    list_display = ("name", "tenant", "environment", "slots", "reserved_critical_slots")
    list_filter = ("tenant",)
    list_select_related = ("tenant", "environment")
