"""REST endpoints for jobs and runs.

Jobs are read-only here: their definitions change through change requests
(``approvals.api``). Operators act on them: trigger, pause, resume, cancel a run.
"""

from __future__ import annotations

from django.db.models import Prefetch
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter, SearchFilter
from rest_framework.response import Response
from rest_framework.reverse import reverse

from governance.access import Action, can
from governance.api import (
    EnvironmentRefSerializer,
    RequiredReasonSerializer,
    RestrictedViewSet,
    TeamRefSerializer,
    TenantRefSerializer,
    UsernameField,
    ref_filter,
)
from governance.models import Environment, Team
from governance.paging import LongListPagination
from governance.services import AccessDenied

from . import schedule, services
from .filters import RunFilter
from .models import DEFINITION_FIELDS, Alert, Attempt, Criticality, Job, JobStatus, Run
from .output_reads import note_output_viewed
from .run_scope import restrict_runs

NEXT_RUNS = 5


def acted_on(viewset, action: Action):
    """The object of an operator action, once the user may take it: a viewer learns 403 before
    any complaint about the body (and another tenant's object stays a 404)."""
    obj = viewset.get_object()
    if not can(viewset.request.user, action, obj):
        raise AccessDenied(f"You need the operator role for this job to {action.value} it.")
    return obj


def reason_from(request) -> str:
    body = RequiredReasonSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    return body.validated_data["reason"]


class DefinitionSerializer(serializers.ModelSerializer):
    """A job definition: the fields a change request proposes (documents the shape; built from the model
    so it follows DEFINITION_FIELDS)."""

    class Meta:
        model = Job
        fields = list(DEFINITION_FIELDS)
        read_only_fields = fields


class NextRunSerializer(serializers.Serializer):
    at = serializers.DateTimeField(help_text="UTC instant.")
    local = serializers.CharField(help_text="The same instant on the job's wall clock (ISO 8601 with offset).")
    timezone = serializers.CharField()


class JobLinksSerializer(serializers.Serializer):
    self = serializers.URLField()
    runs = serializers.URLField()
    change_requests = serializers.URLField()
    history = serializers.URLField()
    audit = serializers.URLField()


class JobSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api-job-detail")
    tenant = TenantRefSerializer(read_only=True)
    team = TeamRefSerializer(read_only=True)
    environment = EnvironmentRefSerializer(read_only=True)

    class Meta:
        model = Job
        fields = [
            "id",
            "url",
            "name",
            "tenant",
            "team",
            "environment",
            "criticality",
            "status",
            "version",
            "cron",
            "timezone",
            "next_fire_at",
            "updated_at",
        ]
        read_only_fields = fields


class JobDetailSerializer(JobSerializer):
    definition = serializers.SerializerMethodField()
    next_runs = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()

    class Meta(JobSerializer.Meta):
        fields = [
            *JobSerializer.Meta.fields,
            *(f for f in DEFINITION_FIELDS if f not in JobSerializer.Meta.fields),
            "definition",
            "change_request_id",
            "created_at",
            "next_runs",
            "links",
        ]
        read_only_fields = fields

    @extend_schema_field(DefinitionSerializer)
    def get_definition(self, job: Job) -> dict:
        return job.definition()

    @extend_schema_field(NextRunSerializer(many=True))
    def get_next_runs(self, job: Job) -> list:
        if job.status != JobStatus.ENABLED:
            return []
        tz = schedule.zone(job.timezone)
        return [
            {
                "at": serializers.DateTimeField().to_representation(instant),
                "local": instant.astimezone(tz).isoformat(),
                "timezone": job.timezone,
            }
            for instant in job.next_runs(timezone.now(), NEXT_RUNS)
        ]

    @extend_schema_field(JobLinksSerializer)
    def get_links(self, job: Job) -> dict:
        request = self.context.get("request")
        detail = reverse("api-job-detail", kwargs={"pk": job.pk}, request=request)
        return {
            "self": detail,
            "runs": reverse("api-run-list", request=request) + f"?job={job.pk}",
            "change_requests": reverse("api-change-request-list", request=request) + f"?job={job.pk}",
            "history": reverse("api-job-history", kwargs={"pk": job.pk}, request=request),
            "audit": reverse("api-audit-event-list", request=request) + f"?object=jobs.job:{job.pk}",
        }


