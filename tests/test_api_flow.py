"""The governed path through the REST API: token, propose, two approvals, live job, trigger, history."""

from approvals.models import ChangeRequest
from conftest import PASSWORD
from governance.models import AuditAction, AuditEvent
from jobs.models import Run, RunStatus
from tests.api_support import client_for, propose_body


def token_client(client, username):
    response = client.post("/api/v1/auth/token/", {"username": username, "password": PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    return client


def test_a_prod_job_goes_live_after_two_approvals_and_an_operator_can_run_it(cast):
    author = token_client(client_for(None), "acme-author")
    response = author.post("/api/v1/change-requests/", propose_body(cast), format="json")
    assert response.status_code == 201, response.content
    change = response.json()
    assert change["status"] == "submitted"
    assert (change["approvals"], change["required_approvals"]) == (0, 2)
    assert change["author"] == "acme-author"
    assert change["job"] is None
    assert {row["field"] for row in change["diff"]} >= {"name", "command", "cron"}
    change_url = f"/api/v1/change-requests/{change['id']}/"

    approver = token_client(client_for(None), "acme-approver")
    response = approver.post(change_url + "approve/", {"revision": 1, "comment": "looks right"}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["approvals"]) == ("submitted", 1)
    assert response.json()["job"] is None

    approver2 = token_client(client_for(None), "acme-approver2")
    response = approver2.post(change_url + "approve/", {"revision": 1}, format="json")
    assert response.status_code == 200, response.content
    applied = response.json()
    assert applied["status"] == "applied" and applied["applied_version"] == 1
    job_id = applied["job"]["id"]

    job = author.get(f"/api/v1/jobs/{job_id}/").json()
    assert job["version"] == 1 and job["status"] == "enabled"
    assert job["definition"].items() >= cast.definition().items()
    assert len(job["next_runs"]) == 5
    assert all(item["at"].endswith("Z") and item["timezone"] == "Europe/Berlin" for item in job["next_runs"])
    assert job["next_runs"][0]["local"].endswith(("+01:00", "+02:00"))
    assert job["links"]["history"].endswith(f"/api/v1/jobs/{job_id}/history/")

    operator = token_client(client_for(None), "acme-operator")
    response = operator.post(f"/api/v1/jobs/{job_id}/trigger/", {"reason": "smoke test after go-live"}, format="json")
    assert response.status_code == 201, response.content
    run = response.json()
    assert run["status"] == "queued" and run["trigger"] == "manual" and run["triggered_by"] == "acme-operator"
    assert run["job_version"] == 1 and run["definition"] == job["definition"]
    assert Run.objects.get(pk=run["id"]).status == RunStatus.QUEUED

    runs = author.get(f"/api/v1/runs/?job={job_id}").json()
    assert runs["count"] == 1 and runs["results"][0]["id"] == run["id"]

    detail = author.get(change_url).json()
    assert [(r["reviewer"], r["decision"], r["current"]) for r in detail["reviews"]] == [
        ("acme-approver", "approve", True),
        ("acme-approver2", "approve", True),
    ]
    assert detail["reviews"][0]["comment"] == "looks right"

    history = author.get(f"/api/v1/jobs/{job_id}/history/").json()
    assert history["count"] == 1
    assert history["results"][0]["version"] == 1
    assert history["results"][0]["reason"].startswith(f"change request #{change['id']}")
    assert history["results"][0]["change_request_id"] == change["id"]

    trail = author.get(f"/api/v1/audit-events/?object=approvals.changerequest:{change['id']}").json()
    assert [event["action"] for event in reversed(trail["results"])] == [
        AuditAction.CHANGE_CREATED,
        AuditAction.CHANGE_SUBMITTED,
        AuditAction.CHANGE_APPROVED,
        AuditAction.CHANGE_APPROVED,
        AuditAction.CHANGE_APPLIED,
    ]
    assert all(event["created_at"].endswith("Z") for event in trail["results"])
    job_trail = author.get(job["links"]["audit"]).json()
    assert [event["action"] for event in job_trail["results"]] == [AuditAction.JOB_CREATED]
    assert ChangeRequest.objects.get().job_id == job_id


def test_token_is_issued_for_good_credentials_and_audited(cast):
    client = client_for(None)
    response = client.post("/api/v1/auth/token/", {"username": "acme-viewer", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    event = AuditEvent.objects.get(action=AuditAction.TOKEN_ISSUED)
    assert event.actor == cast.viewer
    assert token not in str(event.data)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/jobs/").status_code == 200


def test_bad_credentials_answer_400_and_the_failed_login_is_audited(cast):
    client = client_for(None)
    response = client.post("/api/v1/auth/token/", {"username": "acme-viewer", "password": "wrong"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"non_field_errors": ["Unable to log in with this username and password."]}
    assert AuditEvent.objects.filter(action=AuditAction.LOGIN_FAILED, actor_repr="acme-viewer").count() == 1
    assert not AuditEvent.objects.filter(action=AuditAction.TOKEN_ISSUED).exists()

    response = client.post("/api/v1/auth/token/", {"username": "acme-viewer"}, format="json")
    assert response.status_code == 400 and response.json() == {"password": ["This field is required."]}


def test_inactive_user_gets_no_token(cast):
    cast.viewer.is_active = False
    cast.viewer.save()
    response = client_for(None).post(
        "/api/v1/auth/token/", {"username": "acme-viewer", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 400


def test_api_without_credentials_answers_401(cast):
    response = client_for(None).get("/api/v1/jobs/")
    assert response.status_code == 401
    response = client_for(None).get("/api/v1/jobs/", HTTP_AUTHORIZATION="Token not-a-token")
    assert response.status_code == 401
