"""Pausing and resuming governed jobs through change requests, when the approval policy says so
(``ApprovalPolicy.pause_requires_change``): direct pause answers 409, operators propose, approvers
other than the author approve, applying pauses the job and history and audit name the request."""

from __future__ import annotations

from django.urls import reverse

from approvals.models import ChangeRequest, ChangeStatus, PostReview
from approvals.services import (
    approve_change,
    complete_post_review,
    propose_pause_change,
    propose_policy_change,
)
from conftest import PASSWORD
from governance.models import AuditAction, AuditEvent
from jobs.models import JobStatus
from tests.api_support import client_for


def _policy(cast, environment, **rule):
    rule = {"criticality": "", "required_approvals": environment.required_approvals, **rule}
    change = propose_policy_change(actor=cast.admin, environment=environment, rule=rule, justification="audit 7")
    for approver in (cast.approver, cast.approver2)[: change.required_approvals]:
        change = approve_change(change, actor=approver)
    assert change.status == ChangeStatus.APPLIED, change.failure_reason
    return change


def _governed_job(cast, **overrides):
    job = cast.make_job(cast.prod, **overrides)
    _policy(cast, cast.prod, pause_requires_change=True)
    return job


def _propose(client, job, action="pause", **body):
    return client.post(
        "/api/v1/change-requests/",
        {"action": action, "job": job.pk, "justification": "upstream outage INC-9", **body},
        format="json",
    )


