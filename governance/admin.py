"""Django admin for platform administrators.

Tenancy objects are editable by superusers only. Everything that change control
governs (jobs, runs, change requests, reviews, the audit trail) is read-only
here: the admin is never a way around four-eyes review. Non-superuser staff
see, read-only, exactly the rows ``governance.access.restrict`` gives them.
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from simple_history.admin import SimpleHistoryAdmin

from .access import Action, can, restrict, tenant_ids
from .models import (
    ApiToken,
    AuditChain,
    AuditEvent,
    Environment,
    Scope,
    ScopeGroupRole,
    ScopeUserRole,
    ServiceAccount,
    SiemCursor,
    Team,
    Tenant,
)

READ_ONLY_NOTE = "Read-only: {what} change only through change requests in the Governor UI or API, never here."


class TenantScopedAdmin(admin.ModelAdmin):
    """Staff browse what restrict() allows; only superusers write.

    ``tenant_path`` names the tenant field for models without ACCESS_FIELDS
    (scopes and role grants), which are then limited to the staff member's tenants.
    """

    tenant_path: str | None = None

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        user = request.user
        if user.is_superuser:
            return queryset
        if hasattr(queryset.model, "ACCESS_FIELDS"):
            return restrict(queryset, user, Action.VIEW)
        if self.tenant_path:
            return queryset.filter(**{f"{self.tenant_path}__in": tenant_ids(user, Action.VIEW)})
        return queryset.none()

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        if user.is_superuser or obj is None:
            return True
        if hasattr(obj, "ACCESS_FIELDS"):
            return can(user, Action.VIEW, obj)
        return self.get_queryset(request).filter(pk=obj.pk).exists()

    def has_add_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser


class ReadOnlyAdmin(TenantScopedAdmin):
    """Governed by change control: nobody adds, changes or deletes here, superusers included."""

    read_only_what = "these records"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        return {}

    def _note(self, extra_context):
        context = dict(extra_context or {})
        context["subtitle"] = READ_ONLY_NOTE.format(what=self.read_only_what)
        return context

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, self._note(extra_context))

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return super().changeform_view(request, object_id, form_url, self._note(extra_context))


class ReadOnlyHistoryAdmin(ReadOnlyAdmin, SimpleHistoryAdmin):
    """Read-only with the history pages, whose "revert" would otherwise bypass change control."""

    def revert_disabled(self, request, obj=None):
        return True

    def has_change_history_permission(self, request, obj=None):
        return False

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        if request.method == "POST":
            raise PermissionDenied("History is read-only: propose the earlier version again as a change request.")
        return super().history_form_view(request, object_id, version_id, self._note(extra_context))


class EditableHistoryAdmin(TenantScopedAdmin, SimpleHistoryAdmin):
    """Superusers edit; staff read; history visible."""

    def has_change_history_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        if request.method == "POST" and not request.user.is_superuser:
            raise PermissionDenied
        return super().history_form_view(request, object_id, version_id, extra_context)


@admin.register(Tenant)
class TenantAdmin(EditableHistoryAdmin):
    list_display = ("slug", "name", "naming_pattern", "secrets_by_team", "created_at")
    search_fields = ("slug", "name")


@admin.register(Team)
class TeamAdmin(EditableHistoryAdmin):
    list_display = ("slug", "name", "tenant")
    list_filter = ("tenant",)
    search_fields = ("slug", "name")
    list_select_related = ("tenant",)


@admin.register(Environment)
class EnvironmentAdmin(EditableHistoryAdmin):
    list_display = ("slug", "name", "tenant", "order", "required_approvals")
    list_filter = ("tenant",)
    list_select_related = ("tenant",)


@admin.register(Scope)
class ScopeAdmin(TenantScopedAdmin):
    tenant_path = "tenant_id"
    list_display = ("__str__", "tenant", "team", "environment")
    list_filter = ("tenant",)
    list_select_related = ("tenant", "team", "environment")


@admin.register(ScopeUserRole)
class ScopeUserRoleAdmin(EditableHistoryAdmin):
    tenant_path = "content_object__tenant_id"
    list_display = ("user", "permission", "content_object")
    list_select_related = (
        "user",
        "permission",
        "content_object__tenant",
        "content_object__team",
        "content_object__environment",
    )
    search_fields = ("user__username",)


@admin.register(ScopeGroupRole)
class ScopeGroupRoleAdmin(EditableHistoryAdmin):
    tenant_path = "content_object__tenant_id"
    list_display = ("group", "permission", "content_object")
    list_select_related = (
        "group",
        "permission",
        "content_object__tenant",
        "content_object__team",
        "content_object__environment",
    )


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    read_only_what = "audit events are append-only and"
    list_display = ("created_at", "tenant", "seq", "actor_repr", "action", "object_repr")
    list_filter = ("action", "tenant")
    search_fields = ("actor_repr", "object_repr")
    date_hierarchy = "created_at"
    list_select_related = ("tenant",)


@admin.register(AuditChain)
class AuditChainAdmin(ReadOnlyAdmin):
    read_only_what = "audit chains are written by the audit trail itself and"
    tenant_path = "tenant_id"
    list_display = ("__str__", "tenant", "last_seq", "last_hash")


@admin.register(ServiceAccount)
class ServiceAccountAdmin(ReadOnlyAdmin):
    read_only_what = "service accounts are created by tenant admins through the API and"
    list_display = ("__str__", "tenant", "user", "created_at", "created_by")
    list_select_related = ("tenant", "user", "created_by")


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    read_only_what = "API tokens are issued and revoked through the API and"
    tenant_path = "user__service_account__tenant_id"
    # The hash is useless without the token, but there is no reason to show it either.
    exclude = ("key_hash",)
    list_display = ("prefix", "user", "name", "created_at", "expires_at", "revoked_at", "last_used_at")
    list_select_related = ("user",)


@admin.register(SiemCursor)
class SiemCursorAdmin(ReadOnlyAdmin):
    read_only_what = "SIEM cursors are moved by manage.py forward_audit and"
    list_display = ("destination", "chain", "last_seq", "updated_at", "last_error")