class JobHistorySerializer(serializers.Serializer):
    """One recorded version of a job (django-simple-history)."""

    history_id = serializers.IntegerField()
    history_date = serializers.DateTimeField()
    change = serializers.SerializerMethodField()
    user = UsernameField(source="history_user")
    reason = serializers.CharField(source="history_change_reason", allow_null=True)
    version = serializers.IntegerField()
    status = serializers.CharField()
    change_request_id = serializers.IntegerField(allow_null=True)
    definition = serializers.SerializerMethodField()

    def get_change(self, record) -> str:
        return {"+": "created", "~": "changed", "-": "removed"}.get(record.history_type, record.history_type)

    @extend_schema_field(DefinitionSerializer)
    def get_definition(self, record) -> dict:
        return {field: getattr(record, field, None) for field in DEFINITION_FIELDS}


class JobFilter(filters.FilterSet):
    tenant = ref_filter("tenant", "Tenant")
    team = ref_filter("team", "Team")
    environment = ref_filter("environment", "Environment")
    # Plain columns: no DISTINCT.
    status = filters.MultipleChoiceFilter(choices=JobStatus.choices, distinct=False)
    criticality = filters.MultipleChoiceFilter(choices=Criticality.choices, distinct=False)

    class Meta:
        model = Job
        fields = ["tenant", "team", "environment", "status", "criticality"]


class JobRefSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api-job-detail")
    team: serializers.SlugRelatedField[Team] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    environment: serializers.SlugRelatedField[Environment] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )

    class Meta:
        model = Job
        fields = ["id", "url", "name", "team", "environment"]


class RunSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api-run-detail")
    job = JobRefSerializer(read_only=True)
    triggered_by = UsernameField()
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = Run
        fields = [
            "id",
            "url",
            "job",
            "tenant",
            "scheduled_for",
            "trigger",
            "triggered_by",
            "status",
            "attempt",
            "job_version",
            "queued_at",
            "started_at",
            "finished_at",
            "duration_seconds",
            "exit_code",
        ]
        read_only_fields = fields


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = Attempt
        fields = [
            "number",
            "status",
            "reason",
            "started_at",
            "finished_at",
            "exit_code",
            "http_status",
            "worker",
            "pid",
            "retry_delay_s",
        ]
        read_only_fields = fields


class AlertSerializer(serializers.ModelSerializer):
    class Meta:
        model = Alert
        fields = ["id", "kind", "message", "created_at"]
        read_only_fields = fields


class RunDetailSerializer(RunSerializer):
    definition = serializers.SerializerMethodField(help_text="The exact definition this run executes.")
    attempts = AttemptSerializer(many=True, read_only=True)
    open_alerts = serializers.SerializerMethodField(help_text="Alerts about this run not yet resolved.")

    class Meta(RunSerializer.Meta):
        fields = [
            *RunSerializer.Meta.fields,
            "key",
            "reason",
            "trigger_reason",
            "created_at",
            "definition",
            "output",
            "output_bytes",
            "worker",
            "pid",
            "cpu_user_s",
            "cpu_sys_s",
            "max_rss_kb",
            "block_in",
            "block_out",
            "requeues",
            "queue_note",
            "attempts",
            "open_alerts",
        ]
        read_only_fields = fields

    @extend_schema_field(DefinitionSerializer)
    def get_definition(self, run: Run) -> dict:
        return run.definition

    @extend_schema_field(AlertSerializer(many=True))
    def get_open_alerts(self, run: Run) -> list:
        alerts = [a for a in run.alerts.all() if a.resolved_at is None]
        return list(AlertSerializer(alerts, many=True).data)


