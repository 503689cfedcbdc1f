"""The REST API (/api/...): each app's routes under v1/, one router root over all of them, the OpenAPI schema."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from approvals import api_urls as approvals_api
from governance import api_urls as governance_api
from jobs import api_urls as jobs_api
from monitoring import api_urls as monitoring_api
from notifications import api_urls as notifications_api

# One DefaultRouter over the apps' viewsets, so /api/v1/ lists every collection.
router = DefaultRouter()
for app_router in (
    governance_api.router,
    jobs_api.router,
    approvals_api.router,
    monitoring_api.router,
    notifications_api.router,
):
    for prefix, viewset, basename in app_router.registry:
        router.register(prefix, viewset, basename=basename)

urlpatterns = [
    path("v1/", include("governance.api_urls")),
    path("v1/", include("jobs.api_urls")),
    path("v1/", include("approvals.api_urls")),
    path("v1/", include("manifests.api_urls")),
    path("v1/", include("monitoring.api_urls")),
    path("v1/", include("notifications.api_urls")),
    path("v1/insights/", include("insights.api_urls")),
    path("v1/", include(router.urls)),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's bootstrap as a script of its own (?script): no inline script.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
]
