"""Jobs and runs in the admin: read-only, because jobs change only through change requests."""

from django.contrib import admin

from governance.admin import ReadOnlyAdmin, ReadOnlyHistoryAdmin

from .models import Job, Run, SchedulerLease


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
