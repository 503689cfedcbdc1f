"""The REST API's shared parts (base viewset, error mapping, filters) and the governance endpoints:
token, tenants, teams, environments and the audit trail.

Every viewset derives from ``RestrictedViewSet``, whose queryset always passes through
``governance.access.restrict``: another tenant's object is simply not there (404), and a visible
object the user may not act on answers 403 from the service that refuses it.
"""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.core.exceptions import NON_FIELD_ERRORS, ObjectDoesNotExist
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Model, Q, QuerySet
from django.http import Http404
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.filters import SearchFilter
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from . import audit
from .access import Action, get_object_or_404_for, record_denied, restrict
from .export import parse_object
from .models import AuditAction, AuditEvent, Environment, Team, Tenant
from .paging import LongListPagination
from .services import AccessDenied
from .tokens import issue_token

# ---------------------------------------------------------------------------
# Errors: one mapping from domain exceptions to HTTP answers.
# ---------------------------------------------------------------------------


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object is not in a state that allows this."
    default_code = "conflict"


class BadRequest(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "Bad request."
    default_code = "bad_request"


def validation_detail(exc: DjangoValidationError) -> dict[str, list[str]]:
    """Django's ValidationError as DRF's ``{field: [messages]}``."""
    if hasattr(exc, "error_dict"):
        return {
            ("non_field_errors" if field == NON_FIELD_ERRORS else field): messages
            for field, messages in exc.message_dict.items()
        }
    return {"non_field_errors": exc.messages}


def exception_handler(exc, context):
    """Map service errors to HTTP: ValidationError 400 with field errors, AccessDenied 403,
    domain errors carrying ``conflict`` (ChangeError, JobStateError) 409 or 400, Http404 404.

    Services are atomic, so when any of these reaches here nothing of the request was written.
    The one deliberate write: refused actions (403) and probes of hidden objects (404) are recorded
    in the audit trail as access.denied.
    """
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(validation_detail(exc))
    elif isinstance(exc, AccessDenied | DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif not isinstance(exc, exceptions.APIException) and hasattr(exc, "conflict"):
        # The domain's own "you can't do that now" errors (approvals.ChangeError, jobs.JobStateError)
        # declare whether they are a state conflict; governance imports neither app.
        exc = Conflict(str(exc)) if exc.conflict else BadRequest(str(exc))
    if isinstance(exc, exceptions.PermissionDenied):
        _record_denial(exc, context)
    return drf_exception_handler(exc, context)


def _record_denial(exc: exceptions.PermissionDenied, context) -> None:
    request = context.get("request")
    view = context.get("view")
    user = getattr(request, "user", None)
    if request is None or not getattr(user, "is_authenticated", False):
        return
    target = getattr(view, "denial_target", None)
    action = getattr(view, "action", None) or request.method.lower()
    if isinstance(target, Model):
        record_denied(user, action, target, reason=str(exc.detail))
        return
    tenant_id, team_id, environment_id = target if isinstance(target, tuple) else (None, None, None)
    audit.record(
        AuditAction.ACCESS_DENIED,
        actor=user,
        tenant=tenant_id,
        team_id=team_id,
        environment_id=environment_id,
        data={"action": action, "reason": str(exc.detail)},
    )


def client_ip(request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


# ---------------------------------------------------------------------------
# Base viewset and small serializer helpers.
# ---------------------------------------------------------------------------


class RestrictedViewSet(viewsets.GenericViewSet):
    """A viewset whose rows are always those ``restrict(queryset, user, view)`` lets through."""

    # What a refused action is recorded against (an object or a (tenant, team, env) tuple).
    denial_target: Model | tuple | None = None

    def get_queryset(self) -> QuerySet:
        return restrict(super().get_queryset(), self.request.user, Action.VIEW)

    def get_object(self):
        try:
            obj = super().get_object()
        except Http404:
            self._record_probe()
            raise
        self.denial_target = obj
        return obj

    def _record_probe(self) -> None:
        # The central lookup audits a 404 for an object that exists but is hidden (a probe of
        # another tenant's ids) and stays silent for one that is truly missing; its answer is ours.
        lookup = self.kwargs.get(self.lookup_url_kwarg or self.lookup_field)
        try:
            model = self.get_queryset().model
            get_object_or_404_for(self.request.user, Action.VIEW, model._default_manager.all(), pk=lookup)
        except Http404:
            pass

    def detail_response(self, obj, serializer_class, status_code=status.HTTP_200_OK) -> Response:
        return Response(serializer_class(obj, context=self.get_serializer_context()).data, status=status_code)


class StrictInputMixin:
    """Refuse keys the serializer does not accept as input, so a client posting ``status`` or
    ``author`` learns it had no effect instead of silently being ignored."""

    def validate(self, attrs):
        writable = {name for name, field in self.fields.items() if not field.read_only}
        extra = sorted(set(getattr(self, "initial_data", {}) or {}) - writable)
        if extra:
            raise serializers.ValidationError(
                {name: ["This field cannot be set." if name in self.fields else "Unknown field."] for name in extra}
            )
        return super().validate(attrs)


class VisibleRelatedField(serializers.PrimaryKeyRelatedField):
    """A primary key that must name an object the requesting user can see; another tenant's
    object gets the same answer as a missing one."""

    def get_queryset(self):
        return restrict(super().get_queryset(), self.context["request"].user, Action.VIEW)

    def to_internal_value(self, data):
        name = self.queryset.model._meta.verbose_name
        if isinstance(data, bool) or not isinstance(data, int | str):
            raise serializers.ValidationError(f"Give the {name}'s id (a number).")
        try:
            return self.get_queryset().get(pk=data)
        except (ObjectDoesNotExist, ValueError, TypeError):
            raise serializers.ValidationError(f"No {name} with id {data}.") from None


class TenantRefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tenant
        fields = ["id", "slug", "name"]


class TeamRefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Team
        fields = ["id", "slug", "name"]


class EnvironmentRefSerializer(serializers.ModelSerializer):
    governed = serializers.BooleanField(read_only=True)

    class Meta:
        model = Environment
        fields = ["id", "slug", "name", "required_approvals", "governed"]


class UsernameField(serializers.CharField):
    """A user shown by username (null for the system)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("read_only", True)
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_representation(self, value):
        return value.get_username() if value is not None else None


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


REASON_MISSING = "Give a reason: operator actions are recorded with it in the audit trail."


class RequiredReasonSerializer(serializers.Serializer):
    """Why an operator acts (trigger, pause, resume, cancel, rerun, mark succeeded): recorded with the action."""

    reason = serializers.CharField(
        max_length=2000, error_messages={"blank": REASON_MISSING, "required": REASON_MISSING, "null": REASON_MISSING}
    )


def ref_condition(field: str, value: str) -> Q:
    """``field`` named by its id or its slug (``prod`` or ``7``)."""
    value = value.strip()
    return Q(**{f"{field}_id": int(value)}) if value.isdigit() else Q(**{f"{field}__slug": value})


def ref_filter(field: str, label: str):
    """A filter accepting an id or a slug (``?environment=prod`` or ``?environment=7``)."""
    return filters.CharFilter(
        method=lambda qs, name, value: qs.filter(ref_condition(field, value)), label=f"{label} id or slug"
    )


# ---------------------------------------------------------------------------
# Token
# ---------------------------------------------------------------------------


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})


class TokenResponseSerializer(serializers.Serializer):
    token = serializers.CharField()
    expires_at = serializers.DateTimeField()


class ObtainTokenView(APIView):
    """Exchange a username and password for an API token (``Authorization: Token <token>``)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    serializer_class = TokenRequestSerializer

    @extend_schema(
        request=TokenRequestSerializer,
        responses={200: TokenResponseSerializer},
        auth=[],
        summary="Obtain an API token",
        tags=["auth"],
    )
    def post(self, request):
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # authenticate() sends user_login_failed on bad credentials; governance.signals audits it.
        user = authenticate(
            request._request,
            username=serializer.validated_data["username"],
            password=serializer.validated_data["password"],
        )
        if user is None:
            raise exceptions.ValidationError(
                {"non_field_errors": ["Unable to log in with this username and password."]}
            )
        # A new hashed, expiring token each time (audited by issue_token); the raw value is shown once.
        token, raw = issue_token(user, actor=user, name="api login", ip=client_ip(request))
        return Response({"token": raw, "expires_at": token.expires_at})


# ---------------------------------------------------------------------------
# Tenants, teams, environments
# ---------------------------------------------------------------------------


class TenantSerializer(serializers.ModelSerializer):
    created_at = serializers.DateTimeField(read_only=True)

    class Meta:
        model = Tenant
        fields = ["id", "slug", "name", "naming_pattern", "secrets_by_team", "created_at"]


class TenantViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RestrictedViewSet):
    """Tenants the user belongs to."""

    queryset = Tenant.objects.all()
    serializer_class = TenantSerializer


class TeamSerializer(serializers.ModelSerializer):
    tenant = TenantRefSerializer(read_only=True)

    class Meta:
        model = Team
        fields = ["id", "slug", "name", "tenant"]


class TeamFilter(filters.FilterSet):
    tenant = ref_filter("tenant", "Tenant")

    class Meta:
        model = Team
        fields = ["tenant"]


class TeamViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RestrictedViewSet):
    """Teams the user can see."""

    queryset = Team.objects.select_related("tenant")
    serializer_class = TeamSerializer
    filterset_class = TeamFilter


class EnvironmentSerializer(serializers.ModelSerializer):
    tenant = TenantRefSerializer(read_only=True)
    governed = serializers.BooleanField(read_only=True)

    class Meta:
        model = Environment
        fields = ["id", "slug", "name", "order", "required_approvals", "governed", "tenant"]


class EnvironmentFilter(filters.FilterSet):
    tenant = ref_filter("tenant", "Tenant")

    class Meta:
        model = Environment
        fields = ["tenant"]


class EnvironmentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RestrictedViewSet):
    """Environments the user can see, with their approval policy."""

    queryset = Environment.objects.select_related("tenant")
    serializer_class = EnvironmentSerializer
    filterset_class = EnvironmentFilter


