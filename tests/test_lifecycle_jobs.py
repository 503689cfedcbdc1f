"""Job lifecycle: naming convention, rationale for non-standard jobs, sunset dates, recertification."""

import io
import json
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.utils import timezone

from approvals import lifecycle as job_lifecycle
from approvals.services import propose_change
from governance.models import AuditEvent
from governance.services import AccessDenied
from jobs import lifecycle
from jobs.models import Job, JobStatus
from jobs.services import JobStateError, set_paused


def _create(cast, environment=None, team=None, **overrides):
    return cast.propose_job(
        team=team or cast.payments,
        environment=environment or cast.dev,
        definition=cast.definition(**overrides),
        justification="new job",
    )


def _errors(cast, **overrides):
    with pytest.raises(ValidationError) as info:
        _create(cast, **overrides)
    return info.value.message_dict


# Naming convention


def test_names_must_follow_the_tenant_convention_and_the_team_prefix(cast):
    assert "naming convention" in _errors(cast, name="Payments.Ledger")["name"][0]
    assert "must start with 'payments.'" in _errors(cast, name="data.ledger.reconcile")["name"][0]
    _create(cast)
    assert "already exists in dev" in _errors(cast)["name"][0]
    assert not Job.objects.exclude(name="payments.ledger.reconcile").exists()


def test_a_tenant_can_set_its_own_naming_convention(cast):
    cast.acme.naming_pattern = r"^(?P<team>[a-z]+)-[a-z]+$"
    cast.acme.save()
    assert "naming convention" in _errors(cast, name="payments.ledger.reconcile")["name"][0]
    assert "must start with 'payments.'" in _errors(cast, name="data-loader")["name"][0]
    assert _create(cast, name="payments-ledger").status == "applied"


def test_the_same_name_is_free_in_another_environment_and_another_tenant(cast):
    _create(cast)
    assert _create(cast, environment=cast.staging).status == "submitted"
    change = cast.propose_job(
        environment=cast.globex_prod,
        definition=cast.definition(name="ops.ledger.reconcile"),
        justification="x",
    )
    assert change.status == "submitted"


# Rationale for non-standard jobs


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"cron": "*/2 * * * *"}, "more often than every 5 minutes"),
        ({"cron": "* 4 * * *", "timezone": "UTC"}, "more often than every 5 minutes"),
        ({"cron": "30 2 * * *", "timezone": "Europe/Berlin"}, "daylight-saving transition hour"),
        ({"cron": "15 1 * * *", "timezone": "America/New_York"}, "daylight-saving transition hour"),
        ({"criticality": "critical"}, "critical without a heartbeat"),
    ],
)
def test_non_standard_jobs_need_a_rationale(cast, overrides, reason):
    errors = _errors(cast, **overrides)
    assert list(errors) == ["rationale"] and reason in errors["rationale"][0]
    change = _create(cast, rationale="Agreed with the bank; see ticket PAY-12.", **overrides)
    assert change.status == "applied" and change.job.rationale.startswith("Agreed")


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"cron": "*/5 * * * *", "timezone": "Europe/Berlin"},  # elapsed time: DST does not apply
        {"cron": "30 2 * * *", "timezone": "UTC"},
        {"cron": "*/7 * * * *"},  # a 4-minute gap at the hour, but 9 runs an hour
        {"cron": "0,1 * * * *"},
        {"cron": "30 4 * * *", "timezone": "Europe/Berlin"},
        {"criticality": "critical", "heartbeat": {"grace_seconds": 600}},
    ],
)
def test_standard_jobs_need_no_rationale(cast, overrides):
    assert _create(cast, **overrides).status == "applied"


def test_new_non_standard_rules_are_one_function(cast, monkeypatch):
    def no_runbook(definition, seed):
        return "has no runbook" if not definition.get("runbook") else None

    monkeypatch.setattr(lifecycle, "NONSTANDARD_CHECKS", [*lifecycle.NONSTANDARD_CHECKS, no_runbook])
    assert "has no runbook" in _errors(cast, runbook="")["rationale"][0]


def test_an_update_keeps_the_live_rationale(cast):
    job = cast.make_job(cast.dev, cron="*/2 * * * *", rationale="Polls a queue.")
    change = propose_change(
        actor=cast.author, action="update", job=job, definition={"timeout_seconds": 30}, justification="x"
    )
    assert change.status == "applied"
    with pytest.raises(ValidationError) as info:
        propose_change(actor=cast.author, action="update", job=job, definition={"rationale": ""}, justification="x")
    assert "rationale" in info.value.message_dict


