"""REST endpoints for jobs as code: plan, apply and export manifests.

Plan and apply take either JSON ``{"files": [{"path", "content"}], "prune",
"commit", "pipeline_url", "ticket", "message"}`` or one raw YAML stream
(``Content-Type: application/yaml``) with those options as query parameters.
"""

from __future__ import annotations

import io
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.access import Action, tenant_ids
from governance.models import Tenant

from .export import export_tenant
from .loader import read_texts
from .plan import ApplyError, apply_plan, make_plan

MAX_FILES = 500


def max_bytes() -> int:
    return settings.GOVERNOR_MANIFEST_MAX_BYTES


class ManifestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"

    def __init__(self, size: int | None = None):
        limit = max_bytes()
        size_text = f"The request body is {size} bytes; at" if size is not None else "At"
        super().__init__(
            f"{size_text} most {limit} bytes of manifests are accepted in one request "
            "(GOVERNOR_MANIFEST_MAX_BYTES): split them. Nothing was read or changed."
        )


def refuse_large_body(request) -> None:
    """413 before anything is parsed when the declared body is over the limit; the parsers also
    stop reading one byte past it (a body without Content-Length)."""
    try:
        size = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        size = 0
    if size > max_bytes():
        raise ManifestTooLarge(size)


def _read_bounded(stream) -> bytes:
    data = stream.read(max_bytes() + 1)
    if len(data) > max_bytes():
        raise ManifestTooLarge()
    return data


class BoundedJSONParser(JSONParser):
    """JSON, read only up to the manifest size limit."""

    def parse(self, stream, media_type=None, parser_context=None):
        return super().parse(io.BytesIO(_read_bounded(stream)), media_type, parser_context)


class YAMLTextParser(BaseParser):
    """A raw manifest stream; parsed (with positions) by the manifest reader, not here."""

    media_type = "application/yaml"

    def parse(self, stream, media_type=None, parser_context=None):
        data = _read_bounded(stream)
        try:
            return {"files": [{"path": "request.yaml", "content": data.decode("utf-8")}]}
        except UnicodeDecodeError:
            raise serializers.ValidationError({"content": ["Manifests must be UTF-8 text."]}) from None


class TextYAMLParser(YAMLTextParser):
    media_type = "text/yaml"


class FileSerializer(serializers.Serializer):
    path = serializers.CharField(max_length=500)
    content = serializers.CharField(allow_blank=True, trim_whitespace=False)


class ManifestRequestSerializer(serializers.Serializer):
    files = FileSerializer(many=True, allow_empty=False, max_length=MAX_FILES)  # type: ignore[call-arg]  # for the list
    prune = serializers.BooleanField(default=False)
    commit = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)
    pipeline_url = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)
    ticket = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
    message = serializers.CharField(max_length=2000, required=False, default="", allow_blank=True)


class ManifestErrorSerializer(serializers.Serializer):
    file = serializers.CharField()
    line = serializers.IntegerField()
    column = serializers.IntegerField()
    message = serializers.CharField()


class ManifestPlanSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    errors = ManifestErrorSerializer(many=True)  # type: ignore[assignment]  # the response field shadows .errors
    changes = serializers.ListField(child=serializers.DictField())
    applied = serializers.ListField(child=serializers.DictField(), required=False)
    summary = serializers.DictField(child=serializers.IntegerField())


_PLAN = ManifestPlanSerializer


class TooLargeSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="Names the limit (GOVERNOR_MANIFEST_MAX_BYTES).")


_TOO_LARGE = TooLargeSerializer


def _options(request) -> dict:
    refuse_large_body(request)
    data = dict(request.data)
    for key in ("prune", "commit", "pipeline_url", "ticket", "message"):
        if key not in data and key in request.query_params:
            data[key] = request.query_params[key]
    serializer = ManifestRequestSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _manifests(options: dict):
    return read_texts([(f["path"], f["content"]) for f in options["files"]])


def _status_for(problems) -> int:
    return status.HTTP_403_FORBIDDEN if any(p.forbidden for p in problems) else status.HTTP_400_BAD_REQUEST


class ManifestPlanView(APIView):
    """What applying these manifests would create, change and delete (with diffs). Changes nothing."""

    parser_classes = [BoundedJSONParser, YAMLTextParser, TextYAMLParser]

    @extend_schema(request=ManifestRequestSerializer, responses={200: _PLAN, 400: _PLAN, 403: _PLAN, 413: _TOO_LARGE})
    def post(self, request):
        options = _options(request)
        plan = make_plan(_manifests(options), actor=request.user, prune=options["prune"])
        body = plan.as_dict()
        return Response(body, status=_status_for(plan.problems) if plan.problems else status.HTTP_200_OK)


class ManifestApplyView(APIView):
    """Apply manifests: ungoverned environments change at once; governed ones get change requests
    (carrying the commit and pipeline URL) whose URLs are returned. Applying twice changes nothing."""

    parser_classes = [BoundedJSONParser, YAMLTextParser, TextYAMLParser]

    @extend_schema(request=ManifestRequestSerializer, responses={200: _PLAN, 400: _PLAN, 403: _PLAN, 413: _TOO_LARGE})
    def post(self, request):
        options = _options(request)
        plan = make_plan(_manifests(options), actor=request.user, prune=options["prune"], for_apply=True)
        problems = plan.problems
        done = []
        if not problems:
            try:
                done = apply_plan(
                    plan,
                    actor=request.user,
                    commit=options["commit"],
                    pipeline_url=options["pipeline_url"],
                    ticket=options["ticket"],
                    message=options["message"],
                )
            except ApplyError as exc:
                problems = exc.problems
        body = plan.as_dict()
        body["ok"] = not problems
        body["errors"] = [p.as_dict() for p in problems]
        body["applied"] = [c.as_dict() for c in done]
        if problems:
            return Response(body, status=_status_for(problems))
        for item in body["applied"]:
            cr = item["change_request"]
            if cr:
                # The caller reached this host: link the request's page on it.
                cr["url"] = request.build_absolute_uri(urlsplit(cr["url"]).path)
        return Response(body)


class ManifestExportView(APIView):
    """A tenant's live jobs as a YAML manifest stream (what the caller may see)."""

    @extend_schema(
        parameters=[
            OpenApiParameter("tenant", str, required=True, description="Tenant slug."),
            OpenApiParameter("team", str, many=True, description="Only these teams."),
        ],
        responses={(200, "application/yaml"): str},
    )
    def get(self, request):
        slug = request.query_params.get("tenant", "")
        if not slug:
            return Response({"tenant": ["Name the tenant (?tenant=<slug>)."]}, status=status.HTTP_400_BAD_REQUEST)
        tenants = Tenant.objects.filter(slug=slug)
        if not request.user.is_superuser:
            tenants = tenants.filter(pk__in=tenant_ids(request.user, Action.VIEW))
        tenant = tenants.first()
        if tenant is None:
            return Response({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
        text = export_tenant(tenant, actor=request.user, teams=request.query_params.getlist("team") or None)
        response = HttpResponse(text, content_type="application/yaml; charset=utf-8")
        response["Content-Disposition"] = f'inline; filename="{tenant.slug}.yaml"'
        return response