def test_without_the_policy_flag_an_operator_pauses_a_prod_job_directly(cast):
    job = cast.make_job(cast.prod)
    response = client_for(cast.operator).post(f"/api/v1/jobs/{job.pk}/pause/", {"reason": "INC-9"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == JobStatus.PAUSED


def test_with_the_flag_a_direct_pause_or_resume_answers_409_and_changes_nothing(cast):
    job = _governed_job(cast)
    client = client_for(cast.operator)
    events = AuditEvent.objects.count()
    response = client.post(f"/api/v1/jobs/{job.pk}/pause/", {"reason": "INC-9"}, format="json")
    assert response.status_code == 409
    assert "propose a pause" in response.json()["detail"]
    job.refresh_from_db()
    assert job.status == JobStatus.ENABLED and AuditEvent.objects.count() == events

    change = propose_pause_change(job, actor=cast.operator, paused=True, justification="INC-9", emergency=True)
    assert change.status == ChangeStatus.APPLIED
    response = client.post(f"/api/v1/jobs/{job.pk}/resume/", {"reason": "INC-9 over"}, format="json")
    assert response.status_code == 409 and "propose a resume" in response.json()["detail"]
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED


def test_the_flag_follows_the_rule_of_the_jobs_criticality(cast):
    critical = cast.make_job(
        cast.prod, criticality="critical", name="payments.ledger.close", rationale="monitored by the close check"
    )
    low = cast.make_job(cast.prod, criticality="low")
    _policy(cast, cast.prod, criticality="critical", required_approvals=2, pause_requires_change=True)
    client = client_for(cast.operator)
    assert client.post(f"/api/v1/jobs/{critical.pk}/pause/", {"reason": "x"}, format="json").status_code == 409
    assert client.post(f"/api/v1/jobs/{low.pk}/pause/", {"reason": "x"}, format="json").status_code == 200


def test_a_policy_change_that_omits_the_flag_keeps_it(cast):
    _governed_job(cast)
    change = propose_policy_change(
        actor=cast.admin,
        environment=cast.prod,
        rule={"criticality": "", "required_approvals": 3, "separation_of_duties": False},
        justification="stricter",
    )
    assert change.proposed["pause_requires_change"] is True
    assert change.base_definition["pause_requires_change"] is True


def test_turning_the_flag_off_on_an_existing_rule_lets_operators_pause_directly_again(cast):
    job = _governed_job(cast)
    client = client_for(cast.operator)
    assert client.post(f"/api/v1/jobs/{job.pk}/pause/", {"reason": "x"}, format="json").status_code == 409
    _policy(cast, cast.prod, pause_requires_change=False)
    response = client.post(f"/api/v1/jobs/{job.pk}/pause/", {"reason": "INC-9"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == JobStatus.PAUSED


def test_a_pause_request_needs_the_policys_approvals_then_pauses_the_job_and_history_names_it(cast):
    job = _governed_job(cast)
    response = _propose(client_for(cast.operator), job, ticket="INC-9")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["action"] == "pause" and body["status"] == "submitted" and body["required_approvals"] == 2
    assert body["diff"] == [{"field": "status", "before": "enabled", "after": "paused"}]
    change = ChangeRequest.objects.get(pk=body["id"])

    approver = client_for(cast.approver)
    assert approver.post(f"/api/v1/change-requests/{change.pk}/approve/", {"revision": 1}, format="json").json()[
        "status"
    ] == ("submitted")
    job.refresh_from_db()
    assert job.status == JobStatus.ENABLED
    response = client_for(cast.approver2).post(
        f"/api/v1/change-requests/{change.pk}/approve/", {"revision": 1}, format="json"
    )
    assert response.status_code == 200 and response.json()["status"] == "applied"
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED

    history = client_for(cast.viewer).get(f"/api/v1/jobs/{job.pk}/history/").json()["results"][0]
    assert history["status"] == "paused"
    assert history["reason"].startswith(f"paused through change request #{change.pk}: upstream outage")
    event = AuditEvent.objects.get(action=AuditAction.JOB_PAUSED)
    assert event.data == {"reason": "upstream outage INC-9", "change_request": change.pk}


def test_a_resume_request_is_reviewed_like_a_pause(cast):
    job = _governed_job(cast)
    propose_pause_change(job, actor=cast.operator, paused=True, justification="INC-9", emergency=True)
    change = propose_pause_change(job, actor=cast.operator, paused=False, justification="INC-9 fixed")
    assert change.status == ChangeStatus.SUBMITTED and change.required_approvals == 2
    approve_change(change, actor=cast.approver)
    change = approve_change(change, actor=cast.approver2)
    assert change.status == ChangeStatus.APPLIED
    job.refresh_from_db()
    assert job.status == JobStatus.ENABLED and job.next_fire_at is not None


def test_nobody_approves_their_own_pause_request(cast):
    job = _governed_job(cast)
    change = ChangeRequest.objects.get(pk=_propose(client_for(cast.superuser), job).json()["id"])
    response = client_for(cast.superuser).post(
        f"/api/v1/change-requests/{change.pk}/approve/", {"revision": 1}, format="json"
    )
    assert response.status_code == 403
    assert not change.reviews.exists()
    job.refresh_from_db()
    assert job.status == JobStatus.ENABLED


def test_another_tenant_gets_404_and_a_viewer_403(cast):
    job = _governed_job(cast)
    change = ChangeRequest.objects.get(pk=_propose(client_for(cast.operator), job).json()["id"])
    globex = client_for(cast.globex_admin)
    assert globex.post(f"/api/v1/jobs/{job.pk}/pause/", {"reason": "x"}, format="json").status_code == 404
    assert (
        globex.post(f"/api/v1/change-requests/{change.pk}/approve/", {"revision": 1}, format="json").status_code == 404
    )
    response = _propose(globex, job)
    assert response.status_code == 400 and response.json()["job"] == [f"No job with id {job.pk}."]

    viewer = client_for(cast.viewer)
    assert _propose(viewer, job, action="resume").status_code == 403
    assert (
        viewer.post(f"/api/v1/change-requests/{change.pk}/approve/", {"revision": 1}, format="json").status_code == 403
    )
    assert ChangeRequest.objects.filter(action__in=["pause", "resume"]).count() == 1
    job.refresh_from_db()
    assert job.status == JobStatus.ENABLED


def test_bad_pause_requests_get_specific_errors_and_change_nothing(cast):
    job = _governed_job(cast)
    client = client_for(cast.operator)
    before = ChangeRequest.objects.count()
    response = _propose(client, job, justification="  ")
    assert response.status_code == 400 and "justification" in response.json()
    response = _propose(client, job, definition={"cron": "0 * * * *"})
    assert response.status_code == 400 and "definition" in response.json()
    response = _propose(client, job, action="resume")
    assert response.status_code == 409 and "only a paused job can be resumed" in response.json()["detail"]
    response = _propose(client, job, action="resume", emergency=True)
    assert response.status_code == 400 and "emergency" in response.json()
    assert ChangeRequest.objects.count() == before
    assert _propose(client, job).status_code == 201
    response = _propose(client, job)
    assert response.status_code == 409 and "already proposes" in response.json()["detail"]


def test_an_emergency_pause_applies_at_once_and_waits_for_a_review_after_the_fact(cast):
    job = _governed_job(cast)
    response = _propose(client_for(cast.operator), job, emergency=True)
    assert response.status_code == 201 and response.json()["status"] == "applied"
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED
    post_review = PostReview.objects.get(change_request_id=response.json()["id"])
    assert post_review.is_open
    applied = AuditEvent.objects.get(action=AuditAction.CHANGE_APPLIED, object_id=str(response.json()["id"]))
    assert applied.data["emergency_before_review"] is True
    complete_post_review(post_review, actor=cast.approver, notes="justified: the job was corrupting the ledger")
    post_review.refresh_from_db()
    assert not post_review.is_open


def test_approving_a_pause_of_a_job_that_was_paused_meanwhile_answers_409(cast):
    job = _governed_job(cast)
    change = propose_pause_change(job, actor=cast.operator, paused=True, justification="planned maintenance")
    # Ops stopped it in the meantime through the lifecycle's own path (a system change).
    type(job).objects.filter(pk=job.pk).update(status=JobStatus.PAUSED)
    response = client_for(cast.approver).post(
        f"/api/v1/change-requests/{change.pk}/approve/", {"revision": 1}, format="json"
    )
    assert response.status_code == 409 and "can no longer apply" in response.json()["detail"]


def test_ui_offers_the_proposal_instead_of_the_pause_form_and_refuses_a_forged_direct_pause(client, cast):
    job = _governed_job(cast)
    assert client.login(username=cast.operator.username, password=PASSWORD)
    html = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    assert reverse("change_pause", args=[job.pk]) in html and reverse("job_pause", args=[job.pk]) not in html
    response = client.post(reverse("job_pause", args=[job.pk]), {"reason": "INC-9"})
    assert response.status_code == 409
    page = response.content.decode()
    assert "propose a pause" in page and reverse("change_pause", args=[job.pk]) in page
    job.refresh_from_db()
    assert job.status == JobStatus.ENABLED


def test_ui_proposes_a_pause_and_refuses_one_without_a_justification(client, cast):
    job = _governed_job(cast)
    assert client.login(username=cast.operator.username, password=PASSWORD)
    url = reverse("change_pause", args=[job.pk])
    assert client.get(url).status_code == 200
    response = client.post(url, {"justification": "  "})
    assert response.status_code == 400 and "A justification is required" in response.content.decode()
    assert not ChangeRequest.objects.filter(action="pause").exists()
    response = client.post(url, {"justification": "upstream outage", "ticket": "INC-9"})
    change = ChangeRequest.objects.get(action="pause")
    assert response.status_code == 302 and response["Location"] == reverse("change_detail", args=[change.pk])
    page = client.get(response["Location"]).content.decode()
    assert "Pause job" in page and "upstream outage" in page


def test_ui_pause_proposal_pages_answer_404_to_another_tenant_and_403_to_a_viewer(client, cast):
    job = _governed_job(cast)
    assert client.login(username=cast.globex_admin.username, password=PASSWORD)
    assert client.post(reverse("change_pause", args=[job.pk]), {"justification": "x"}).status_code == 404
    assert client.login(username=cast.viewer.username, password=PASSWORD)
    assert client.post(reverse("change_pause", args=[job.pk]), {"justification": "x"}).status_code == 403
    assert not ChangeRequest.objects.filter(action="pause").exists()
