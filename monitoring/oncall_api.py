"""REST endpoints of on-call: rotations (with who is on call now and next), overrides, escalation
policies, routes and silences. Reads follow ``restrict``; writes go through monitoring.oncall_services
(team admins and tenant admins), every refusal of a field a 400 naming it, nothing saved."""

from __future__ import annotations

from typing import Any, cast

from django.contrib.auth.models import User
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from governance.access import Action, tenant_ids
from governance.api import RestrictedViewSet, StrictInputMixin, UsernameField, VisibleRelatedField
from governance.models import Environment, Team, Tenant
from governance.services import AccessDenied
from jobs import schedule
from jobs.models import Criticality, Job

from . import oncall, oncall_services
from .models import EscalationPolicy, Override, Rotation, Route, Silence

# --- shared ----------------------------------------------------------------------------------------


def _refuse_non_admins(user) -> None:
    """Someone who administers nothing learns 403 before any complaint about the body."""
    if not (getattr(user, "is_superuser", False) or tenant_ids(user, Action.ADMINISTER)):
        raise AccessDenied("Only tenant admins and team admins manage on-call, escalation and silences.")


def _tenant_of(attrs: dict) -> Tenant:
    team, tenant = attrs.get("team"), attrs.get("tenant")
    if team is not None and tenant is not None and team.tenant_id != tenant.pk:
        raise serializers.ValidationError({"team": ["The team belongs to another tenant."]})
    found = tenant or (team.tenant if team is not None else None)
    if found is None:
        raise serializers.ValidationError({"tenant": ["Give the tenant (or a team) this belongs to."]})
    return found


class UserListField(serializers.ListField):
    child = serializers.IntegerField(min_value=1)


def _zone(value: str) -> None:
    try:
        schedule.validate_zone(value)
    except schedule.ScheduleError as exc:
        raise serializers.ValidationError(str(exc)) from None


class ConfigViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RestrictedViewSet):
    """List and read what ``restrict`` shows; create, replace (PUT) and delete through the services."""

    input_serializer: type[serializers.Serializer]
    http_method_names = ["get", "post", "put", "delete", "head", "options"]

    def _place(self, obj: Any) -> tuple[int, int | None]:
        return obj.tenant_id, obj.team_id

    def _guard(self, obj: Any) -> None:
        if not oncall_services.may_manage(cast(User, self.request.user), *self._place(obj)):
            raise AccessDenied("Only a tenant admin whose role covers this team manages its on-call and silences.")

    def _input(self, instance: Any = None) -> dict:
        body = self.input_serializer(
            data=self.request.data, context={**self.get_serializer_context(), "instance": instance}
        )
        body.is_valid(raise_exception=True)
        return body.validated_data

    def _show(self, obj: Any, code: int = status.HTTP_200_OK) -> Response:
        return self.detail_response(self.get_queryset().get(pk=obj.pk), self.get_serializer_class(), code)

    def save(self, data: dict, instance: Any) -> Any:
        raise NotImplementedError

    def remove(self, instance: Any) -> None:
        raise NotImplementedError

    def create(self, request, *args, **kwargs):
        _refuse_non_admins(request.user)
        return self._show(self.save(self._input(), None), status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        instance = self.get_object()
        self._guard(instance)
        return self._show(self.save(self._input(instance), instance))

    def destroy(self, request, *args, **kwargs):
        instance = self.get_object()
        self._guard(instance)
        self.remove(instance)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- rotations --------------------------------------------------------------------------------------


class LayerInputSerializer(StrictInputMixin, serializers.Serializer):
    name = serializers.CharField(max_length=100)
    users = UserListField(min_length=1, help_text="User ids in turn order; each must hold a role covering the team.")
    starts_on = serializers.DateField(help_text="Local date of the first handoff.")
    rotation_days = serializers.IntegerField(min_value=1, max_value=366, default=7)
    handoff_time = serializers.TimeField(help_text="Local time of each handoff, e.g. 09:00.")
    timezone = serializers.CharField(max_length=64, validators=[_zone])
    weekdays = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=6), required=False, default=list
    )


class RotationInputSerializer(StrictInputMixin, serializers.Serializer):
    team = VisibleRelatedField(queryset=Team.objects.all())
    name = serializers.CharField(max_length=200)
    layers = LayerInputSerializer(many=True, help_text="Lowest first: a higher layer wins where it has someone.")

    def validate(self, attrs):
        attrs = super().validate(attrs)
        team = attrs["team"]
        errors: dict[str, dict] = {}
        for index, layer in enumerate(attrs["layers"]):
            users, problems = oncall_services.people(layer["users"], team.tenant_id, team.pk)
            layer["users"] = users
            if problems:
                errors[str(index)] = {"users": problems}
        if errors:
            raise serializers.ValidationError({"layers": errors})
        return attrs


class LayerSerializer(serializers.Serializer):
    name = serializers.CharField()
    users = serializers.SerializerMethodField()
    starts_on = serializers.DateField()
    rotation_days = serializers.IntegerField()
    handoff_time = serializers.TimeField()
    timezone = serializers.CharField()
    weekdays = serializers.ListField(child=serializers.IntegerField())

    def get_users(self, layer) -> list[str]:
        return [member.user.get_username() for member in layer.members.all()]


