"""Django admin for platform administrators.

Tenancy objects are editable by superusers only. Everything that change control
governs (jobs, runs, change requests, reviews, the audit trail, approval
policies, an environment's required approvals) is read-only here: the admin is
never a way around four-eyes review. What superusers may still edit (tenants,
teams, environments, scopes, role grants, users and groups, execution
allow-lists) lands in the audit chain of each tenant it touches, through
``AuditedAdminMixin``, in the admin view's own transaction. Non-superuser staff
see, read-only, exactly the rows ``governance.access.restrict`` gives them.
docs/operations.md has the table of every registered model and its treatment.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.db import router, transaction
from django.db.models import Model
from django.db.models.deletion import Collector
from django_q.admin import ScheduleAdmin
from django_q.models import Schedule
from simple_history.admin import SimpleHistoryAdmin

from . import audit
from .access import Action, restrict, tenant_ids
from .backends import permission_name
from .models import (
    ApiToken,
    AuditAction,
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


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    return str(value)


class AuditedAdminMixin:
    """Every admin write (add, change, delete, bulk delete, history revert) is recorded in the audit
    chain of each tenant the object belongs to, before and after the write (the platform chain when
    none), in the same transaction, so it reaches the SIEM like any other event. Fields the admin
    shows read-only stay unchanged on every path, and no other bulk action is offered.

    ``audit_tenant_paths``: lookups from the model to its tenant id(s); by default the tenant field of
    ``ACCESS_FIELDS`` or the admin's ``tenant_path``. ``audit_tenant_fixed``: the object belongs to
    one tenant for life (moving it to another tenant is refused); False for users and groups, whose
    tenants are those they hold roles in.
    """

    model: Any  # the ModelAdmin it is mixed into sets it
    audit_tenant_paths: tuple[str, ...] = ()
    audit_tenant_fixed = True
    audit_redacted_fields = frozenset({"password"})

    # --- tenants and values -------------------------------------------------------------------
    def _tenant_paths(self) -> tuple[str, ...]:
        if self.audit_tenant_paths:
            return self.audit_tenant_paths
        access = getattr(self.model, "ACCESS_FIELDS", None)
        if access:
            return (access[0],)
        path = getattr(self, "tenant_path", None)
        return (path,) if path else ()

    def audit_tenant_ids(self, pk) -> set[int | None]:
        manager = self.model._default_manager
        found: set[int | None] = set()
        for path in self._tenant_paths():
            found |= set(manager.filter(pk=pk).values_list(path, flat=True))
        found.discard(None)
        return found or {None}

    def _snapshot(self, obj: Model) -> dict[str, Any]:
        values = {}
        for field in [*obj._meta.concrete_fields, *obj._meta.many_to_many]:
            if field.primary_key:
                continue
            if field.many_to_many:
                value = sorted(o.pk for o in field.value_from_object(obj)) if obj.pk is not None else []
            else:
                value = _jsonable(field.value_from_object(obj))
            values[field.name] = value
        return values

    def _diff(self, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        changes = {}
        for name, value in after.items():
            if before and before.get(name) == value:
                continue
            changes[name] = "changed" if name in self.audit_redacted_fields else [before.get(name), value]
        return changes

    def _record(self, request, obj: Model, action: str, tenants: set[int | None], data: dict[str, Any]) -> None:
        for tenant_id in sorted(tenants, key=lambda t: (t is not None, t or 0)):
            audit.record(
                action,
                actor=request.user,
                obj=obj,
                tenant=tenant_id,
                data={"via": "admin", "model": obj._meta.label_lower, **data},
                ip=request.META.get("REMOTE_ADDR") or None,
            )

    # --- add and change -----------------------------------------------------------------------
    def save_model(self, request, obj, form, change):
        before_tenants: set[int | None] = set()
        before: dict[str, Any] = {}
        if change:
            stored = self.model._default_manager.get(pk=obj.pk)
            fields = {f.name: f for f in obj._meta.concrete_fields}
            for name in self.get_readonly_fields(request, obj):
                field = fields.get(name)
                if field is not None and field.value_from_object(stored) != field.value_from_object(obj):
                    raise PermissionDenied(f"{field.verbose_name} is read-only in the admin.")
            before_tenants = self.audit_tenant_ids(obj.pk)
            before = self._snapshot(stored)
        obj._governor_admin_audit = (before_tenants, before)
        super().save_model(request, obj, form, change)

    def _record_write(self, request, obj, action: str, message) -> None:
        before_tenants, before = getattr(obj, "_governor_admin_audit", (set(), None))
        after_tenants = self.audit_tenant_ids(obj.pk)
        if self.audit_tenant_fixed and before_tenants and before_tenants != after_tenants:
            raise PermissionDenied("An object never moves to another tenant.")
        # Without a snapshot (e.g. the user admin's password form) the admin's own message says what changed.
        changes = self._diff(before or {}, self._snapshot(obj)) if before is not None else {}
        data = {"changes": changes, "message": _jsonable(message)}
        self._record(request, obj, action, before_tenants | after_tenants, data)

    def log_addition(self, request, obj, message):
        entry = super().log_addition(request, obj, message)
        self._record_write(request, obj, AuditAction.ADMIN_CREATED, message)
        return entry

    def log_change(self, request, obj, message):
        entry = super().log_change(request, obj, message)
        self._record_write(request, obj, AuditAction.ADMIN_CHANGED, message)
        return entry

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        # simple_history saves a revert outside a transaction; its audit event must commit with it.
        with transaction.atomic(using=router.db_for_write(self.model)):
            return super().history_form_view(request, object_id, version_id, extra_context)

    # --- delete -------------------------------------------------------------------------------
    def _record_deletion(self, request, obj: Model) -> None:
        collector = Collector(using=router.db_for_write(self.model))
        collector.collect([obj])
        cascade = {
            model._meta.label_lower: len(rows) for model, rows in collector.data.items() if model is not self.model
        }
        snapshot = {
            name: ("redacted" if name in self.audit_redacted_fields else value)
            for name, value in self._snapshot(obj).items()
        }
        data = {"deleted": snapshot, "cascade": cascade}
        self._record(request, obj, AuditAction.ADMIN_DELETED, self.audit_tenant_ids(obj.pk), data)

    def delete_model(self, request, obj):
        with transaction.atomic(using=router.db_for_write(self.model)):
            self._record_deletion(request, obj)
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic(using=router.db_for_write(self.model)):
            for obj in queryset:
                self._record_deletion(request, obj)
            super().delete_queryset(request, queryset)

    def get_actions(self, request):
        # Only the bulk delete, which goes through delete_queryset above; any other action would not be audited.
        actions = super().get_actions(request)
        return {name: action for name, action in actions.items() if name == "delete_selected"}


class TenantScopedAdmin(AuditedAdminMixin, admin.ModelAdmin):
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
            return user.has_perm(permission_name(Action.VIEW, obj), obj)  # governance.backends: access.can
        return self.get_queryset(request).filter(pk=obj.pk).exists()

    def has_add_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser


class NoWritesMixin:
    """Nobody adds, changes or deletes through this admin, superusers included; no bulk actions."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        return {}