# ---------------------------------------------------------------------------
# Audit trail
# ---------------------------------------------------------------------------


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_repr", read_only=True)
    actor_id = serializers.IntegerField(read_only=True, allow_null=True)
    object = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "tenant",
            "seq",
            "created_at",
            "actor",
            "actor_id",
            "action",
            "object",
            "object_type",
            "object_id",
            "object_repr",
            "team",
            "environment",
            "data",
            "ip",
            "hash",
        ]

    @extend_schema_field(OpenApiTypes.STR)
    def get_object(self, event: AuditEvent) -> str | None:
        return f"{event.object_type}:{event.object_id}" if event.object_type else None


def _filter_object(queryset, name, value):
    # The syntax of the audit page and the export (job:42, jobs.job:42, or a type): a short type name
    # means its stored label, and an unknown type is a 400 naming the field, not an empty list.
    return queryset.filter(**parse_object(value))


def _filter_object_type(queryset, name, value):
    return queryset.filter(**parse_object(object_type=value))


class AuditEventFilter(filters.FilterSet):
    # No join to multiply rows: no DISTINCT (counting a DISTINCT of every column reads them all).
    action = filters.MultipleChoiceFilter(choices=AuditAction.choices, distinct=False)
    actor = filters.CharFilter(field_name="actor_repr", label="Username of the actor")
    object = filters.CharFilter(
        method=lambda qs, name, value: _filter_object(qs, name, value),
        label="Object as <type>:<id> (e.g. job:12 or jobs.job:12) or just a type",
    )
    object_type = filters.CharFilter(
        method=lambda qs, name, value: _filter_object_type(qs, name, value),
        label="Object type (e.g. jobs.job, or just job)",
    )
    object_id = filters.CharFilter()
    since = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte", label="From this instant (UTC)")
    until = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt", label="Before this instant (UTC)")
    tenant = ref_filter("tenant", "Tenant")
    team = ref_filter("team", "Team")
    environment = ref_filter("environment", "Environment")

    class Meta:
        model = AuditEvent
        fields = ["action", "actor", "object", "object_type", "object_id", "since", "until"]


@extend_schema_view(list=extend_schema(summary="Search the audit trail"))
class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RestrictedViewSet):
    """The append-only audit trail, newest first."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter
    pagination_class = LongListPagination
    # Past the numbered pages, ?before=/?after= positions in the default order (newest first).
    cursor_field = "created_at"
    filter_backends = [filters.DjangoFilterBackend, SearchFilter]
    search_fields = ["object_repr", "actor_repr"]
