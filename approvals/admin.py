"""Change requests and reviews in the admin: read-only; reviews happen in the UI or API."""

from django.contrib import admin

from governance.admin import ReadOnlyHistoryAdmin

from .models import ChangeRequest, Review


@admin.register(ChangeRequest)
class ChangeRequestAdmin(ReadOnlyHistoryAdmin):
    read_only_what = "change requests and their reviews"
    list_display = ("__str__", "tenant", "environment", "author", "status", "revision", "created_at")
    list_filter = ("status", "action", "tenant")
    search_fields = ("justification", "ticket")
    list_select_related = ("tenant", "environment", "author", "job")


@admin.register(Review)
class ReviewAdmin(ReadOnlyHistoryAdmin):
    read_only_what = "reviews are given in the Governor UI or API; they"
    list_display = ("__str__", "change_request", "reviewer", "decision", "revision", "created_at")
    list_filter = ("decision",)
    list_select_related = ("change_request", "reviewer")
