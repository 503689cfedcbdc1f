"""Who may do what through the API: four eyes, roles, and tenant isolation (404 for another tenant)."""

import pytest

from approvals.models import ChangeRequest, ChangeStatus, Review
from approvals.services import propose_change, reject_change, withdraw_change
from governance.models import AuditAction, AuditEvent
from jobs.models import Job, JobStatus, Run
from jobs.services import trigger_run
from tests.api_support import client_for, counts, propose_body


def approve(user, change):
    return client_for(user).post(f"/api/v1/change-requests/{change.pk}/approve/", {"revision": 1}, format="json")


def proposed(cast, actor=None, **overrides):
    return cast.propose_job(actor=actor or cast.author, definition=cast.definition(**overrides), justification="needed")


def test_author_cannot_approve_own_change(cast):
    change = proposed(cast)
    response = approve(cast.author, change)
    assert response.status_code == 403
    assert "own change" in response.json()["detail"]
    assert not Review.objects.exists()
    change.refresh_from_db()
    assert change.status == ChangeStatus.SUBMITTED
    denial = AuditEvent.objects.get(action=AuditAction.ACCESS_DENIED)
    assert denial.actor == cast.author and denial.tenant == cast.acme
    assert denial.object_id == str(change.pk)


def test_superuser_cannot_approve_own_change(cast):
    change = proposed(cast, actor=cast.superuser)
    response = approve(cast.superuser, change)
    assert response.status_code == 403
    assert not Review.objects.exists()


def test_approving_twice_is_a_conflict(cast):
    change = proposed(cast)
    assert approve(cast.approver, change).status_code == 200
    before = counts()
    response = approve(cast.approver, change)
    assert response.status_code == 409
    assert response.json() == {"detail": "You have already reviewed this revision."}
    assert counts() == before


@pytest.mark.parametrize("ending", ["rejected", "withdrawn"])
def test_approving_a_closed_request_is_a_conflict(cast, ending):
    change = proposed(cast)
    if ending == "rejected":
        reject_change(change, actor=cast.approver, comment="no")
    else:
        withdraw_change(change, actor=cast.author, reason="not needed")
    before = counts()
    response = approve(cast.approver2, change)
    assert response.status_code == 409
    assert ending in response.json()["detail"]
    assert counts() == before


