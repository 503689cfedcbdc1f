"""REST API routes of jobs as code (under /api/v1/, included by governor/api_urls.py)."""

from django.urls import path

from . import api

urlpatterns = [
    path("manifests/plan/", api.ManifestPlanView.as_view(), name="api-manifest-plan"),
    path("manifests/apply/", api.ManifestApplyView.as_view(), name="api-manifest-apply"),
    path("manifests/export/", api.ManifestExportView.as_view(), name="api-manifest-export"),
]
