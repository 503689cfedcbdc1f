"""Run actions over the REST API: rerun, rerun the failed steps, mark succeeded; each needs a reason."""

from django.utils import timezone

from governance.models import AuditEvent
from jobs.models import Alert, AlertKind, Attempt, Run, RunStatus
from tests.api_support import client_for


def failed_run(cast, job=None, **fields):
    job = job or cast.make_job(cast.dev, command=["/bin/true"])
    values = {
        "job": job,
        "tenant_id": job.tenant_id,
        "scheduled_for": timezone.now(),
        "status": RunStatus.FAILED,
        "job_version": job.version,
        "definition": job.definition(),
        "exit_code": 1,
        "finished_at": timezone.now(),
    }
    values.update(fields)
    return Run.objects.create(**values)


def test_an_operator_reruns_a_failed_run_with_a_reason(cast):
    run = failed_run(cast)
    response = client_for(cast.operator).post(f"/api/v1/runs/{run.pk}/rerun/", {"reason": "disk freed"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == RunStatus.QUEUED
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    assert AuditEvent.objects.filter(object_id=str(run.pk), data__reason="disk freed").exists()


def test_every_run_action_without_a_reason_is_refused_naming_the_field(cast):
    run = failed_run(cast)
    client = client_for(cast.operator)
    for action in ("rerun", "rerun-failed", "mark-succeeded"):
        response = client.post(f"/api/v1/runs/{run.pk}/{action}/", {}, format="json")
        assert response.status_code == 400, (action, response.content)
        assert "reason" in response.json(), action
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED


def test_an_operator_marks_a_failed_run_succeeded(cast):
    run = failed_run(cast)
    response = client_for(cast.operator).post(
        f"/api/v1/runs/{run.pk}/mark-succeeded/", {"reason": "fixed by hand, INC-7"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == RunStatus.SUCCEEDED
    assert "INC-7" in Run.objects.get(pk=run.pk).reason


def test_an_operator_reruns_the_failed_steps_of_a_workflow(cast):
    run = failed_run(cast)
    response = client_for(cast.operator).post(
        f"/api/v1/runs/{run.pk}/rerun-failed/", {"reason": "upstream fixed"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED


def test_marking_a_running_run_succeeded_is_a_conflict(cast):
    run = failed_run(cast, status=RunStatus.RUNNING, finished_at=None, exit_code=None)
    response = client_for(cast.operator).post(
        f"/api/v1/runs/{run.pk}/mark-succeeded/", {"reason": "why not"}, format="json"
    )
    assert response.status_code == 409, response.content
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING


def test_a_viewer_may_not_rerun_and_another_tenant_sees_nothing(cast):
    run = failed_run(cast)
    for action in ("rerun", "rerun-failed", "mark-succeeded"):
        viewer = client_for(cast.viewer).post(f"/api/v1/runs/{run.pk}/{action}/", {"reason": "x"}, format="json")
        assert viewer.status_code == 403, (action, viewer.content)
        other = client_for(cast.globex_admin).post(f"/api/v1/runs/{run.pk}/{action}/", {"reason": "x"}, format="json")
        assert other.status_code == 404, (action, other.content)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED


def test_run_detail_shows_its_attempts_and_open_alerts(cast, django_assert_max_num_queries):
    run = failed_run(cast, status=RunStatus.LOST)
    for number in (1, 2):
        Attempt.objects.create(run=run, tenant_id=run.tenant_id, number=number, status=RunStatus.LOST, output="x")
    Alert.objects.create(tenant_id=run.tenant_id, job=run.job, run=run, kind=AlertKind.LOST_RUN, message="worker died")
    Alert.objects.create(
        tenant_id=run.tenant_id,
        job=run.job,
        run=run,
        kind=AlertKind.SILENT_FAILURE,
        message="old",
        resolved_at=timezone.now(),
    )
    client = client_for(cast.viewer)
    with django_assert_max_num_queries(12):
        body = client.get(f"/api/v1/runs/{run.pk}/").json()
    assert [a["number"] for a in body["attempts"]] == [1, 2]
    assert [a["message"] for a in body["open_alerts"]] == ["worker died"]
