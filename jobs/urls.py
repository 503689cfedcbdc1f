"""Browser UI routes of jobs and runs, and the heartbeat pings (included by governor/urls.py)."""

from django.urls import include, path

from . import heartbeat_views, run_export_views, views

urlpatterns = [
    # The run console: runs list, what runs now, and the live fragments pages poll.
    path("", include("jobs.watch_urls")),
    # Pings from jobs (no login: the unguessable token is the credential).
    path("hb/<uuid:token>", heartbeat_views.ping_success, name="ping"),
    path("hb/<uuid:token>/start", heartbeat_views.ping_start, name="ping-start"),
    path("hb/<uuid:token>/fail", heartbeat_views.ping_fail, name="ping-fail"),
    path("hb/<uuid:token>/<int:exit_code>", heartbeat_views.ping_exit_code, name="ping-exit-code"),
    path("jobs/", views.job_list, name="job_list"),
    path("jobs/<int:pk>/", views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/trigger/", views.job_trigger, name="job_trigger"),
    path("jobs/<int:pk>/pause/", views.job_pause, name="job_pause"),
    path("jobs/<int:pk>/resume/", views.job_resume, name="job_resume"),
    path("runs/export/", run_export_views.run_export_page, name="run_export"),
    path("runs/<int:pk>/", views.run_detail, name="run_detail"),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="run_cancel"),
    *(
        path(f"runs/<int:pk>/{operation}/", views.run_operate, {"operation": operation}, name=f"run_{operation}")
        for operation in views.RUN_OPERATIONS
    ),
]
