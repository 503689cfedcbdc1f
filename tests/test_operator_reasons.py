"""Every operator action (trigger, pause, resume, cancel, rerun, rerun the failed steps, mark
succeeded) needs a reason, in the service, the API and the browser UI. A blank one changes nothing;
a given one lands on the run or the job's history and in the audit event."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from conftest import PASSWORD
from governance.models import AuditAction, AuditEvent
from jobs import services
from jobs.models import JobStatus, Run, RunStatus
from tests.api_support import client_for

BLANK_BODIES = [{}, {"reason": ""}, {"reason": "   "}, {"reason": "\n\t"}]


def _run(job, status):
    now = timezone.now()
    return Run.objects.create(
        job=job,
        tenant_id=job.tenant_id,
        scheduled_for=now,
        status=status,
        job_version=job.version,
        definition=job.definition(),
        queued_at=now,
        finished_at=now if status != RunStatus.QUEUED else None,
        exit_code=1 if status == RunStatus.FAILED else None,
    )


def _target(cast, action):
    """(job, run) in the state the action applies to."""
    job = cast.make_job(cast.prod)
    if action == "resume":
        services.set_paused(job, actor=cast.operator, paused=True, reason="set up")
        job.refresh_from_db()
    run = None
    if action == "cancel":
        run = _run(job, RunStatus.QUEUED)
    elif action in ("rerun", "rerun-failed", "mark-succeeded"):
        run = _run(job, RunStatus.FAILED)
    return job, run


API_URLS = {
    "trigger": "/api/v1/jobs/{job}/trigger/",
    "pause": "/api/v1/jobs/{job}/pause/",
    "resume": "/api/v1/jobs/{job}/resume/",
    "cancel": "/api/v1/runs/{run}/cancel/",
    "rerun": "/api/v1/runs/{run}/rerun/",
    "rerun-failed": "/api/v1/runs/{run}/rerun-failed/",
    "mark-succeeded": "/api/v1/runs/{run}/mark-succeeded/",
}
UI_URLS = {
    "trigger": "job_trigger",
    "pause": "job_pause",
    "resume": "job_resume",
    "cancel": "run_cancel",
    "rerun": "run_rerun",
    "rerun-failed": "run_rerun-failed",
    "mark-succeeded": "run_mark-succeeded",
}
ACTIONS = list(API_URLS)


def _snapshot(job, run):
    job.refresh_from_db()
    state = {
        "job_status": job.status,
        "job_history": job.history.count(),
        "runs": Run.objects.count(),
        "audit_events": AuditEvent.objects.count(),
    }
    if run is not None:
        run.refresh_from_db()
        state["run_status"] = run.status
    return state


@pytest.mark.parametrize("action", ACTIONS)
def test_api_refuses_every_operator_action_without_a_reason_and_changes_nothing(cast, action):
    job, run = _target(cast, action)
    client = client_for(cast.operator)
    url = API_URLS[action].format(job=job.pk, run=run.pk if run else 0)
    before = _snapshot(job, run)
    for body in [*BLANK_BODIES, {"reason": None}]:
        response = client.post(url, body, format="json")
        assert response.status_code == 400, (action, body, response.content)
        assert response.json()["reason"] == ["Give a reason: operator actions are recorded with it in the audit trail."]
    assert _snapshot(job, run) == before


@pytest.mark.parametrize("action", ACTIONS)
def test_ui_refuses_a_forged_post_without_a_reason_and_changes_nothing(client, cast, action):
    job, run = _target(cast, action)
    assert client.login(username=cast.operator.username, password=PASSWORD)
    url = reverse(UI_URLS[action], args=[run.pk if run else job.pk])
    before = _snapshot(job, run)
    for body in BLANK_BODIES:
        response = client.post(url, body)
        assert response.status_code == 400, (action, body)
        assert "Give a reason: it is recorded in the audit trail." in response.content.decode()
    assert _snapshot(job, run) == before


@pytest.mark.parametrize("action", ACTIONS)
def test_a_viewer_learns_403_before_any_complaint_about_the_reason(cast, action):
    job, run = _target(cast, action)
    url = API_URLS[action].format(job=job.pk, run=run.pk if run else 0)
    assert client_for(cast.viewer).post(url, {}, format="json").status_code == 403


def test_services_refuse_a_blank_reason_with_a_field_error(cast):
    job, _ = _target(cast, "trigger")
    queued = _run(job, RunStatus.QUEUED)
    calls = [
        lambda reason: services.trigger_run(job, actor=cast.operator, reason=reason),
        lambda reason: services.set_paused(job, actor=cast.operator, paused=True, reason=reason),
        lambda reason: services.cancel_run(queued, actor=cast.operator, reason=reason),
    ]
    before = _snapshot(job, queued)
    for call in calls:
        for reason in ("", "  ", None):
            with pytest.raises(ValidationError) as caught:
                call(reason)
            assert "reason" in caught.value.message_dict
    assert _snapshot(job, queued) == before


def test_a_manual_run_carries_its_reason_on_the_run_and_in_the_audit_event(cast):
    job, _ = _target(cast, "trigger")
    response = client_for(cast.operator).post(
        f"/api/v1/jobs/{job.pk}/trigger/", {"reason": "  re-run after fixing the input, INC-42 "}, format="json"
    )
    assert response.status_code == 201
    run = Run.objects.get(pk=response.json()["id"])
    assert run.reason == "re-run after fixing the input, INC-42" and run.triggered_by == cast.operator
    event = AuditEvent.objects.get(action=AuditAction.RUN_TRIGGERED)
    assert event.data["reason"] == "re-run after fixing the input, INC-42"


def test_pause_and_resume_reasons_land_in_the_job_history_and_the_audit_trail(cast):
    job, _ = _target(cast, "pause")
    client = client_for(cast.operator)
    response = client.post(f"/api/v1/jobs/{job.pk}/pause/", {"reason": "upstream outage INC-7"}, format="json")
    assert response.status_code == 200
    response = client.post(f"/api/v1/jobs/{job.pk}/resume/", {"reason": "INC-7 resolved"}, format="json")
    assert response.status_code == 200
    history = client.get(f"/api/v1/jobs/{job.pk}/history/").json()["results"]
    assert [h["reason"] for h in history[:2]] == ["resumed: INC-7 resolved", "paused: upstream outage INC-7"]
    assert [h["user"] for h in history[:2]] == [cast.operator.username] * 2
    events = AuditEvent.objects.filter(action__in=[AuditAction.JOB_PAUSED, AuditAction.JOB_RESUMED]).order_by("id")
    assert [e.data["reason"] for e in events] == ["upstream outage INC-7", "INC-7 resolved"]


def test_a_long_pause_reason_is_kept_whole_in_the_audit_event(cast):
    job, _ = _target(cast, "pause")
    reason = "storage migration " * 50
    services.set_paused(job, actor=cast.operator, paused=True, reason=reason)
    record = job.history.order_by("-history_id").first()
    assert len(record.history_change_reason) <= 100 and record.history_change_reason.startswith("paused: storage")
    assert AuditEvent.objects.get(action=AuditAction.JOB_PAUSED).data["reason"] == reason.strip()


def test_a_cancel_reason_lands_on_the_run_and_in_the_audit_event(cast):
    job, run = _target(cast, "cancel")
    response = client_for(cast.operator).post(
        f"/api/v1/runs/{run.pk}/cancel/", {"reason": "wrong input"}, format="json"
    )
    assert response.status_code == 200 and response.json()["reason"] == "wrong input"
    assert AuditEvent.objects.get(action=AuditAction.RUN_CANCELLED).data["reason"] == "wrong input"


def test_every_reason_input_in_the_pages_is_required(client, cast):
    job, _ = _target(cast, "trigger")
    failed = _run(job, RunStatus.FAILED)
    assert client.login(username=cast.operator.username, password=PASSWORD)
    job_page = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    assert job_page.count('name="reason" required') == 2  # trigger, pause
    services.set_paused(job, actor=cast.operator, paused=True, reason="x")
    job_page = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    assert 'id="id_resume_reason" name="reason" required' in job_page
    run_page = client.get(reverse("run_detail", args=[failed.pk])).content.decode()
    assert 'id="id_settle_reason" name="reason" required' in run_page


def test_ui_resume_with_a_reason_resumes_and_records_it(client, cast):
    job, _ = _target(cast, "resume")
    assert client.login(username=cast.operator.username, password=PASSWORD)
    response = client.post(reverse("job_resume", args=[job.pk]), {"reason": "maintenance done"})
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == JobStatus.ENABLED
    assert AuditEvent.objects.get(action=AuditAction.JOB_RESUMED).data["reason"] == "maintenance done"
