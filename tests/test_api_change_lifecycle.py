"""Change requests beyond propose/approve through the API: edit, rebase, comments, policy changes,
apply times and freezes."""

from datetime import timedelta

from django.utils import timezone

from approvals.models import ApprovalPolicy, ChangeStatus, Comment
from approvals.services import approve_change
from governance.models import AuditAction, AuditEvent
from jobs.models import Job
from tests.api_support import client_for, counts, propose_body


def create(cast, user=None, **overrides):
    response = client_for(user or cast.author).post(
        "/api/v1/change-requests/", propose_body(cast, **overrides), format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_editing_makes_a_new_revision_and_resets_approvals(cast):
    change = create(cast)
    url = f"/api/v1/change-requests/{change['id']}/"
    assert client_for(cast.approver).post(url + "approve/", {"revision": 1}, format="json").json()["approvals"] == 1

    response = client_for(cast.author).patch(
        url, {"based_on_revision": 1, "definition": {"cron": "15 4 * * *"}}, format="json"
    )
    assert response.status_code == 200, response.content
    edited = response.json()
    assert (edited["revision"], edited["approvals"], edited["status"]) == (2, 0, "submitted")
    assert edited["proposed"]["cron"] == "15 4 * * *"
    assert edited["proposed"]["command"] == cast.definition()["command"]  # untouched fields stay
    assert [(r["reviewer"], r["current"]) for r in edited["reviews"]] == [("acme-approver", False)]
    assert edited["approvers"] == []

    # The approver may approve the new revision again, naming it.
    response = client_for(cast.approver).post(url + "approve/", {"revision": 2}, format="json")
    assert response.json()["approvals"] == 1 and response.json()["approvers"] == ["acme-approver"]


def test_an_edit_of_an_outdated_revision_is_a_conflict(cast):
    change = create(cast)
    url = f"/api/v1/change-requests/{change['id']}/"
    author = client_for(cast.author)
    assert author.patch(url, {"based_on_revision": 1, "ticket": "OPS-2"}, format="json").status_code == 200
    before = counts()
    response = author.patch(url, {"based_on_revision": 1, "ticket": "OPS-3"}, format="json")
    assert response.status_code == 409 and "revision" in response.json()["detail"]
    assert counts() == before


def test_only_the_author_edits_with_valid_fields(cast):
    change = create(cast)
    url = f"/api/v1/change-requests/{change['id']}/"
    before = counts()
    response = client_for(cast.author2).patch(url, {"based_on_revision": 1, "ticket": "x"}, format="json")
    assert response.status_code == 403
    response = client_for(cast.author).patch(
        url, {"based_on_revision": 1, "definition": {"cron": "99 * * * *"}}, format="json"
    )
    assert response.status_code == 400 and "cron" in response.json()
    response = client_for(cast.author).patch(url, {"based_on_revision": 1, "status": "applied"}, format="json")
    assert response.status_code == 400 and response.json() == {"status": ["Unknown field."]}
    response = client_for(cast.author).patch(url, {"ticket": "x"}, format="json")
    assert response.status_code == 400 and "based_on_revision" in response.json()
    assert counts()["change_requests"] == before["change_requests"]
    assert client_for(cast.viewer).get(url).json()["revision"] == 1


def test_rebase_moves_a_stale_update_onto_the_live_version(cast):
    job = cast.make_job(cast.prod)
    stale = cast.propose_update(job, {"cron": "0 4 * * *"}, justification="later")
    other = cast.propose_update(job, {"timeout_seconds": 120}, actor=cast.author2, justification="slower")
    approve_change(other, actor=cast.approver)
    approve_change(other, actor=cast.approver2)
    url = f"/api/v1/change-requests/{stale.pk}/"
    response = client_for(cast.approver).post(url + "approve/", {"revision": 1}, format="json")
    assert response.status_code == 409 and "rebase" in response.json()["detail"]

    response = client_for(cast.author).post(url + "rebase/")
    assert response.status_code == 200, response.content
    rebased = response.json()
    assert rebased["base_version"] == 2 and rebased["revision"] == 2
    assert rebased["proposed"]["timeout_seconds"] == 120 and rebased["proposed"]["cron"] == "0 4 * * *"
    assert rebased["diff"] == [{"field": "cron", "before": "*/5 * * * *", "after": "0 4 * * *"}]
    assert client_for(cast.author).post(url + "rebase/").status_code == 409


def test_comments_are_listed_and_never_count_as_approvals(cast):
    change = create(cast)
    url = f"/api/v1/change-requests/{change['id']}/"
    response = client_for(cast.approver).post(
        url + "comments/", {"body": "Which ticket covers the rollback?"}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["author"] == "acme-approver" and response.json()["created_at"].endswith("Z")
    assert client_for(cast.author).post(url + "comments/", {"body": "OPS-124"}, format="json").status_code == 201
    assert client_for(cast.author).post(url + "comments/", {"body": " "}, format="json").status_code == 400
    assert client_for(cast.viewer).post(url + "comments/", {"body": "me too"}, format="json").status_code == 403
    detail = client_for(cast.viewer).get(url).json()
    assert [(c["author"], c["body"]) for c in detail["comments"]] == [
        ("acme-approver", "Which ticket covers the rollback?"),
        ("acme-author", "OPS-124"),
    ]
    assert detail["approvals"] == 0 and Comment.objects.count() == 2
    response = client_for(cast.globex_approver).post(url + "comments/", {"body": "hi"}, format="json")
    assert response.status_code == 404


def test_an_apply_time_holds_an_approved_change(cast):
    later = (timezone.now() + timedelta(days=1)).replace(microsecond=0)
    change = create(cast, apply_after=later.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert change["apply_after"].startswith(later.strftime("%Y-%m-%dT%H:%M:%S")) and change["apply_after"].endswith("Z")
    url = f"/api/v1/change-requests/{change['id']}/"
    client_for(cast.approver).post(url + "approve/", {"revision": 1}, format="json")
    approved = client_for(cast.approver2).post(url + "approve/", {"revision": 1}, format="json").json()
    assert approved["status"] == "approved"
    assert "apply time" in approved["hold_reason"]
    assert not Job.objects.exists()


def test_an_emergency_change_applies_through_a_freeze(cast):
    cast.freeze(hours_to=2, reason="year-end close")
    normal = create(cast)
    urgent = create(cast, emergency=True, definition=cast.definition(name="payments.ledger.hotfix"))
    assert urgent["emergency"] is True
    for change in (normal, urgent):
        url = f"/api/v1/change-requests/{change['id']}/"
        client_for(cast.approver).post(url + "approve/", {"revision": 1}, format="json")
        client_for(cast.approver2).post(url + "approve/", {"revision": 1}, format="json")
    held = client_for(cast.viewer).get(f"/api/v1/change-requests/{normal['id']}/").json()
    assert held["status"] == "approved" and "year-end close" in held["hold_reason"]
    applied = client_for(cast.viewer).get(f"/api/v1/change-requests/{urgent['id']}/").json()
    assert applied["status"] == "applied" and applied["hold_reason"] == ""


def test_a_tenant_admin_proposes_a_policy_change_through_the_api(cast):
    body = {
        "action": "policy",
        "environment": cast.staging.pk,
        "definition": {"criticality": "critical", "required_approvals": 2, "separation_of_duties": False},
        "justification": "Critical jobs need four eyes plus one in staging too.",
    }
    before = counts()
    assert client_for(cast.author).post("/api/v1/change-requests/", body, format="json").status_code == 403
    response = client_for(cast.admin).post(
        "/api/v1/change-requests/", {**body, "team": cast.payments.pk}, format="json"
    )
    assert response.status_code == 400 and "team" in response.json()
    bad = {**body, "definition": {"criticality": "critical", "required_approvals": 99}}
    response = client_for(cast.admin).post("/api/v1/change-requests/", bad, format="json")
    assert response.status_code == 400 and "required_approvals" in response.json()
    assert counts()["change_requests"] == before["change_requests"]

    response = client_for(cast.admin).post("/api/v1/change-requests/", body, format="json")
    assert response.status_code == 201, response.content
    change = response.json()
    assert change["action"] == "policy" and change["team"] is None and change["job"] is None
    assert {"field": "required_approvals", "before": None, "after": 2} in change["diff"]
    response = client_for(cast.approver).post(
        f"/api/v1/change-requests/{change['id']}/approve/", {"revision": 1}, format="json"
    )
    assert response.status_code == 200 and response.json()["status"] == "applied"
    assert ApprovalPolicy.objects.get(environment=cast.staging, criticality="critical").required_approvals == 2


def test_a_draft_is_submitted_later_and_takes_the_policy_then(cast):
    change = create(cast, submit=False)
    assert change["status"] == ChangeStatus.DRAFT and change["required_approvals"] is None
    response = client_for(cast.author).post(f"/api/v1/change-requests/{change['id']}/submit/")
    assert response.status_code == 200 and response.json()["required_approvals"] == 2
    assert AuditEvent.objects.filter(action=AuditAction.CHANGE_SUBMITTED).count() == 1


def test_a_team_narrowed_approver_is_not_asked_to_review_policy_changes(cast):
    from django.contrib.auth import get_user_model

    from approvals.services import propose_policy_change
    from governance.actors import SYSTEM
    from governance.models import Role
    from governance.services import grant_role

    narrowed = get_user_model().objects.create_user("payments-approver")
    grant_role(narrowed, Role.APPROVER, tenant=cast.acme, team=cast.payments, actor=SYSTEM)
    job_change = create(cast)
    policy_change = propose_policy_change(
        actor=cast.admin,
        environment=cast.prod,
        rule={"criticality": "low", "required_approvals": 1, "separation_of_duties": False},
        justification="low-criticality jobs need one approval",
    )

    def queue(user):
        response = client_for(user).get("/api/v1/change-requests/?awaiting_my_review=1")
        return {row["id"] for row in response.json()["results"]}

    assert queue(narrowed) == {job_change["id"]}
    assert queue(cast.approver) == {job_change["id"], policy_change.pk}
    response = client_for(narrowed).post(
        f"/api/v1/change-requests/{policy_change.pk}/approve/", {"revision": 1}, format="json"
    )
    assert response.status_code == 403
