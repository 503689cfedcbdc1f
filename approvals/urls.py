"""Browser UI routes of change control (included by governor/urls.py)."""

from django.urls import path

from . import config_views, control_views, propose_hints, views

urlpatterns = [
    path("jobs/<int:pk>/propose/", views.change_edit, name="change_edit"),
    path("jobs/<int:pk>/propose-deletion/", views.change_delete, name="change_delete"),
    path("jobs/<int:pk>/propose-pause/", views.change_pause, {"paused": True}, name="change_pause"),
    path("jobs/<int:pk>/propose-resume/", views.change_pause, {"paused": False}, name="change_resume"),
    path("changes/", views.change_list, name="change_list"),
    path("changes/new/", views.change_new, name="change_new"),
    path("changes/hints/", propose_hints.proposal_hints, name="change_hints"),
    path("changes/<int:pk>/", views.change_detail, name="change_detail"),
    path("changes/<int:pk>/approve/", views.change_approve, name="change_approve"),
    path("changes/<int:pk>/reject/", views.change_reject, name="change_reject"),
    path("changes/<int:pk>/resubmit/", views.change_resubmit, name="change_resubmit"),
    path("changes/<int:pk>/withdraw/", views.change_withdraw, name="change_withdraw"),
    path("changes/<int:pk>/edit/", views.change_revise, name="change_revise"),
    path("changes/<int:pk>/rebase/", views.change_rebase, name="change_rebase"),
    path("changes/<int:pk>/comment/", views.change_comment, name="change_comment"),
    path("changes/<int:pk>/post-review/", views.change_post_review, name="change_post_review"),
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
