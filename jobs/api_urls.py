"""REST API routes of jobs and their configuration (under /api/v1/, assembled by governor/api_urls.py)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from .api import JobViewSet, RunViewSet
from .config_api import HolidayCalendarViewSet, MaintenanceWindowViewSet, PoolViewSet
from .preview_api import SchedulePreviewView
from .run_export_views import RunExportView

router = SimpleRouter()
router.register("jobs", JobViewSet, basename="api-job")
router.register("runs", RunViewSet, basename="api-run")
router.register("maintenance-windows", MaintenanceWindowViewSet, basename="api-maintenance-window")
router.register("holiday-calendars", HolidayCalendarViewSet, basename="api-holiday-calendar")
router.register("pools", PoolViewSet, basename="api-pool")

urlpatterns = [
    # Before the routers (governor/api_urls.py), so "export" is never read as a run id.
    path("runs/export/", RunExportView.as_view(), name="api-run-export"),
    path("schedule-preview/", SchedulePreviewView.as_view(), name="api-schedule-preview"),
]
