"""API for tokens and service accounts: list/revoke your tokens; tenant admins manage service accounts."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db.models import Q
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from .access import Action, restrict, tenant_ids
from .api import VisibleRelatedField
from .models import ApiToken, Environment, Role, ServiceAccount, Team, Tenant
from .services import AccessDenied
from .tokens import SERVICE_ACCOUNT_ROLES, create_service_account, issue_token, revoke_token


def _field_errors(exc: ValidationError):
    return Response(exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}, status=400)


class ApiTokenSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)
    active = serializers.BooleanField(read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "user", "name", "prefix", "created_at", "expires_at", "revoked_at", "last_used_at", "active"]
        read_only_fields = fields


class IssuedTokenSerializer(ApiTokenSerializer):
    token = serializers.CharField(read_only=True, help_text="Shown once; only its hash is stored.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


class IssueTokenSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    expires_in_days = serializers.IntegerField(required=False, min_value=1)


class ApiTokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Your own tokens, plus the service-account tokens of tenants you administer; DELETE revokes."""

    serializer_class = ApiTokenSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ApiToken.objects.none()
        user = self.request.user
        administered = tenant_ids(user, Action.ADMINISTER)
        return (
            ApiToken.objects.filter(Q(user=user) | Q(user__service_account__tenant_id__in=administered))
            .select_related("user")
            .order_by("-created_at", "-id")
        )

    def destroy(self, request, pk=None):
        token = self.get_object()
        account = getattr(token.user, "service_account", None)
        # A refusal is recorded in the account's tenant chain.
        self.denial_target = account if account is not None and token.user_id != request.user.pk else None
        try:
            revoke_token(token, actor=request.user, ip=request.META.get("REMOTE_ADDR"))
        except AccessDenied as exc:
            raise PermissionDenied(str(exc)) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class VisibleTenantField(serializers.SlugRelatedField):
    """A tenant slug among those the user belongs to: another tenant's slug answers like a missing one."""

    def get_queryset(self):
        return restrict(Tenant.objects.all(), self.context["request"].user, Action.VIEW)


class ServiceAccountSerializer(serializers.ModelSerializer):
    tenant = VisibleTenantField(slug_field="slug", queryset=Tenant.objects.all())
    role = serializers.ChoiceField(choices=[(r.value, r.label) for r in SERVICE_ACCOUNT_ROLES], write_only=True)
    # Another tenant's team or environment answers exactly like a missing id.
    team = VisibleRelatedField(queryset=Team.objects.all(), required=False, allow_null=True, write_only=True)
    environment = VisibleRelatedField(
        queryset=Environment.objects.all(), required=False, allow_null=True, write_only=True
    )
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = ServiceAccount
        fields = ["id", "tenant", "name", "description", "username", "created_at", "role", "team", "environment"]
        read_only_fields = ["id", "username", "created_at"]
        # The service checks uniqueness with a readable message; DRF's own validator would run first.
        validators: list = []


class ServiceAccountViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Tenant admins create service accounts (viewer, operator or author only) and issue their tokens."""

    serializer_class = ServiceAccountSerializer

    def get_queryset(self):
        return restrict(ServiceAccount.objects.select_related("tenant", "user"), self.request.user, Action.ADMINISTER)

    def create(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        tenant = data["tenant"]
        self.denial_target = (tenant.pk, None, None)
        try:
            account = create_service_account(
                actor=request.user,
                tenant=tenant,
                name=data["name"],
                role=Role(data["role"]),
                team=data.get("team"),
                environment=data.get("environment"),
                description=data.get("description", ""),
            )
        except AccessDenied as exc:
            raise PermissionDenied(str(exc)) from None
        except ValidationError as exc:
            return _field_errors(exc)
        return Response(ServiceAccountSerializer(account).data, status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["post"], serializer_class=IssueTokenSerializer)
    def tokens(self, request, pk=None):
        account = self.get_object()
        self.denial_target = account
        serializer = IssueTokenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            token, raw = issue_token(
                account.user,
                actor=request.user,
                name=serializer.validated_data["name"],
                expires_in_days=serializer.validated_data.get("expires_in_days"),
                ip=request.META.get("REMOTE_ADDR"),
            )
        except AccessDenied as exc:
            raise PermissionDenied(str(exc)) from None
        except ValidationError as exc:
            return _field_errors(exc)
        token.token = raw
        return Response(IssuedTokenSerializer(token).data, status=status.HTTP_201_CREATED)
