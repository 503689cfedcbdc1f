"""GET /api/v1/audit-events/export/: the audit trail the caller may see, streamed as CSV or JSON Lines."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from . import export
from .access import Action, restrict, tenant_ids
from .models import AuditEvent


class StreamedExportView(APIView):
    """An export endpoint: ``?format=`` names the file format (csv, jsonl), never a DRF renderer;
    errors (400 field errors) are JSON."""

    renderer_classes = [JSONRenderer]

    def perform_content_negotiation(self, request, force=False):
        renderer = JSONRenderer()
        return renderer, renderer.media_type


class AuditExportView(StreamedExportView):
    """Stream audit events visible to the caller; the export itself is audited."""

    @extend_schema(
        operation_id="audit_events_export",
        parameters=[
            OpenApiParameter("format", str, enum=list(export.FORMATS), description="csv (default) or jsonl"),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="ISO 8601, inclusive"),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="ISO 8601, inclusive"),
            OpenApiParameter("actor", str, description="username of the actor"),
            OpenApiParameter("action", str, description="action, or several separated by commas"),
            OpenApiParameter("object", str, description="the object as <type>:<id> (job:42, jobs.job:42) or a type"),
            OpenApiParameter("object_type", str, description="instead of object: the type (job or jobs.job)"),
            OpenApiParameter("object_id", str, description="with object_type: the object's id"),
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV"),
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.STR, description="JSON Lines"),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="field errors"),
        },
    )
    def get(self, request):
        try:
            filters = export.parse_filters(request.query_params)
        except ValidationError as exc:
            return Response(exc.message_dict, status=400)
        user = request.user
        chains = export.all_chain_ids() if user.is_superuser else tenant_ids(user, Action.VIEW)
        export.record_export(
            actor=user, tenant_ids=chains, filters=filters, surface="api", ip=request.META.get("REMOTE_ADDR")
        )
        queryset = export.filter_events(restrict(AuditEvent.objects.all(), user, Action.VIEW), filters)
        return export.attachment(export.stream(queryset, filters["format"]), filters["format"], "audit")