class RotationSerializer(serializers.ModelSerializer):
    layers = LayerSerializer(many=True, read_only=True)
    on_call_now = serializers.SerializerMethodField()
    next_handoff = serializers.SerializerMethodField()

    class Meta:
        model = Rotation
        fields = ["id", "tenant", "team", "name", "layers", "on_call_now", "next_handoff", "created_at"]
        read_only_fields = fields

    def _on_call(self, rotation) -> oncall.OnCall:
        now = timezone.now()
        overrides = [o for o in rotation.overrides.all() if o.ends_at > now]
        return oncall.OnCall(rotation, list(rotation.layers.all()), overrides)

    def get_on_call_now(self, rotation) -> str | None:
        user = self._on_call(rotation).at(timezone.now())
        return user.get_username() if user else None

    def get_next_handoff(self, rotation) -> dict | None:
        handoff = self._on_call(rotation).next_handoff(timezone.now())
        if handoff is None:
            return None
        return {"at": schedule.isoz(handoff.at), "user": handoff.user.get_username() if handoff.user else None}


class RotationViewSet(ConfigViewSet):
    """A team's on-call rotation: layers of people taking turns, overrides on top."""

    queryset = Rotation.objects.select_related("team").prefetch_related("layers__members__user", "overrides__user")
    serializer_class = RotationSerializer
    input_serializer = RotationInputSerializer

    def save(self, data, instance):
        return oncall_services.save_rotation(
            actor=self.request.user, team=data["team"], name=data["name"], layers=data["layers"], rotation=instance
        )

    def remove(self, instance):
        oncall_services.delete_rotation(instance, actor=self.request.user)


class OverrideInputSerializer(StrictInputMixin, serializers.Serializer):
    rotation = VisibleRelatedField(queryset=Rotation.objects.all())
    user = serializers.IntegerField(min_value=1)
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if attrs["ends_at"] <= attrs["starts_at"]:
            raise serializers.ValidationError({"ends_at": ["An override must end after it starts."]})
        rotation = attrs["rotation"]
        users, problems = oncall_services.people([attrs["user"]], rotation.tenant_id, rotation.team_id)
        if problems:
            raise serializers.ValidationError({"user": problems})
        attrs["user"] = users[0]
        return attrs


class OverrideSerializer(serializers.ModelSerializer):
    user = UsernameField()
    created_by = UsernameField()

    class Meta:
        model = Override
        fields = ["id", "rotation", "user", "starts_at", "ends_at", "reason", "created_by", "created_at"]
        read_only_fields = fields


class OverrideViewSet(ConfigViewSet):
    """Someone else on call for an interval; wins over every layer."""

    queryset = Override.objects.select_related("rotation", "user", "created_by")
    serializer_class = OverrideSerializer
    input_serializer = OverrideInputSerializer
    http_method_names = ["get", "post", "delete", "head", "options"]

    def _place(self, obj):
        return obj.rotation.tenant_id, obj.rotation.team_id

    def save(self, data, instance):
        return oncall_services.create_override(actor=self.request.user, **data)

    def remove(self, instance):
        oncall_services.delete_override(instance, actor=self.request.user)


# --- escalation policies and routes -------------------------------------------------------------


class StepInputSerializer(StrictInputMixin, serializers.Serializer):
    delay_minutes = serializers.IntegerField(min_value=1, max_value=10080, default=15)
    notify_on_call = serializers.BooleanField(default=True)
    users = UserListField(required=False, default=list)
    channels = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, default=list)


class PolicyInputSerializer(StrictInputMixin, serializers.Serializer):
    tenant = VisibleRelatedField(queryset=Tenant.objects.all(), required=False)
    team = VisibleRelatedField(queryset=Team.objects.all(), required=False, allow_null=True)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    repeat = serializers.IntegerField(min_value=0, max_value=10, default=0)
    steps = StepInputSerializer(many=True, help_text="At least one step; step 1 notifies when the incident opens.")

    def validate_steps(self, steps):
        if not steps:
            raise serializers.ValidationError("An escalation policy needs at least one step.")
        return steps

    def validate(self, attrs):
        attrs = super().validate(attrs)
        tenant = _tenant_of(attrs)
        attrs["tenant"] = tenant
        team = attrs.setdefault("team", None)
        errors: dict[str, dict] = {}
        for index, step in enumerate(attrs["steps"]):
            users, user_problems = oncall_services.people(step["users"], tenant.pk, team.pk if team else None)
            channels, channel_problems = oncall_services.channels_of(tenant.pk, step["channels"])
            step["users"], step["channels"] = users, channels
            problem: dict = {}
            if user_problems:
                problem["users"] = user_problems
            if channel_problems:
                problem["channels"] = channel_problems
            if not (step["notify_on_call"] or step["users"] or step["channels"]) and not problem:
                problem["non_field_errors"] = [
                    "This step notifies nobody: notify the on-call person, users or channels."
                ]
            if problem:
                errors[str(index)] = problem
        if errors:
            raise serializers.ValidationError({"steps": errors})
        return attrs


