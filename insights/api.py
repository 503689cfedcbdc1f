"""Insights API: the data of the pages as JSON (GET /api/v1/insights/capacity/, /herds/)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.utc import isoz

from . import capacity, herds
from .common import HERD_THRESHOLD, HORIZON, ParamError, scope_for
from .views import herds_entry

TENANT = OpenApiParameter("tenant", str, description="Tenant slug (default: the first you can see).")


class CapacityView(APIView):
    """Expected concurrency per 15-minute bucket per pool and environment, daily peaks (month end,
    quarter end, holidays) and the episodes where a pool's expected concurrency exceeds its slots."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="insights_capacity",
        parameters=[
            TENANT,
            OpenApiParameter("horizon", int, description=HORIZON.help),
            OpenApiParameter("pool", str, description="A pool name ('-': jobs without a pool)."),
            OpenApiParameter("environment", str, description="An environment slug."),
            OpenApiParameter("series", bool, description="Include the 15-minute series (p50, p90)."),
        ],
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        params = request.query_params
        scope = scope_for(request.user, params)
        errors: dict[str, list[str]] = {}
        horizon = capacity.DEFAULT_HORIZON
        pool = environment = None
        try:
            horizon = capacity.parse_horizon(params)
        except ParamError as exc:
            errors.update(exc.as_dict())
        try:
            pool, environment = capacity.parse_filters(scope, params)
        except ParamError as exc:
            errors.update(exc.as_dict())
        if errors:
            return Response(errors, status=400)
        found = capacity.read(capacity.entry_for(scope, horizon), scope, pool, environment)
        series = params.get("series", "").lower() in {"1", "true", "yes"}
        return Response(
            {
                "tenant": scope.tenant.slug,
                "horizon_days": found["horizon_days"],
                "computed_at": isoz(found["computed_at"]),
                "start": isoz(found["start"]),
                "bucket_seconds": 900,
                "pools": [
                    {
                        "pool": g["pool"],
                        "environment": g["environment"],
                        "slots": g["slots"],
                        "peak_p50": g["peak_p50"],
                        "peak_p90": g["peak_p90"],
                        "overflow_buckets": g["overflow_buckets"],
                        "days": g["days"],
                        **(
                            {"p50": [round(v, 3) for v in g["p50"]], "p90": [round(v, 3) for v in g["p90"]]}
                            if series
                            else {}
                        ),
                    }
                    for g in found["groups"]
                ],
                "overflows": [{k: v for k, v in e.items() if k != "env"} for e in found["episodes"]],
                "overflows_truncated": found["episodes_truncated"],
                "peak_days": found["peak_days"],
            }
        )


class HerdsView(APIView):
    """Starts per minute of the day (UTC, average per day over the next 30 days), the hotspots above
    ``threshold`` with each job's suggested H rewrite, and the curve the rewrites would give."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="insights_herds",
        parameters=[
            TENANT,
            OpenApiParameter("threshold", float, description=HERD_THRESHOLD.help),
        ],
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        scope = scope_for(request.user, request.query_params)
        try:
            threshold = herds.parse_threshold(request.query_params)
        except ParamError as exc:
            return Response(exc.as_dict(), status=400)
        found = herds.analyse(herds_entry(scope), scope, threshold)
        return Response(
            {
                "tenant": scope.tenant.slug,
                "threshold": threshold,
                "days": found["days"],
                "computed_at": isoz(found["computed_at"]),
                "start": found["start"],
                "peak": found["peak"],
                "peak_after": found["peak_after"],
                "hotspots": found["hotspots"],
                "starts_per_minute": found["curve"],
                "flattened": found["flattened"],
            }
        )
