"""URL map: the browser UI at /, the REST API at /api/, the Django admin at /admin/.

Each app owns its routes (``<app>/urls.py`` for the UI, ``<app>/api_urls.py`` for the API); only the
pages that compose several apps (the dashboard) are routed here.
"""

from django.contrib import admin
from django.urls import include, path

from . import health, metrics, views

urlpatterns = [
    # Answered by governor.health.HealthCheckMiddleware before any other middleware; routed too, so
    # the paths are reserved and reversible.
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/", include("governor.api_urls")),
    path("metrics", metrics.metrics, name="metrics"),
    path("", views.dashboard, name="dashboard"),
    path("", include("governance.urls")),
    path("", include("jobs.urls")),
    path("", include("approvals.urls")),
    path("", include("monitoring.urls")),
    path("", include("notifications.urls")),
    path("insights/", include("insights.urls")),
]