class ReadOnlyAdmin(NoWritesMixin, TenantScopedAdmin):
    """Governed by change control: nobody adds, changes or deletes here, superusers included."""

    read_only_what = "these records"

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
    list_display = ("slug", "name", "naming_pattern", "secrets_by_team", "run_retention_days", "created_at")
    search_fields = ("slug", "name")

    def has_delete_permission(self, request, obj=None):
        # A tenant's audit chain outlives it: tenants are never deleted.
        return False


@admin.register(Team)
class TeamAdmin(EditableHistoryAdmin):
    list_display = ("slug", "name", "tenant")
    list_filter = ("tenant",)
    search_fields = ("slug", "name")
    list_select_related = ("tenant",)


@admin.register(Environment)
class EnvironmentAdmin(EditableHistoryAdmin):
    list_display = ("slug", "name", "tenant", "order", "required_approvals")
    # Changed only by an approved policy change request (approvals.services), superusers included.
    readonly_fields = ("required_approvals",)
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


class _ScheduleAdmin(NoWritesMixin, ScheduleAdmin):
    """django-q2 schedules run any Python function in the workers, outside change control; Governor
    schedules jobs itself and uses none, so they are read-only."""


class _UserAdmin(AuditedAdminMixin, UserAdmin):
    """Users and their groups: group membership grants the group's roles, so edits are audited in
    every tenant the user holds a role in, before and after (the platform chain when none)."""

    audit_tenant_paths = (
        "scopeuserrole__content_object__tenant_id",
        "groups__scopegrouprole__content_object__tenant_id",
    )
    audit_tenant_fixed = False

    def user_change_password(self, request, id, form_url=""):
        with transaction.atomic(using=router.db_for_write(self.model)):
            return super().user_change_password(request, id, form_url)


class _GroupAdmin(AuditedAdminMixin, GroupAdmin):
    audit_tenant_paths = ("scopegrouprole__content_object__tenant_id",)
    audit_tenant_fixed = False


for _model, _admin in ((User, _UserAdmin), (Group, _GroupAdmin), (Schedule, _ScheduleAdmin)):
    admin.site.unregister(_model)
    admin.site.register(_model, _admin)
