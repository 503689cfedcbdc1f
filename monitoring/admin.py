"""Incidents and on-call in the Django admin.

Incidents and their timelines are read-only (they change through acknowledge and resolve, which
audit each transition). Rotations, overrides, escalation policies, routes and silences are managed
by admins without change requests (docs/monitoring.md); superusers may edit them here, every write
audited in the tenant's chain (governance.admin.AuditedAdminMixin); staff read their tenants' rows.
"""

from django.contrib import admin

from governance.admin import ReadOnlyAdmin, TenantScopedAdmin

from .models import (
    EscalationPolicy,
    EscalationStep,
    Incident,
    IncidentEvent,
    Override,
    Rotation,
    RotationLayer,
    RotationMember,
    Route,
    Silence,
)


@admin.register(Incident)
class IncidentAdmin(ReadOnlyAdmin):
    read_only_what = "incidents are acknowledged and resolved in the UI or the API; they"
    list_display = ("__str__", "tenant", "team", "state", "severity", "opened_at", "resolved_at")
    list_filter = ("state", "severity", "tenant")
    search_fields = ("summary", "fingerprint")
    list_select_related = ("tenant", "team")


@admin.register(IncidentEvent)
class IncidentEventAdmin(ReadOnlyAdmin):
    read_only_what = "incident timelines"
    list_display = ("__str__", "incident", "kind", "at")
    list_filter = ("kind",)
    list_select_related = ("incident",)


class RotationMemberInline(admin.TabularInline):
    model = RotationMember
    extra = 0


@admin.register(Rotation)
class RotationAdmin(TenantScopedAdmin):
    list_display = ("name", "tenant", "team", "created_at")
    list_filter = ("tenant",)
    list_select_related = ("tenant", "team")


@admin.register(RotationLayer)
class RotationLayerAdmin(TenantScopedAdmin):
    audit_tenant_paths = ("rotation__tenant_id",)
    list_display = ("__str__", "position", "rotation_days", "handoff_time", "timezone", "starts_on")
    list_select_related = ("rotation",)
    inlines = [RotationMemberInline]


@admin.register(Override)
class OverrideAdmin(TenantScopedAdmin):
    audit_tenant_paths = ("rotation__tenant_id",)
    list_display = ("__str__", "rotation", "user", "starts_at", "ends_at")
    list_select_related = ("rotation", "user")


class EscalationStepInline(admin.TabularInline):
    model = EscalationStep
    extra = 0


@admin.register(EscalationPolicy)
class EscalationPolicyAdmin(TenantScopedAdmin):
    list_display = ("name", "tenant", "team", "repeat")
    list_filter = ("tenant",)
    list_select_related = ("tenant", "team")
    inlines = [EscalationStepInline]


@admin.register(Route)
class RouteAdmin(TenantScopedAdmin):
    list_display = ("__str__", "tenant", "team", "criticality", "environment", "policy")
    list_filter = ("tenant",)
    list_select_related = ("tenant", "team", "environment", "policy")


@admin.register(Silence)
class SilenceAdmin(TenantScopedAdmin):
    list_display = ("__str__", "tenant", "team", "job", "tag", "starts_at", "ends_at", "reason")
    list_filter = ("tenant",)
    list_select_related = ("tenant", "team", "job")
