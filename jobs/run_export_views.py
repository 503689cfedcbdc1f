"""The run export in the API (GET /api/v1/runs/export/) and in the UI (/runs/export/)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponseBadRequest
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.response import Response

from governance.export_api import StreamedExportView

from . import run_export


class RunExportView(StreamedExportView):
    """Stream the runs the caller may see as CSV or JSON Lines; the export is audited."""

    @extend_schema(
        operation_id="runs_export",
        parameters=[
            OpenApiParameter("format", str, enum=["csv", "jsonl"], description="csv (default) or jsonl"),
            OpenApiParameter("job", str, description="job name"),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="scheduled at or after (ISO 8601)"),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="scheduled at or before (ISO 8601)"),
            OpenApiParameter("status", str, description="status, or several separated by commas"),
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV"),
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.STR, description="JSON Lines"),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="field errors"),
        },
    )
    def get(self, request):
        try:
            filters = run_export.parse_filters(request.query_params)
        except ValidationError as exc:
            return Response(exc.message_dict, status=400)
        return run_export.response(request.user, filters, surface="api", ip=request.META.get("REMOTE_ADDR"))


@login_required
def run_export_page(request):
    try:
        filters = run_export.parse_filters(request.GET)
    except ValidationError as exc:
        text = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        return HttpResponseBadRequest(text, content_type="text/plain; charset=utf-8")
    return run_export.response(request.user, filters, surface="ui", ip=request.META.get("REMOTE_ADDR"))
