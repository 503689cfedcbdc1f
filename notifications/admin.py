"""Channels and the outbox in the admin. Channels are created through the same checks as the API
(HTTP policy, apprise URL, Vault reference); the outbox and its attempts are read-only: the monitor
writes them."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from governance.admin import ReadOnlyAdmin, TenantScopedAdmin

from .channels import clean_channel
from .models import Channel, DeliveryAttempt, Notification


class ChannelAdminForm(forms.ModelForm):
    class Meta:
        model = Channel
        fields = ["tenant", "team", "name", "kind", "target", "secret", "enabled"]

    def clean(self):
        data = super().clean()
        tenant = data.get("tenant")
        if tenant is not None and data.get("kind"):
            try:
                data.update(
                    clean_channel(
                        tenant=tenant,
                        team=data.get("team"),
                        kind=data["kind"],
                        target=data.get("target", ""),
                        secret=data.get("secret", ""),
                    )
                )
            except ValidationError as exc:
                for field, messages in exc.message_dict.items():
                    for message in messages:
                        self.add_error(field if field in self.fields else None, message)
        return data


@admin.register(Channel)
class ChannelAdmin(TenantScopedAdmin):
    form = ChannelAdminForm
    list_display = ("name", "tenant", "team", "kind", "enabled", "created_at")
    list_filter = ("kind", "enabled", "tenant")
    search_fields = ("name",)
    list_select_related = ("tenant", "team")

    def has_delete_permission(self, request, obj=None):
        # Notifications point at their channel (the history stays): disable it instead.
        return False


class AttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ("at", "ok", "status_code", "duration_ms", "error")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    read_only_what = "notifications are queued by Governor and delivered by the monitor; they"
    list_display = ("id", "subject", "tenant", "channel", "user", "state", "attempts", "next_attempt_at", "last_error")
    list_filter = ("state", "tenant")
    search_fields = ("subject", "dedupe_key", "key")
    list_select_related = ("tenant", "channel", "user")
    inlines = [AttemptInline]