@extend_schema_view(
    list=extend_schema(summary="List jobs", description="Search matches the job name."),
    retrieve=extend_schema(summary="A job's live definition, next runs and links"),
)
class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RestrictedViewSet):
    """Live job definitions. Read-only: propose changes through /api/v1/change-requests/."""

    queryset = Job.objects.select_related("tenant", "team", "environment")
    serializer_class = JobSerializer
    filterset_class = JobFilter
    filter_backends = [filters.DjangoFilterBackend, SearchFilter, OrderingFilter]
    search_fields = ["name"]
    ordering_fields = ["name", "criticality", "status", "version", "next_fire_at", "created_at", "updated_at"]
    ordering = ["name", "id"]

    def get_serializer_class(self):
        return JobSerializer if self.action == "list" else JobDetailSerializer

    @extend_schema(request=RequiredReasonSerializer, responses={201: RunDetailSerializer}, summary="Run now")
    @action(detail=True, methods=["post"])
    def trigger(self, request, pk=None):
        job = acted_on(self, Action.TRIGGER)
        run = services.trigger_run(job, actor=request.user, reason=reason_from(request))
        run = Run.objects.select_related("job__team", "job__environment", "triggered_by").get(pk=run.pk)
        return self.detail_response(run, RunDetailSerializer, status.HTTP_201_CREATED)

    @extend_schema(
        request=RequiredReasonSerializer,
        responses={200: JobDetailSerializer},
        summary="Pause the schedule",
        description="409 when the environment's approval policy puts pausing this job under change control: "
        "propose a change request with action `pause` instead.",
    )
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        return self._set_paused(request, paused=True)

    @extend_schema(
        request=RequiredReasonSerializer,
        responses={200: JobDetailSerializer},
        summary="Resume the schedule",
        description="409 when the environment's approval policy puts resuming this job under change control: "
        "propose a change request with action `resume` instead.",
    )
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._set_paused(request, paused=False)

    def _set_paused(self, request, *, paused: bool):
        job = acted_on(self, Action.PAUSE if paused else Action.RESUME)
        job = services.set_paused(job, actor=request.user, paused=paused, reason=reason_from(request))
        return self.detail_response(self.get_queryset().get(pk=job.pk), JobDetailSerializer)

    @extend_schema(responses={200: JobHistorySerializer(many=True)}, summary="Every recorded version of the job")
    @action(detail=True, methods=["get"], filter_backends=[])
    def history(self, request, pk=None):
        job = self.get_object()
        records = job.history.select_related("history_user").order_by("-history_date", "-history_id")
        page = self.paginate_queryset(records)
        return self.get_paginated_response(JobHistorySerializer(page, many=True).data)


ROLLBACK_FIELDS = ("job_version", "version", "definition")


def refuse_rollback(request, run: Run) -> None:
    """A rerun executes the job's live version; asking for another one is a rollback (400)."""
    for field in ROLLBACK_FIELDS:
        if isinstance(request.data, dict) and field in request.data:
            raise serializers.ValidationError(
                {
                    field: [
                        f"A rerun executes the job's live (approved) version v{run.job.version}. Running an earlier "
                        "version again is a rollback: propose it as a change request (its history lists each "
                        "version's definition)."
                    ]
                }
            )


class RerunFailedSerializer(RunDetailSerializer):
    """The run acted on, with what rerunning its workflow's failed steps did."""

    requeued = serializers.SerializerMethodField(help_text="Ids of the runs queued again.")
    not_in_scope = serializers.SerializerMethodField(
        help_text="Failed steps of the slot left alone because you may not act on them (not named)."
    )
    message = serializers.SerializerMethodField()

    class Meta(RunDetailSerializer.Meta):
        fields = [*RunDetailSerializer.Meta.fields, "requeued", "not_in_scope", "message"]
        read_only_fields = fields

    def get_requeued(self, run: Run) -> list[int]:
        return [r.pk for r in self.context["result"].requeued]

    def get_not_in_scope(self, run: Run) -> int:
        return self.context["result"].not_in_scope

    def get_message(self, run: Run) -> str:
        return self.context["result"].message