class StepSerializer(serializers.Serializer):
    delay_minutes = serializers.IntegerField()
    notify_on_call = serializers.BooleanField()
    users = serializers.SerializerMethodField()
    channels = serializers.SerializerMethodField()

    def get_users(self, step) -> list[str]:
        return [u.get_username() for u in step.users.all()]

    def get_channels(self, step) -> list[str]:
        return [c.name for c in step.channels.all()]


class PolicySerializer(serializers.ModelSerializer):
    steps = StepSerializer(many=True, read_only=True)

    class Meta:
        model = EscalationPolicy
        fields = ["id", "tenant", "team", "name", "description", "repeat", "steps", "created_at"]
        read_only_fields = fields


class EscalationPolicyViewSet(ConfigViewSet):
    """Who is notified, step after step, until someone acknowledges."""

    queryset = EscalationPolicy.objects.prefetch_related("steps__users", "steps__channels")
    serializer_class = PolicySerializer
    input_serializer = PolicyInputSerializer

    def save(self, data, instance):
        return oncall_services.save_policy(actor=self.request.user, policy=instance, **data)

    def remove(self, instance):
        oncall_services.delete_policy(instance, actor=self.request.user)


class RouteInputSerializer(StrictInputMixin, serializers.Serializer):
    tenant = VisibleRelatedField(queryset=Tenant.objects.all(), required=False)
    team = VisibleRelatedField(queryset=Team.objects.all(), required=False, allow_null=True)
    criticality = serializers.ChoiceField(choices=[("", "any"), *Criticality.choices], required=False, default="")
    environment = VisibleRelatedField(queryset=Environment.objects.all(), required=False, allow_null=True)
    policy = VisibleRelatedField(queryset=EscalationPolicy.objects.all())
    page_during_maintenance = serializers.BooleanField(default=False)

    def validate(self, attrs):
        attrs = super().validate(attrs)
        attrs.setdefault("team", None)
        attrs.setdefault("environment", None)
        attrs["tenant"] = _tenant_of(attrs)
        return attrs


class RouteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Route
        fields = [
            "id",
            "tenant",
            "team",
            "criticality",
            "environment",
            "policy",
            "page_during_maintenance",
            "created_at",
        ]
        read_only_fields = fields


class RouteViewSet(ConfigViewSet):
    """Which escalation policy an incident follows, by team, criticality and environment."""

    queryset = Route.objects.all()
    serializer_class = RouteSerializer
    input_serializer = RouteInputSerializer

    def save(self, data, instance):
        return oncall_services.save_route(actor=self.request.user, route=instance, **data)

    def remove(self, instance):
        oncall_services.delete_route(instance, actor=self.request.user)


# --- silences ----------------------------------------------------------------------------------


class SilenceInputSerializer(StrictInputMixin, serializers.Serializer):
    tenant = VisibleRelatedField(queryset=Tenant.objects.all(), required=False)
    job = VisibleRelatedField(queryset=Job.objects.all(), required=False, allow_null=True)
    team = VisibleRelatedField(queryset=Team.objects.all(), required=False, allow_null=True)
    tag = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    starts_at = serializers.DateTimeField(required=False, help_text="Default: now.")
    ends_at = serializers.DateTimeField()
    reason = serializers.CharField(max_length=500)

    def validate(self, attrs):
        attrs = super().validate(attrs)
        job = attrs.setdefault("job", None)
        attrs.setdefault("team", None)
        if job is not None:
            attrs.setdefault("tenant", job.tenant)
            attrs["team"] = attrs.get("team") or job.team
        attrs["tenant"] = _tenant_of(attrs)
        if attrs["ends_at"] <= (attrs.get("starts_at") or timezone.now()):
            raise serializers.ValidationError({"ends_at": ["A silence must end after it starts (and in the future)."]})
        return attrs


class SilenceSerializer(serializers.ModelSerializer):
    created_by = UsernameField()
    active = serializers.SerializerMethodField()

    class Meta:
        model = Silence
        fields = [
            "id",
            "tenant",
            "team",
            "job",
            "tag",
            "starts_at",
            "ends_at",
            "reason",
            "created_by",
            "created_at",
            "active",
        ]
        read_only_fields = fields

    def get_active(self, silence) -> bool:
        now = timezone.now()
        return silence.starts_at <= now < silence.ends_at


class SilenceViewSet(ConfigViewSet):
    """Ad-hoc silences: a job's, a team's or a tag's incidents notify nobody until the end."""

    queryset = Silence.objects.select_related("created_by")
    serializer_class = SilenceSerializer
    input_serializer = SilenceInputSerializer
    http_method_names = ["get", "post", "head", "options"]

    def save(self, data, instance):
        return oncall_services.create_silence(actor=self.request.user, **data)

    @extend_schema(request=None, responses={200: SilenceSerializer}, summary="End the silence now")
    @action(detail=True, methods=["post"])
    def end(self, request, pk=None):
        silence = self.get_object()
        self._guard(silence)
        return self._show(oncall_services.end_silence(silence, actor=request.user))
