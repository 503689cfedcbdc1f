"""REST API routes (/api/v1/...) and the OpenAPI schema."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from approvals.api import ChangeRequestViewSet
from governance.api import (
    AuditEventViewSet,
    EnvironmentViewSet,
    ObtainTokenView,
    TeamViewSet,
    TenantViewSet,
)
from governance.export_api import AuditExportView
from governance.token_api import ApiTokenViewSet, ServiceAccountViewSet
from jobs import manifest_api
from jobs.api import JobViewSet, RunViewSet
from jobs.config_api import HolidayCalendarViewSet, MaintenanceWindowViewSet, PoolViewSet
from jobs.preview_api import SchedulePreviewView

router = DefaultRouter()
# Route names carry an "api-" prefix so they never clash with the browser UI's.
router.register("tenants", TenantViewSet, basename="api-tenant")
router.register("teams", TeamViewSet, basename="api-team")
router.register("environments", EnvironmentViewSet, basename="api-environment")
router.register("jobs", JobViewSet, basename="api-job")
router.register("runs", RunViewSet, basename="api-run")
router.register("change-requests", ChangeRequestViewSet, basename="api-change-request")
router.register("maintenance-windows", MaintenanceWindowViewSet, basename="api-maintenance-window")
router.register("holiday-calendars", HolidayCalendarViewSet, basename="api-holiday-calendar")
router.register("pools", PoolViewSet, basename="api-pool")
router.register("audit-events", AuditEventViewSet, basename="api-audit-event")
router.register("auth/tokens", ApiTokenViewSet, basename="api-token-admin")
router.register("service-accounts", ServiceAccountViewSet, basename="api-service-account")

urlpatterns = [
    path("v1/auth/token/", ObtainTokenView.as_view(), name="api-token"),
    path("v1/schedule-preview/", SchedulePreviewView.as_view(), name="api-schedule-preview"),
    # Before the router, so "export" is never read as an event id.
    path("v1/audit-events/export/", AuditExportView.as_view(), name="api-audit-export"),
    path("v1/", include(router.urls)),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's bootstrap as a script of its own (?script): no inline script.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("v1/manifests/plan/", manifest_api.ManifestPlanView.as_view(), name="api-manifest-plan"),
    path("v1/manifests/apply/", manifest_api.ManifestApplyView.as_view(), name="api-manifest-apply"),
    path("v1/manifests/export/", manifest_api.ManifestExportView.as_view(), name="api-manifest-export"),
]
