"""URL map: the browser UI at /, the REST API at /api/, the Django admin at /admin/."""

from django.contrib import admin
from django.urls import include, path

from jobs import heartbeats

urlpatterns = [
    # Pings from jobs (no login: the unguessable token is the credential).
    path("hb/<uuid:token>", heartbeats.ping_success, name="ping"),
    path("hb/<uuid:token>/start", heartbeats.ping_start, name="ping-start"),
    path("hb/<uuid:token>/fail", heartbeats.ping_fail, name="ping-fail"),
    path("hb/<uuid:token>/<int:exit_code>", heartbeats.ping_exit_code, name="ping-exit-code"),
    path("admin/", admin.site.urls),
    path("api/", include("governance.api_urls")),
    path("", include("governance.ui_urls")),
]
