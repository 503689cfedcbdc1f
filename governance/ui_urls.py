"""Browser UI routes."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from approvals import config_views, control_views
from approvals import views as approval_views
from jobs import views as job_views

from . import views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.dashboard, name="dashboard"),
    path("", include("jobs.watch_urls")),
    path("audit/", views.audit_list, name="audit_list"),
    path("jobs/", job_views.job_list, name="job_list"),
    path("jobs/<int:pk>/", job_views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/trigger/", job_views.job_trigger, name="job_trigger"),
    path("jobs/<int:pk>/pause/", job_views.job_pause, name="job_pause"),
    path("jobs/<int:pk>/resume/", job_views.job_resume, name="job_resume"),
    path("jobs/<int:pk>/propose/", approval_views.change_edit, name="change_edit"),
    path("jobs/<int:pk>/propose-deletion/", approval_views.change_delete, name="change_delete"),
    path("jobs/<int:pk>/propose-pause/", approval_views.change_pause, {"paused": True}, name="change_pause"),
    path("jobs/<int:pk>/propose-resume/", approval_views.change_pause, {"paused": False}, name="change_resume"),
    path("runs/<int:pk>/", job_views.run_detail, name="run_detail"),
    path("runs/<int:pk>/cancel/", job_views.run_cancel, name="run_cancel"),
    *(
        path(f"runs/<int:pk>/{operation}/", job_views.run_operate, {"operation": operation}, name=f"run_{operation}")
        for operation in job_views.RUN_OPERATIONS
    ),
    path("changes/", approval_views.change_list, name="change_list"),
    path("changes/new/", approval_views.change_new, name="change_new"),
    path("changes/<int:pk>/", approval_views.change_detail, name="change_detail"),
    path("changes/<int:pk>/approve/", approval_views.change_approve, name="change_approve"),
    path("changes/<int:pk>/reject/", approval_views.change_reject, name="change_reject"),
    path("changes/<int:pk>/withdraw/", approval_views.change_withdraw, name="change_withdraw"),
    path("changes/<int:pk>/edit/", approval_views.change_revise, name="change_revise"),
    path("changes/<int:pk>/rebase/", approval_views.change_rebase, name="change_rebase"),
    path("changes/<int:pk>/comment/", approval_views.change_comment, name="change_comment"),
    path("changes/<int:pk>/post-review/", approval_views.change_post_review, name="change_post_review"),
    path("config/", config_views.config_list, name="config_list"),
    path("config/<str:kind>/new/", config_views.config_propose, name="config_new"),
    path("config/<str:kind>/<int:pk>/propose/", config_views.config_propose, name="config_edit"),
    path(
        "config/<str:kind>/<int:pk>/propose-deletion/",
        config_views.config_propose,
        {"delete": True},
        name="config_delete",
    ),
    # Around the review flow: policies, freezes, post-reviews, rollback, promotion, recertification.
    path("changes/post-reviews/", control_views.post_review_list, name="change_post_reviews"),
    path("policies/", control_views.policy_list, name="policy_list"),
    path("policies/propose/", control_views.policy_propose, name="policy_propose"),
    path("freezes/", control_views.freeze_list, name="freeze_list"),
    path("overdue/", control_views.overdue_list, name="overdue_list"),
    path("jobs/<int:pk>/recertify/", control_views.job_recertify, name="job_recertify"),
    path("jobs/<int:pk>/rollback/<int:version>/", control_views.job_rollback, name="job_rollback"),
    path("jobs/<int:pk>/promote/", control_views.job_promote, name="job_promote"),
]