@extend_schema_view(list=extend_schema(summary="List runs, newest first"), retrieve=extend_schema(summary="A run"))
class RunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RestrictedViewSet):
    """Runs of the jobs the user can see."""

    queryset = Run.objects.select_related("job__team", "job__environment", "triggered_by")
    serializer_class = RunSerializer
    filterset_class = RunFilter
    pagination_class = LongListPagination
    # Past the numbered pages, ?before=/?after= positions in the default order (newest first).
    cursor_field = "scheduled_for"
    filter_backends = [filters.DjangoFilterBackend, OrderingFilter]
    ordering_fields = ["scheduled_for", "started_at", "finished_at", "status"]
    ordering = ["-scheduled_for", "-id"]

    def get_queryset(self):
        if self.action == "list":
            # The rows restrict() lets through, planned by the job (jobs.run_scope); output can be
            # large, lists don't show it.
            return restrict_runs(self.queryset.all(), self.request.user).defer("output", "definition")
        return (
            super()
            .get_queryset()
            .prefetch_related(
                Prefetch("attempts", queryset=Attempt.objects.defer("output").order_by("number")), "alerts"
            )
        )

    def get_serializer_class(self):
        return RunSerializer if self.action == "list" else RunDetailSerializer

    def retrieve(self, request, *args, **kwargs):
        run = self.get_object()
        # Someone reads this job's output (Insights: outputs nobody reads); at most one write an hour.
        note_output_viewed(run)
        return Response(self.get_serializer(run).data)

    @extend_schema(request=RequiredReasonSerializer, responses={200: RunDetailSerializer}, summary="Cancel a run")
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        run = acted_on(self, Action.CANCEL)
        services.cancel_run(run, actor=request.user, reason=reason_from(request))
        return self.detail_response(self.get_queryset().get(pk=run.pk), RunDetailSerializer)

    def _operator_action(self, request, operation):
        run = acted_on(self, Action.TRIGGER)
        operation(run, actor=request.user, reason=reason_from(request))
        return self.detail_response(self.get_queryset().get(pk=run.pk), RunDetailSerializer)

    @extend_schema(
        request=RequiredReasonSerializer,
        responses={200: RunDetailSerializer},
        summary="Rerun a finished or lost run as a new attempt of the job's live definition",
    )
    @action(detail=True, methods=["post"])
    def rerun(self, request, pk=None):
        refuse_rollback(request, acted_on(self, Action.TRIGGER))
        return self._operator_action(request, services.rerun_run)

    @extend_schema(
        request=RequiredReasonSerializer,
        responses={200: RerunFailedSerializer},
        summary="Rerun the failed steps of this run's workflow instance that you may act on, on their live definitions",
    )
    @action(detail=True, methods=["post"], url_path="rerun-failed")
    def rerun_failed(self, request, pk=None):
        run = acted_on(self, Action.TRIGGER)
        refuse_rollback(request, run)
        result = services.rerun_failed_steps(run, actor=request.user, reason=reason_from(request))
        run = self.get_queryset().get(pk=run.pk)
        context = {**self.get_serializer_context(), "result": result}
        return Response(RerunFailedSerializer(run, context=context).data)

    @extend_schema(
        request=RequiredReasonSerializer,
        responses={200: RunDetailSerializer},
        summary="Settle a failed, lost or skipped run by hand as succeeded",
    )
    @action(detail=True, methods=["post"], url_path="mark-succeeded")
    def mark_succeeded(self, request, pk=None):
        return self._operator_action(request, services.mark_run_succeeded)