# Deprecation and sunset


def test_a_sunset_date_must_be_a_future_date(cast):
    today = timezone.now().date()
    assert "YYYY-MM-DD" in _errors(cast, sunset_on="next week")["sunset_on"][0]
    assert "future" in _errors(cast, sunset_on=today.isoformat())["sunset_on"][0]
    job = _create(cast, sunset_on=(today + timedelta(days=30)).isoformat()).job
    job.refresh_from_db()
    assert job.sunset_on == today + timedelta(days=30)


def test_deprecated_jobs_are_warned_once_then_disabled_as_a_system_change(cast):
    today = timezone.now().date()
    sunset = today + timedelta(days=10)
    job = cast.make_job(cast.prod, sunset_on=sunset.isoformat())
    assert list(job_lifecycle.nearing_sunset(cast.viewer)) == [job]
    assert job_lifecycle.warn_sunsets(today=today) == [job]
    assert job_lifecycle.warn_sunsets(today=today) == []
    assert AuditEvent.objects.filter(action="job.sunset_warning").count() == 1

    assert job_lifecycle.disable_sunset_jobs(today=sunset - timedelta(days=1)) == []
    assert job_lifecycle.disable_sunset_jobs(today=sunset) == [job]
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED and job.next_fire_at is None
    record = job.history.first()
    assert record.history_user is None and record.history_change_reason.startswith("system: sunset date")
    event = AuditEvent.objects.get(action="job.sunset")
    assert event.actor is None and event.actor_repr == "system"
    Job.objects.filter(pk=job.pk).update(sunset_on=today)  # the sunset day has really come
    with pytest.raises(JobStateError) as info:
        set_paused(job, actor=cast.operator, paused=False, reason="still needed")
    assert "sunset" in str(info.value)


def test_lifecycle_sweep_command_runs_every_periodic_step(cast):
    job = cast.make_job(cast.dev, sunset_on=(timezone.now().date() + timedelta(days=1)).isoformat())
    Job.objects.filter(pk=job.pk).update(sunset_on=timezone.now().date())
    out = io.StringIO()
    call_command("lifecycle_sweep", "--json", stdout=out)
    assert json.loads(out.getvalue())["sunset_disabled"] == [job.pk]
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED


# Review due dates and recertification


def test_new_jobs_are_due_for_review_one_period_later(cast, settings):
    settings.GOVERNOR_REVIEW_PERIOD_DAYS = 90
    job = cast.make_job(cast.dev)
    assert job.review_due_on == timezone.now().date() + timedelta(days=90)


def test_owners_recertify_and_overdue_jobs_are_listed(cast, django_assert_max_num_queries):
    today = timezone.now().date()
    overdue = cast.make_job(cast.dev)
    fine = cast.make_job(cast.dev, name="payments.ledger.other")
    theirs = cast.make_job(cast.dev, team=cast.data)
    Job.objects.filter(pk__in=[overdue.pk, theirs.pk]).update(review_due_on=today - timedelta(days=3))
    assert list(job_lifecycle.overdue_jobs(cast.viewer)) == [theirs, overdue]
    assert list(job_lifecycle.overdue_jobs(cast.globex_admin)) == []
    with django_assert_max_num_queries(3):
        rows = [(j.name, j.team.slug, j.environment.slug) for j in job_lifecycle.overdue_jobs(cast.viewer)]
    assert len(rows) == 2

    for outsider in (cast.operator, cast.approver, cast.globex_author):
        with pytest.raises(AccessDenied):
            job_lifecycle.recertify_job(overdue, actor=outsider, note="still needed")
    with pytest.raises(ValidationError):
        job_lifecycle.recertify_job(overdue, actor=cast.author, note=" ")
    job = job_lifecycle.recertify_job(overdue, actor=cast.author, note="Runbook checked, still needed.")
    assert job.review_due_on > today and job.version == overdue.version
    assert list(job_lifecycle.overdue_jobs(cast.viewer)) == [theirs]
    assert job.history.first().history_user == cast.author
    assert AuditEvent.objects.get(action="job.recertified").data["note"] == "Runbook checked, still needed."
    assert fine.review_due_on > today
