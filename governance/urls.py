"""URL map: the browser UI at /, the REST API at /api/, the Django admin at /admin/."""

from django.contrib import admin
from django.urls import include, path

from jobs import heartbeat_views

urlpatterns = [
    # Pings from jobs (no login: the unguessable token is the credential).
    path("hb/<uuid:token>", heartbeat_views.ping_success, name="ping"),
    path("hb/<uuid:token>/start", heartbeat_views.ping_start, name="ping-start"),
    path("hb/<uuid:token>/fail", heartbeat_views.ping_fail, name="ping-fail"),
    path("hb/<uuid:token>/<int:exit_code>", heartbeat_views.ping_exit_code, name="ping-exit-code"),
    path("admin/", admin.site.urls),
    path("api/", include("governance.api_urls")),
    path("", include("governance.ui_urls")),
]