def test_reject_needs_a_reason_and_ends_the_request(cast):
    change = proposed(cast)
    url = f"/api/v1/change-requests/{change.pk}/reject/"
    response = client_for(cast.approver).post(url, {"revision": 1, "reason": " "}, format="json")
    assert response.status_code == 400 and "reason" in response.json()
    response = client_for(cast.approver).post(url, {"revision": 1, "reason": "wrong schedule"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "rejected"
    assert response.json()["reviews"][0]["decision"] == "reject"


def test_only_the_author_withdraws_and_submits(cast):
    change = cast.propose_job(justification="draft first", submit=False)
    url = f"/api/v1/change-requests/{change.pk}/"
    assert client_for(cast.author2).post(url + "submit/").status_code == 403
    response = client_for(cast.author).post(url + "submit/")
    assert response.status_code == 200 and response.json()["status"] == "submitted"
    assert client_for(cast.author).post(url + "submit/").status_code == 409
    assert client_for(cast.author2).post(url + "withdraw/", {"reason": "mine now"}, format="json").status_code == 403
    response = client_for(cast.author).post(url + "withdraw/", {"reason": "superseded by OPS-9"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "withdrawn"


def test_viewer_cannot_propose(cast):
    before = counts()
    response = client_for(cast.viewer).post("/api/v1/change-requests/", propose_body(cast), format="json")
    assert response.status_code == 403
    assert counts() == {**before, "audit_events": before["audit_events"] + 1}  # only the denial
    assert AuditEvent.objects.filter(action=AuditAction.ACCESS_DENIED, actor=cast.viewer).count() == 1


def test_operator_can_trigger_pause_and_resume_but_cannot_propose(cast):
    job = cast.make_job(cast.prod)
    operator = client_for(cast.operator)
    assert operator.post("/api/v1/change-requests/", propose_body(cast), format="json").status_code == 403
    update = {"action": "update", "job": job.pk, "definition": {"cron": "0 * * * *"}, "justification": "hourly"}
    assert operator.post("/api/v1/change-requests/", update, format="json").status_code == 403
    assert not ChangeRequest.objects.exclude(pk=job.change_request_id).exists()

    response = operator.post(f"/api/v1/jobs/{job.pk}/trigger/", {"reason": "smoke test"}, format="json")
    assert response.status_code == 201 and response.json()["reason"] == "smoke test"
    response = operator.post(f"/api/v1/jobs/{job.pk}/pause/", {"reason": "incident 42"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "paused" and response.json()["next_runs"] == []
    assert operator.post(f"/api/v1/jobs/{job.pk}/pause/", {"reason": "again"}, format="json").status_code == 409
    response = operator.post(f"/api/v1/jobs/{job.pk}/resume/", {"reason": "incident 42 closed"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "enabled"


def test_viewer_cannot_trigger_pause_or_cancel(cast):
    job = cast.make_job(cast.prod)
    run = trigger_run(job, actor=cast.operator, reason="test")
    viewer = client_for(cast.viewer)
    before = counts()
    assert viewer.post(f"/api/v1/jobs/{job.pk}/trigger/", format="json").status_code == 403
    assert viewer.post(f"/api/v1/jobs/{job.pk}/pause/", format="json").status_code == 403
    assert viewer.post(f"/api/v1/runs/{run.pk}/cancel/", {"reason": "x"}, format="json").status_code == 403
    after = counts()
    assert after == {**before, "audit_events": before["audit_events"] + 3}
    job.refresh_from_db()
    assert job.status == JobStatus.ENABLED


def test_operator_cancels_a_run_with_a_reason_and_only_once(cast):
    job = cast.make_job(cast.prod)
    run = trigger_run(job, actor=cast.operator, reason="test")
    operator = client_for(cast.operator)
    url = f"/api/v1/runs/{run.pk}/cancel/"
    response = operator.post(url, {}, format="json")
    assert response.status_code == 400 and "reason" in response.json()
    response = operator.post(url, {"reason": "wrong input file"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled" and response.json()["reason"] == "wrong input file"
    assert response.json()["finished_at"].endswith("Z")
    response = operator.post(url, {"reason": "again"}, format="json")
    assert response.status_code == 409


def test_deleted_job_cannot_be_triggered(cast):
    job = cast.make_job(cast.dev)
    propose_change(actor=cast.author, action="delete", job=job, justification="retired")
    response = client_for(cast.operator).post(f"/api/v1/jobs/{job.pk}/trigger/", {"reason": "x"}, format="json")
    assert response.status_code == 409
    assert not Run.objects.exists()


def test_acme_approver_cannot_review_globex_changes(cast):
    change = cast.propose_job(
        environment=cast.globex_prod,
        definition=cast.definition(name="ops.backup.snapshot"),
        justification="backups",
    )
    response = approve(cast.approver, change)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    assert not Review.objects.exists()


@pytest.fixture
def acme_objects(cast):
    """One of each acme object, plus a globex job so globex lists are not trivially empty."""
    job = cast.make_job(cast.prod)
    run = trigger_run(job, actor=cast.operator, reason="test")
    change = proposed(cast, name="payments.ledger.archive")
    event = AuditEvent.objects.filter(tenant=cast.acme).first()
    cast.make_job(cast.globex_prod)
    return {"job": job, "run": run, "change": change, "event": event}


def test_globex_member_gets_404_for_every_acme_url(cast, acme_objects):
    job, run, change, event = (acme_objects[k] for k in ("job", "run", "change", "event"))
    gets = [
        f"/api/v1/jobs/{job.pk}/",
        f"/api/v1/jobs/{job.pk}/history/",
        f"/api/v1/runs/{run.pk}/",
        f"/api/v1/change-requests/{change.pk}/",
        f"/api/v1/audit-events/{event.pk}/",
        f"/api/v1/tenants/{cast.acme.pk}/",
        f"/api/v1/teams/{cast.payments.pk}/",
        f"/api/v1/environments/{cast.prod.pk}/",
    ]
    posts = [
        (f"/api/v1/jobs/{job.pk}/trigger/", {"reason": "x"}),
        (f"/api/v1/jobs/{job.pk}/pause/", {"reason": "x"}),
        (f"/api/v1/jobs/{job.pk}/resume/", {"reason": "x"}),
        (f"/api/v1/runs/{run.pk}/cancel/", {"reason": "x"}),
        (f"/api/v1/change-requests/{change.pk}/approve/", {"revision": 1, "comment": "x"}),
        (f"/api/v1/change-requests/{change.pk}/reject/", {"revision": 1, "comment": "x"}),
        (f"/api/v1/change-requests/{change.pk}/withdraw/", {"reason": "x"}),
        (f"/api/v1/change-requests/{change.pk}/submit/", {}),
    ]
    missing = [f"/api/v1/jobs/{job.pk + 1000}/", f"/api/v1/runs/{run.pk + 1000}/"]
    for member in (cast.globex_admin, cast.globex_author, cast.globex_approver):
        client = client_for(member)
        before = counts()
        for url in gets + missing:
            response = client.get(url)
            assert (response.status_code, response.json()) == (404, {"detail": "Not found."}), (member, url)
        for url, body in posts:
            response = client.post(url, body, format="json")
            assert (response.status_code, response.json()) == (404, {"detail": "Not found."}), (member, url)
        # Nothing changed; the only rows written are the audit trail's record of each probe.
        probes = len(gets) + len(posts)
        assert counts() == {**before, "audit_events": before["audit_events"] + probes}
        recorded = AuditEvent.objects.order_by("-id")[:probes]
        assert {(e.action, e.actor_id, e.tenant_id) for e in recorded} == {
            (AuditAction.ACCESS_DENIED, member.pk, cast.acme.pk)
        }


def test_globex_lists_show_no_acme_rows_whatever_the_filters(cast, acme_objects):
    client = client_for(cast.globex_admin)
    acme_ids = (str(cast.acme.pk), "acme")
    for resource in ("jobs", "runs", "change-requests", "audit-events", "teams", "environments", "tenants"):
        for query in ["", *(f"?tenant={t}" for t in acme_ids), "?search=payments", "?team=payments"]:
            response = client.get(f"/api/v1/{resource}/{query}")
            assert response.status_code == 200, (resource, query)
            rows = response.json()["results"]
            assert all(_tenant_of(row) != cast.acme.pk for row in rows), (resource, query, rows)
            if "acme" in query and resource != "tenants":
                assert rows == [], (resource, query)
    jobs = client.get("/api/v1/jobs/").json()
    assert [row["name"] for row in jobs["results"]] == ["ops.backup.snapshot"]
    assert client.get("/api/v1/jobs/?search=payments").json()["count"] == 0
    assert client.get("/api/v1/audit-events/?search=payments").json()["count"] == 0
    assert client.get(f"/api/v1/runs/?job={acme_objects['job'].pk}").json()["count"] == 0
    assert client.get(f"/api/v1/audit-events/?object=jobs.job:{acme_objects['job'].pk}").json()["count"] == 0


def _tenant_of(row):
    tenant = row.get("tenant", row.get("id") if "naming_pattern" in row else None)
    return tenant["id"] if isinstance(tenant, dict) else tenant


def test_acme_lists_show_acme_rows(cast, acme_objects):
    client = client_for(cast.viewer)
    assert client.get("/api/v1/jobs/?tenant=acme").json()["count"] == 1
    assert client.get("/api/v1/runs/").json()["count"] == 1
    assert client.get("/api/v1/change-requests/").json()["count"] == 2
    assert client.get("/api/v1/tenants/").json()["results"][0]["slug"] == "acme"
    assert Job.objects.count() == 2
