"""Change requests and reviews in the admin: read-only; reviews happen in the UI or API."""

from django.contrib import admin

from governance.admin import ReadOnlyAdmin, ReadOnlyHistoryAdmin

from .models import ApprovalPolicy, ChangeRequest, Comment, FreezeWindow, PostReview, Review


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


@admin.register(ApprovalPolicy)
class ApprovalPolicyAdmin(ReadOnlyHistoryAdmin):
    read_only_what = "approval policies are governed themselves: they"
    list_display = (
        "environment",
        "criticality",
        "required_approvals",
        "separation_of_duties",
        "pause_requires_change",
        "updated_at",
    )
    list_filter = ("tenant",)
    list_select_related = ("environment", "environment__tenant")


@admin.register(FreezeWindow)
class FreezeWindowAdmin(ReadOnlyHistoryAdmin):
    read_only_what = "freeze windows are created by tenant admins through the service, so they are audited; they"
    list_display = ("__str__", "tenant", "environment", "starts_at", "ends_at", "created_by")
    list_filter = ("tenant",)
    list_select_related = ("tenant", "environment", "created_by")


@admin.register(Comment)
class CommentAdmin(ReadOnlyAdmin):
    read_only_what = "comments are written on the change request page; they"
    list_display = ("__str__", "change_request", "author", "revision", "created_at")
    list_select_related = ("change_request", "author")


@admin.register(PostReview)
class PostReviewAdmin(ReadOnlyHistoryAdmin):
    read_only_what = "post-reviews of emergency changes"
    list_display = ("__str__", "change_request", "reviewer", "reviewed_at")
    list_select_related = ("change_request", "reviewer")
