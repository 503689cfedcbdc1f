"""Core change-control and scheduling behaviour at the service layer."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from approvals.models import ChangeStatus, Review
from approvals.services import ChangeError, approve_change, reject_change
from governance.access import Action, can, restrict
from governance.services import AccessDenied
from jobs import scheduler
from jobs.executor import execute_run
from jobs.models import Job, Run, RunStatus


def test_prod_job_applies_only_after_two_distinct_approvals(cast):
    change = cast.propose_job(justification="new nightly job")
    assert change.status == ChangeStatus.SUBMITTED
    assert not Job.objects.exists()
    change = approve_change(change, actor=cast.approver)
    assert change.status == ChangeStatus.SUBMITTED
    assert not Job.objects.exists()
    with pytest.raises(ChangeError):
        approve_change(change, actor=cast.approver)
    change = approve_change(change, actor=cast.approver2)
    assert change.status == ChangeStatus.APPLIED
    job = Job.objects.get()
    assert job.version == 1 and job.change_request_id == change.pk
    assert job.history.first().history_change_reason.startswith(f"change request #{change.pk} ")


def test_superuser_cannot_approve_own_change(cast):
    change = cast.propose_job(actor=cast.superuser, justification="mine")
    with pytest.raises(AccessDenied):
        approve_change(change, actor=cast.superuser)
    assert not Review.objects.exists()


def test_rejection_ends_the_request(cast):
    change = cast.propose_job(justification="x")
    change = reject_change(change, actor=cast.approver, comment="no")
    assert change.status == ChangeStatus.REJECTED
    with pytest.raises(ChangeError):
        approve_change(change, actor=cast.approver2)
    assert not Job.objects.exists()


def test_ungoverned_environment_applies_at_once(cast):
    job = cast.make_job(cast.dev)
    assert job.environment == cast.dev and job.next_fire_at is not None


def test_bad_definition_is_refused_with_field_errors(cast):
    with pytest.raises(ValidationError) as info:
        cast.propose_job(
            environment=cast.dev,
            definition=cast.definition(cron="61 * * * *", timezone="Mars/Olympus", command="echo hi"),
            justification="",
        )
    assert set(info.value.message_dict) == {"justification"}
    with pytest.raises(ValidationError) as info:
        cast.propose_job(
            environment=cast.dev,
            definition=cast.definition(cron="61 * * * *", timezone="Mars/Olympus", command="echo hi"),
            justification="ok",
        )
    assert set(info.value.message_dict) == {"cron", "timezone", "command"}


def test_globex_member_sees_nothing_of_acme(cast):
    job = cast.make_job(cast.dev)
    assert not restrict(Job.objects.all(), cast.globex_admin).exists()
    assert not can(cast.globex_admin, Action.VIEW, job)
    assert restrict(Job.objects.all(), cast.viewer).count() == 1


def test_tick_creates_one_run_per_slot_and_executor_records_it(cast):
    job = cast.make_job(cast.dev, command=["/bin/echo", "hi there"])
    slot = job.next_fire_at
    first = scheduler.tick(now=slot + timedelta(seconds=1))
    second = scheduler.tick(now=slot + timedelta(seconds=1))
    assert (first.created, second.created) == (1, 0)
    run = Run.objects.get()
    assert run.scheduled_for == slot
    assert execute_run(run.pk) == RunStatus.SUCCEEDED
    assert execute_run(run.pk) == "not-claimed"
    run.refresh_from_db()
    assert run.output == "hi there\n" and run.exit_code == 0


def test_timeout_kills_the_process_group(cast):
    job = cast.make_job(cast.dev, command=["/bin/sh", "-c", "sleep 30 & sleep 30"], timeout_seconds=1)
    run = Run.objects.create(
        job=job, tenant=cast.acme, scheduled_for=timezone.now(), job_version=1, definition=job.definition()
    )
    assert execute_run(run.pk) == RunStatus.TIMED_OUT
