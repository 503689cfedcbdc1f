"""REST API routes of governance (under /api/v1/, assembled by governor/api_urls.py)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from .api import AuditEventViewSet, EnvironmentViewSet, ObtainTokenView, TeamViewSet, TenantViewSet
from .export_api import AuditExportView
from .token_api import ApiTokenViewSet, ServiceAccountViewSet

# Route names carry an "api-" prefix so they never clash with the browser UI's.
router = SimpleRouter()
router.register("tenants", TenantViewSet, basename="api-tenant")
router.register("teams", TeamViewSet, basename="api-team")
router.register("environments", EnvironmentViewSet, basename="api-environment")
router.register("audit-events", AuditEventViewSet, basename="api-audit-event")
router.register("auth/tokens", ApiTokenViewSet, basename="api-token-admin")
router.register("service-accounts", ServiceAccountViewSet, basename="api-service-account")

# Included before the routers, so "export" is never read as an event id.
urlpatterns = [
    path("auth/token/", ObtainTokenView.as_view(), name="api-token"),
    path("audit-events/export/", AuditExportView.as_view(), name="api-audit-export"),
]
