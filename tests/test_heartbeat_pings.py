"""Heartbeats: external jobs report by pinging /hb/<token>/...; a missing ping past its grace is a
silent failure with an alert; long command runs can ping to show they are alive."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from jobs.executor import claim, execute_run
from jobs.models import Alert, AlertKind, Run, RunStatus
from jobs.recovery import sweep
from jobs.services import trigger_run


@pytest.fixture
def external(cast):
    return cast.make_job(cast.dev, kind="external", command=[], heartbeat={"grace_seconds": 60})


def waiting_run(cast, job) -> Run:
    run = trigger_run(job, actor=cast.operator, reason="test")
    assert execute_run(run.pk) == RunStatus.RUNNING
    run.refresh_from_db()
    return run


def test_an_external_run_waits_for_its_ping_and_succeeds_on_it(cast, external):
    run = waiting_run(cast, external)
    assert run.heartbeat_deadline is not None and "Waiting for a ping" in run.reason
    client = Client()
    assert client.get(f"/hb/{external.ping_token}/start").status_code == 200
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.heartbeat_at is not None
    response = client.post(f"/hb/{external.ping_token}", data="42 rows", content_type="text/plain")
    assert response.status_code == 200
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.exit_code == 0 and run.output == "42 rows"
    assert run.attempts.get().status == RunStatus.SUCCEEDED


@pytest.mark.parametrize(("path", "exit_code"), [("fail", None), ("3", 3), ("0", 0)])
def test_failure_and_exit_code_pings(cast, external, path, exit_code):
    run = waiting_run(cast, external)
    assert Client().get(f"/hb/{external.ping_token}/{path}").status_code == 200
    run.refresh_from_db()
    assert run.status == (RunStatus.SUCCEEDED if exit_code == 0 else RunStatus.FAILED)
    assert run.exit_code == exit_code


def test_a_missing_ping_past_its_grace_is_a_silent_failure_with_one_alert(cast, external):
    run = waiting_run(cast, external)
    assert sweep(now=run.heartbeat_deadline - timedelta(seconds=1)).silent == 0
    assert sweep(now=run.heartbeat_deadline + timedelta(seconds=1)).silent == 1
    assert sweep(now=run.heartbeat_deadline + timedelta(seconds=5)).silent == 0
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "silent failure" in run.reason
    alert = Alert.objects.get()
    assert alert.kind == AlertKind.SILENT_FAILURE and alert.run == run and alert.job == external


def test_a_start_ping_extends_the_deadline(cast, external):
    run = waiting_run(cast, external)
    first = run.heartbeat_deadline
    Client().get(f"/hb/{external.ping_token}/start")
    run.refresh_from_db()
    assert run.heartbeat_deadline >= first


def test_an_unprompted_ping_of_an_external_job_records_a_run(cast, external):
    assert Client().get(f"/hb/{external.ping_token}").status_code == 200
    run = Run.objects.get(job=external)
    assert run.status == RunStatus.SUCCEEDED and run.trigger == "ping"


def test_unknown_tokens_and_bad_exit_codes_are_refused(cast, external):
    client = Client()
    assert client.get("/hb/00000000-0000-0000-0000-000000000000").status_code == 404
    assert client.get("/hb/not-a-uuid").status_code == 404
    assert client.get(f"/hb/{external.ping_token}/256").status_code == 400
    assert client.put(f"/hb/{external.ping_token}").status_code == 405
    assert not Run.objects.exists()


def test_a_command_job_without_a_running_run_does_not_take_pings(cast):
    job = cast.make_job(cast.dev, command=["/bin/true"])
    assert Client().get(f"/hb/{job.ping_token}").status_code == 409


def test_a_long_command_run_that_stops_pinging_raises_an_alert_but_keeps_running(cast):
    job = cast.make_job(cast.dev, command=["/bin/sleep", "60"], heartbeat={"grace_seconds": 30})
    run = trigger_run(job, actor=cast.operator, reason="test")
    assert claim(run.pk)
    now = timezone.now()
    # The worker keeps renewing its lease: the process is alive, it just stopped pinging.
    Run.objects.filter(pk=run.pk).update(
        heartbeat_deadline=now + timedelta(seconds=30), lease_expires_at=now + timedelta(hours=1)
    )
    # A ping from the job moves the deadline on.
    assert Client().get(f"/hb/{job.ping_token}").status_code == 200
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.heartbeat_at is not None
    assert sweep(now=run.heartbeat_deadline + timedelta(seconds=1)).silent == 1
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    assert Alert.objects.get().kind == AlertKind.SILENT_FAILURE


def test_heartbeat_grace_is_validated(cast):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as info:
        cast.make_job(cast.dev, heartbeat={"grace_seconds": 0})
    assert "heartbeat" in info.value.message_dict
