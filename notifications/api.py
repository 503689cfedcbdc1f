"""Notification channels API (/api/v1/notification-channels/) and the outbox (/api/v1/notifications/).

Everyone who can see a channel reads it; only tenant admins (team admins for their team's channels)
create, disable or enable one, and see its full target and secret reference. Others read the target
with its credentials hidden.
"""

from __future__ import annotations

from django.db.models import Prefetch
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from governance.api import (
    RestrictedViewSet,
    StrictInputMixin,
    TeamRefSerializer,
    UsernameField,
    VisibleRelatedField,
    ref_filter,
)
from governance.models import Team, Tenant

from . import channels as services
from .models import Channel, ChannelKind, DeliveryAttempt, Notification, NotificationState


class ChannelSerializer(serializers.ModelSerializer):
    tenant: serializers.SlugRelatedField[Tenant] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    team = TeamRefSerializer(read_only=True, allow_null=True)
    target = serializers.SerializerMethodField(
        help_text="The full target for those who manage the channel; otherwise with its credentials hidden."
    )
    secret = serializers.SerializerMethodField(help_text="Webhooks: the Vault reference (managers only).")
    created_by = UsernameField()
    can_manage = serializers.SerializerMethodField()

    class Meta:
        model = Channel
        fields = ["id", "tenant", "team", "name", "kind", "target", "secret", "enabled", "created_at", "created_by"]
        fields += ["can_manage"]

    def _manages(self, channel: Channel) -> bool:
        return services.may_manage(self.context["request"].user, channel.tenant_id, channel.team_id)

    @extend_schema_field(serializers.CharField())
    def get_target(self, channel: Channel) -> str:
        return channel.target if self._manages(channel) else services.display_target(channel)

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_secret(self, channel: Channel) -> str | None:
        return channel.secret if self._manages(channel) and channel.secret else None

    def get_can_manage(self, channel: Channel) -> bool:
        return self._manages(channel)


class ChannelCreateSerializer(StrictInputMixin, serializers.Serializer):
    tenant = VisibleRelatedField(queryset=Tenant.objects.all(), required=False, help_text="Tenant id (or give a team).")
    team = VisibleRelatedField(
        queryset=Team.objects.select_related("tenant"),
        required=False,
        allow_null=True,
        help_text="The owning team (its admins manage the channel); omit for a tenant-wide channel.",
    )
    name = serializers.SlugField(max_length=100)
    kind = serializers.ChoiceField(choices=ChannelKind.choices)
    target = serializers.CharField(
        max_length=2000, help_text="An email address, an http(s) webhook URL, or an apprise URL (slack://, json://...)."
    )
    secret = serializers.CharField(
        max_length=600,
        required=False,
        allow_blank=True,
        default="",
        help_text="Webhooks: the Vault reference of the signing secret (vault:<mount>/<path>#<key>).",
    )

    def validate(self, attrs):
        attrs = super().validate(attrs)
        tenant, team = attrs.get("tenant"), attrs.get("team")
        if tenant is None and team is None:
            raise serializers.ValidationError({"tenant": ["Give the tenant, or the team that owns the channel."]})
        if tenant is not None and team is not None and team.tenant_id != tenant.pk:
            raise serializers.ValidationError({"team": ["This team belongs to another tenant."]})
        attrs["tenant"] = tenant or team.tenant
        return attrs


class ChannelFilter(filters.FilterSet):
    tenant = ref_filter("tenant", "Tenant")
    team = ref_filter("team", "Team")

    class Meta:
        model = Channel
        fields = ["tenant", "team", "kind", "enabled"]


class ChannelViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RestrictedViewSet):
    """Where notifications go besides people's email: an address, a signed webhook, a chat service."""

    queryset = Channel.objects.select_related("tenant", "team", "created_by").order_by("tenant_id", "name")
    serializer_class = ChannelSerializer
    filterset_class = ChannelFilter

    @extend_schema(request=ChannelCreateSerializer, responses={201: ChannelSerializer})
    def create(self, request, *args, **kwargs) -> Response:
        body = ChannelCreateSerializer(data=request.data, context=self.get_serializer_context())
        body.is_valid(raise_exception=True)
        data = body.validated_data
        team = data.get("team")
        self.denial_target = (data["tenant"].pk, team.pk if team else None, None)
        channel = services.create_channel(actor=request.user, **data)
        return self.detail_response(self.get_queryset().get(pk=channel.pk), ChannelSerializer, status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: ChannelSerializer})
    @action(detail=True, methods=["post"])
    def disable(self, request, pk=None) -> Response:
        """Stop sending to this channel; its pending messages fail at their next try."""
        channel = services.set_channel_enabled(self.get_object(), actor=request.user, enabled=False)
        return self.detail_response(self.get_queryset().get(pk=channel.pk), ChannelSerializer)

    @extend_schema(request=None, responses={200: ChannelSerializer})
    @action(detail=True, methods=["post"])
    def enable(self, request, pk=None) -> Response:
        channel = services.set_channel_enabled(self.get_object(), actor=request.user, enabled=True)
        return self.detail_response(self.get_queryset().get(pk=channel.pk), ChannelSerializer)


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = ["at", "ok", "error", "status_code", "duration_ms"]


class NotificationSerializer(serializers.ModelSerializer):
    channel: serializers.SlugRelatedField[Channel] = serializers.SlugRelatedField(slug_field="name", read_only=True)
    user = UsernameField()
    attempts_made = DeliveryAttemptSerializer(source="delivery_attempts", many=True, read_only=True)

    class Meta:
        model = Notification
        fields = [
            "id",
            "key",
            "channel",
            "user",
            "subject",
            "source",
            "state",
            "attempts",
            "next_attempt_at",
            "last_error",
            "created_at",
            "delivered_at",
            "failed_at",
            "attempts_made",
        ]


class NotificationFilter(filters.FilterSet):
    tenant = ref_filter("tenant", "Tenant")
    state = filters.ChoiceFilter(choices=NotificationState.choices)

    class Meta:
        model = Notification
        fields = ["tenant", "state", "channel"]


class NotificationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RestrictedViewSet):
    """The outbox, newest first: every message, its state and each delivery attempt."""

    queryset = (
        Notification.objects.select_related("channel", "user")
        .prefetch_related(Prefetch("delivery_attempts", queryset=DeliveryAttempt.objects.order_by("at", "pk")))
        .order_by("-created_at", "-pk")
    )
    serializer_class = NotificationSerializer
    filterset_class = NotificationFilter
