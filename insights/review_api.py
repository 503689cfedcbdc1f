"""The review pages' data as JSON: GET /api/v1/insights/rightsizing/, /zombies/, /overhead/ (what the
caller may see, with the pages' parameters; a bad one answers 400 naming it) and
POST /api/v1/insights/rightsizing/<job id>/propose/ (a draft change request, author role)."""

from __future__ import annotations

from collections.abc import Sequence

from django.core.exceptions import ValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.access import Action, can, get_object_or_404_for
from governance.services import AccessDenied

from . import overhead, rightsizing, zombies
from .common import (
    MIN_SAMPLES,
    PERIODS,
    THRESHOLD,
    TOP,
    WINDOW,
    FloatParam,
    IntParam,
    live_jobs,
    parse_params,
)


def _parameters(specs: Sequence[IntParam | FloatParam]) -> list[OpenApiParameter]:
    return [
        OpenApiParameter(spec.name, int if isinstance(spec, IntParam) else float, description=spec.help)
        for spec in specs
    ]


ERRORS = OpenApiResponse(OpenApiTypes.OBJECT, description="The parameters that do not parse or are out of range.")


class RightsizingView(APIView):
    """Jobs whose limits or timeout are far from what their runs use, with the evidence."""

    specs: list[IntParam | FloatParam] = [WINDOW, MIN_SAMPLES, THRESHOLD]

    @extend_schema(
        operation_id="insights_rightsizing",
        parameters=_parameters(specs),
        responses={200: OpenApiTypes.OBJECT, 400: ERRORS},
    )
    def get(self, request):
        values = parse_params(request.query_params, self.specs)
        return Response(rightsizing.as_json(rightsizing.review(request.user, **values)))


class RightsizingProposeView(APIView):
    """Open a draft change request setting the job's memory_mb, cpu_seconds and/or timeout_seconds."""

    @extend_schema(
        operation_id="insights_rightsizing_propose",
        request=OpenApiTypes.OBJECT,
        responses={201: OpenApiTypes.OBJECT, 400: ERRORS, 403: OpenApiTypes.OBJECT, 404: OpenApiTypes.OBJECT},
    )
    def post(self, request, pk: int):
        job = get_object_or_404_for(request.user, Action.VIEW, live_jobs(), pk=pk)
        self.denial_target = job
        if not can(request.user, Action.PROPOSE, job):
            raise AccessDenied("You need the author role for this team and environment to propose changes.")
        data = request.data
        if not hasattr(data, "get"):
            raise ValidationError(
                {"non_field_errors": ["Send an object with memory_mb, cpu_seconds or timeout_seconds."]}
            )
        values = rightsizing.proposal_values(data)
        change = rightsizing.propose_right_size(
            job, actor=request.user, values=values, justification=str(data.get("justification") or "")
        )
        return Response(
            {"change_request": change.pk, "status": change.status, "proposed": values, "job_id": job.pk}, status=201
        )


class ZombiesView(APIView):
    """Jobs that run for nobody or not at all, each with a suggested action."""

    specs = [WINDOW, PERIODS]

    @extend_schema(
        operation_id="insights_zombies",
        parameters=_parameters(specs),
        responses={200: OpenApiTypes.OBJECT, 400: ERRORS},
    )
    def get(self, request):
        values = parse_params(request.query_params, self.specs)
        return Response(zombies.as_json(zombies.review(request.user, **values)))


class OverheadView(APIView):
    """Run overhead per day and environment, the scheduler's lag, and the costliest jobs."""

    specs = [WINDOW, TOP]

    @extend_schema(
        operation_id="insights_overhead",
        parameters=_parameters(specs),
        responses={200: OpenApiTypes.OBJECT, 400: ERRORS},
    )
    def get(self, request):
        values = parse_params(request.query_params, self.specs)
        return Response(overhead.as_json(overhead.review(request.user, **values)))
