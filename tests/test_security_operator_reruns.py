"""Attacks on operator reruns (issue 13, holes 7 and 8): an operator narrowed to one team reruns
only the failed steps it may act on; a rerun executes the job's live (approved) definition, never the
run's old snapshot (that would be a rollback without a change request); a paused job is not rerun."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.utils import timezone

from approvals.services import approve_change, propose_change
from governance.actors import SYSTEM
from governance.models import AuditAction, AuditEvent, Role
from governance.services import grant_role
from jobs.executor import execute_run
from jobs.models import Run, RunStatus
from jobs.services import set_paused, trigger_run
from tests.api_support import client_for


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def failed_run(job, when):
    return Run.objects.create(
        job=job,
        tenant_id=job.tenant_id,
        scheduled_for=when,
        status=RunStatus.FAILED,
        job_version=job.version,
        definition=job.definition(),
        exit_code=1,
        finished_at=timezone.now(),
    )


def test_a_narrowed_operator_reruns_only_its_teams_failed_steps(cast):
    narrowed = get_user_model().objects.create_user("payments-operator")
    grant_role(narrowed, Role.OPERATOR, tenant=cast.acme, team=cast.payments, actor=SYSTEM)
    slot = timezone.now().replace(microsecond=0)
    ours = failed_run(cast.make_job(cast.dev, command=["/bin/true"]), slot)
    theirs = failed_run(cast.make_job(cast.dev, team=cast.data, command=["/bin/true"]), slot)
    client = client_for(narrowed)
    assert client.get(f"/api/v1/runs/{theirs.pk}/").status_code == 404

    response = client.post(f"/api/v1/runs/{ours.pk}/rerun-failed/", {"reason": "db back"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["requeued"] == [ours.pk]
    assert body["not_in_scope"] == 1
    assert "1 other failed step is outside your scope" in body["message"]
    assert str(theirs.pk) not in str(body["requeued"]) and "data.warehouse" not in response.content.decode()
    theirs.refresh_from_db()
    assert theirs.status == RunStatus.FAILED and theirs.queued_at is None
    assert Run.objects.get(pk=ours.pk).status == RunStatus.QUEUED
    assert not AuditEvent.objects.filter(action=AuditAction.RUN_RERUN, object_id=str(theirs.pk)).exists()


def test_a_tenant_wide_operator_still_reruns_every_failed_step_of_the_slot(cast):
    slot = timezone.now().replace(microsecond=0)
    ours = failed_run(cast.make_job(cast.dev, command=["/bin/true"]), slot)
    theirs = failed_run(cast.make_job(cast.dev, team=cast.data, command=["/bin/true"]), slot)
    response = client_for(cast.operator).post(
        f"/api/v1/runs/{ours.pk}/rerun-failed/", {"reason": "db back"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert sorted(response.json()["requeued"]) == sorted([ours.pk, theirs.pk])
    assert response.json()["not_in_scope"] == 0


def test_the_ui_says_how_many_failed_steps_were_outside_the_operators_scope(cast, client):
    from conftest import PASSWORD

    narrowed = get_user_model().objects.create_user("payments-operator", password=PASSWORD)
    grant_role(narrowed, Role.OPERATOR, tenant=cast.acme, team=cast.payments, actor=SYSTEM)
    slot = timezone.now().replace(microsecond=0)
    ours = failed_run(cast.make_job(cast.dev, command=["/bin/true"]), slot)
    theirs = failed_run(cast.make_job(cast.dev, team=cast.data, command=["/bin/true"]), slot)
    assert client.login(username=narrowed.username, password=PASSWORD)
    response = client.post(f"/runs/{ours.pk}/rerun-failed/", {"reason": "db back"}, follow=True)
    assert response.status_code == 200
    assert "outside your scope" in response.content.decode()
    assert Run.objects.get(pk=theirs.pk).status == RunStatus.FAILED


def _approved_update(cast, job, **definition):
    change = propose_change(actor=cast.author, action="update", job=job, definition=definition, justification="fix")
    for approver in [cast.approver, cast.approver2][: change.required_approvals]:
        change = approve_change(change, actor=approver)
    assert change.status == "applied", change.failure_reason
    job.refresh_from_db()
    return job


def test_a_rerun_executes_the_live_definition_not_the_runs_old_snapshot(cast, django_capture_on_commit_callbacks):
    job = cast.make_job(cast.staging, command=sh("echo executed-v1; exit 1"))
    with django_capture_on_commit_callbacks(execute=False):
        run = trigger_run(job, actor=cast.operator, reason="nightly by hand")
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "executed-v1" in run.output

    job = _approved_update(cast, job, command=sh("echo executed-v2"))
    assert job.version == 2
    response = client_for(cast.operator).post(f"/api/v1/runs/{run.pk}/rerun/", {"reason": "fixed"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["job_version"] == 2
    execute_run(run.pk)

    run.refresh_from_db()
    second = run.attempts.order_by("number").last()
    assert second.number == 2 and second.status == RunStatus.SUCCEEDED
    assert "executed-v2" in second.output and "executed-v1" not in second.output
    assert run.job_version == 2 and run.definition["command"] == sh("echo executed-v2")
    event = AuditEvent.objects.get(action=AuditAction.RUN_RERUN, object_id=str(run.pk))
    assert (event.data["previous_job_version"], event.data["job_version"]) == (1, 2)


def test_rerunning_failed_steps_executes_their_live_definition(cast, django_capture_on_commit_callbacks):
    job = cast.make_job(cast.dev, command=sh("echo old; exit 1"))
    run = failed_run(job, timezone.now().replace(microsecond=0))
    job = _approved_update(cast, job, command=sh("echo new"))
    response = client_for(cast.operator).post(f"/api/v1/runs/{run.pk}/rerun-failed/", {"reason": "x"}, format="json")
    assert response.status_code == 200, response.content
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.output.strip() == "new" and run.job_version == job.version


def test_a_rerun_of_a_paused_job_is_refused_and_changes_nothing(cast):
    job = cast.make_job(cast.dev, command=["/bin/true"])
    run = failed_run(job, timezone.now().replace(microsecond=0))
    job = _approved_update(cast, job, command=["/bin/false"])
    set_paused(job, actor=cast.operator, paused=True, reason="bad release")
    client = client_for(cast.operator)
    for action in ("rerun", "rerun-failed"):
        response = client.post(f"/api/v1/runs/{run.pk}/{action}/", {"reason": "try anyway"}, format="json")
        assert response.status_code == 409, (action, response.content)
        assert "paused" in response.json()["detail"], response.content
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.job_version == 1 and run.definition["command"] == ["/bin/true"]
    assert not AuditEvent.objects.filter(action=AuditAction.RUN_RERUN).exists()
    # The settle action does not execute anything: still offered on the page of a paused job.
    assert (
        client.post(f"/api/v1/runs/{run.pk}/mark-succeeded/", {"reason": "by hand"}, format="json").status_code == 200
    )


def test_asking_a_rerun_to_execute_an_earlier_version_is_refused_as_a_rollback(cast):
    job = cast.make_job(cast.dev, command=["/bin/true"])
    run = failed_run(job, timezone.now().replace(microsecond=0))
    _approved_update(cast, job, command=["/bin/false"])
    for action in ("rerun", "rerun-failed"):
        response = client_for(cast.operator).post(
            f"/api/v1/runs/{run.pk}/{action}/", {"reason": "old one worked", "job_version": 1}, format="json"
        )
        assert response.status_code == 400, response.content
        assert "rollback" in response.json()["job_version"][0] and "change request" in response.json()["job_version"][0]
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.job_version == 1
