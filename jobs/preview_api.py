"""GET /api/v1/schedule-preview/: the next fire instants of a schedule, for any signed-in user."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.access import Action, get_object_or_404_for

from . import firing, preview, schedule
from .models import Job

# The query parameter each schedule error is about.
PARAM_OF = {"timezone": "tz"}


class PreviewEntrySerializer(serializers.Serializer):
    """One upcoming fire with ``detail=true``, and what the scheduler will do with it (jobs.firing)."""

    utc = serializers.CharField(help_text="The instant in UTC, ISO 8601 ending in Z.")
    local = serializers.CharField(help_text="The same instant on the zone's wall clock, YYYY-MM-DD HH:MM.")
    zone = serializers.CharField(help_text="The zone's abbreviation at that instant (CET, CEST).")
    offset = serializers.CharField(help_text="The UTC offset at that instant, +hh:mm.")
    dst = serializers.CharField(help_text="How daylight saving shaped it, or an empty string.")
    decision = serializers.ChoiceField(
        choices=[firing.FIRE, firing.DEFER, firing.SKIP],
        help_text="fire, defer or skip: the job's holiday calendar, allowed run windows and the maintenance "
        "windows of its tenant and environment, decided as the scheduler does. Without job=, always fire.",
    )
    reason = serializers.CharField(help_text="Why it is deferred or skipped (the reason the run will carry).")
    deferred_to = serializers.CharField(allow_null=True, help_text="When a deferred run is released (UTC, Z).")
    concurrency = serializers.CharField(
        help_text="What the job's concurrency policy does if the previous run is still active (a note, not a "
        "decision: it depends on the runs live then). Empty without job=."
    )
    cause = serializers.ChoiceField(
        choices=["", firing.HOLIDAY, firing.MAINTENANCE, firing.ALLOWED_WINDOWS], help_text="What decided it."
    )
    windows = serializers.ListField(child=serializers.CharField(), help_text="The maintenance windows involved.")


PREVIEW_RESPONSE = OpenApiResponse(
    PreviewEntrySerializer(many=True),
    description="With detail=true: these objects. Without: a JSON array of the `utc` strings, in the same order "
    "(deferred and skipped instants included).",
)


class SchedulePreviewView(APIView):
    """Preview a cron expression in a time zone: a JSON array of UTC instants (ISO 8601, Z)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="schedule_preview",
        parameters=[
            OpenApiParameter("cron", str, description="5-field cron expression (required unless job is given)."),
            OpenApiParameter("tz", str, description="IANA time zone (required unless job is given)."),
            OpenApiParameter("after", OpenApiTypes.DATETIME, description="Start after this instant; default now."),
            OpenApiParameter("count", int, description=f"How many instants, 1-{preview.MAX_COUNT} (default 10)."),
            OpenApiParameter("gap", str, enum=list(schedule.GAP_POLICIES), description="DST gap policy."),
            OpenApiParameter("overlap", str, enum=list(schedule.OVERLAP_POLICIES), description="DST overlap policy."),
            OpenApiParameter("job", int, description="A job you can see: H is hashed from it; its schedule fills in."),
            OpenApiParameter(
                "detail",
                bool,
                description="Objects with local time, DST notes and the scheduler's decision (fire / defer / skip, "
                "reason, deferred_to) instead of strings.",
            ),
        ],
        responses={200: PREVIEW_RESPONSE, 400: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        params = request.query_params
        job = None
        if params.get("job"):
            if not params["job"].isdigit():
                return Response({"job": ["Must be a job id (a whole number)."]}, status=400)
            job = get_object_or_404_for(request.user, Action.VIEW, Job.objects.all(), pk=int(params["job"]))
        query = preview.ScheduleQuery.of(
            job,
            cron=params.get("cron", ""),
            tz=params.get("tz", ""),
            gap=params.get("gap", ""),
            overlap=params.get("overlap", ""),
        )
        errors: dict[str, list[str]] = {}
        if not (query.cron or "").strip():
            errors["cron"] = ["This parameter is required, e.g. cron=30 2 * * *."]
        if not (query.tz or "").strip():
            errors["tz"] = ["This parameter is required, e.g. tz=Europe/Berlin."]
        count = preview.DEFAULT_COUNT
        if params.get("count"):
            try:
                count = int(params["count"])
            except ValueError:
                errors["count"] = [f"Must be a whole number between 1 and {preview.MAX_COUNT}."]
        if errors:
            return Response(errors, status=400)
        try:
            after = preview.parse_instant(params["after"]) if params.get("after") else None
            entries = query.preview(after=after, count=count)
        except schedule.ScheduleError as exc:
            return Response({PARAM_OF.get(exc.field, exc.field): [str(exc)]}, status=400)
        if params.get("detail", "").lower() in {"1", "true", "yes"}:
            return Response(entries)
        return Response([entry["utc"] for entry in entries])
