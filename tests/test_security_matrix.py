"""The API permission matrix, generated: role x own/other tenant x read/write/action -> expected status.

Every allowed write leaves an audit event by the caller; every refused one changes nothing
but the audit trail's record of the refusal.
"""

import csv
import io

import pytest

from approvals.models import ChangeRequest
from approvals.services import propose_change
from governance.models import AuditAction, AuditEvent, Role, ServiceAccount
from governance.tokens import create_service_account, issue_token
from jobs.models import Run
from jobs.services import trigger_run
from monitoring.incidents import raise_alert
from tests.api_support import client_for, counts
from tests.incident_support import signal

ROLES = ["viewer", "operator", "author", "approver", "admin", "globex_admin", "outsider"]
HIDDEN = {404}


def _world(cast):
    job = cast.make_job(cast.staging)
    run = trigger_run(job, actor=cast.operator, reason="matrix")
    change = propose_change(
        actor=cast.author2, action="update", job=job, definition={"cron": "0 * * * *"}, justification="hourly"
    )
    account = create_service_account(actor=cast.admin, tenant=cast.acme, name="matrix-bot", role=Role.OPERATOR)
    token, _ = issue_token(account.user, actor=cast.admin)
    incident = raise_alert(signal(job, run_id=run.pk))
    return {"job": job, "run": run, "change": change, "account": account, "token": token, "incident": incident}


# case -> (method, url template, body, {role: expected statuses}); unlisted roles answer 404 (hidden).
OPERATE = {"operator", "author", "admin"}
CASES = {
    "read job": (
        "get",
        "/api/v1/jobs/{job}/",
        None,
        dict.fromkeys(["viewer", "operator", "author", "approver", "admin"], {200}),
    ),
    "read run": (
        "get",
        "/api/v1/runs/{run}/",
        None,
        dict.fromkeys(["viewer", "operator", "author", "approver", "admin"], {200}),
    ),
    "read job history": (
        "get",
        "/api/v1/jobs/{job}/history/",
        None,
        dict.fromkeys(["viewer", "operator", "author", "approver", "admin"], {200}),
    ),
    "read change": (
        "get",
        "/api/v1/change-requests/{change}/",
        None,
        dict.fromkeys(["viewer", "operator", "author", "approver", "admin"], {200}),
    ),
    "trigger": (
        "post",
        "/api/v1/jobs/{job}/trigger/",
        {"reason": "m"},
        {"viewer": {403}, "approver": {403}, **dict.fromkeys(OPERATE, {201})},
    ),
    "pause": (
        "post",
        "/api/v1/jobs/{job}/pause/",
        {"reason": "m"},
        {"viewer": {403}, "approver": {403}, **dict.fromkeys(OPERATE, {200})},
    ),
    "cancel run": (
        "post",
        "/api/v1/runs/{run}/cancel/",
        {"reason": "m"},
        {"viewer": {403}, "approver": {403}, **dict.fromkeys(OPERATE, {200})},
    ),
    "acknowledge incident": (
        "post",
        "/api/v1/incidents/{incident}/acknowledge/",
        None,
        {"viewer": {403}, "approver": {403}, **dict.fromkeys(OPERATE, {200})},
    ),
    "resolve incident": (
        "post",
        "/api/v1/incidents/{incident}/resolve/",
        {"reason": "m"},
        {"viewer": {403}, "approver": {403}, **dict.fromkeys(OPERATE, {200})},
    ),
    "propose update": (
        "post",
        "/api/v1/change-requests/",
        {"action": "update", "job": "{job}", "definition": {"cron": "30 * * * *"}, "justification": "m"},
        {
            "viewer": {403},
            "operator": {403},
            "approver": {403},
            "author": {201},
            "admin": {201},
            "globex_admin": {400, 404},
            "outsider": {400, 404},
        },
    ),
    "approve": (
        "post",
        "/api/v1/change-requests/{change}/approve/",
        {"comment": "ok", "revision": 1},
        {"viewer": {403}, "operator": {403}, "author": {403}, "admin": {403}, "approver": {200}},
    ),
    "reject": (
        "post",
        "/api/v1/change-requests/{change}/reject/",
        {"comment": "no", "revision": 1},
        {"viewer": {403}, "operator": {403}, "author": {403}, "admin": {403}, "approver": {200}},
    ),
    # An approval names the revision its reviewer read: the change was edited since (409), or the
    # request does not say (400, naming the field); refusals by role come first.
    "approve an outdated revision": (
        "post",
        "/api/v1/change-requests/{change}/approve/",
        {"comment": "ok", "revision": 2},
        {"viewer": {403}, "operator": {403}, "author": {403}, "admin": {403}, "approver": {409}},
    ),
    "reject an outdated revision": (
        "post",
        "/api/v1/change-requests/{change}/reject/",
        {"comment": "no", "revision": 2},
        {"viewer": {403}, "operator": {403}, "author": {403}, "admin": {403}, "approver": {409}},
    ),
    "approve without a revision": (
        "post",
        "/api/v1/change-requests/{change}/approve/",
        {"comment": "ok"},
        dict.fromkeys(["viewer", "operator", "author", "approver", "admin"], {400}),
    ),
    "issue a service-account token": (
        "post",
        "/api/v1/service-accounts/{account}/tokens/",
        {"name": "ci"},
        {"admin": {201}},
    ),
    "revoke a service-account token": ("delete", "/api/v1/auth/tokens/{token}/", None, {"admin": {204}}),
    "create service account": (
        "post",
        "/api/v1/service-accounts/",
        {"tenant": "acme", "name": "ci", "role": "viewer"},
        {
            "viewer": {403},
            "operator": {403},
            "author": {403},
            "approver": {403},
            "admin": {201},
            "globex_admin": {400},
            "outsider": {400},
        },
    ),
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", list(CASES))
def test_permission_matrix(cast, role, case):
    world = _world(cast)
    method, template, body, expected = CASES[case]
    ids = {key: obj.pk for key, obj in world.items()}
    url = template.format(**ids)
    if isinstance(body, dict):
        body = {k: (int(v.format(**ids)) if isinstance(v, str) and v.startswith("{") else v) for k, v in body.items()}
    user = getattr(cast, role)
    allowed = expected.get(role, HIDDEN)
    client = client_for(user)  # issuing its token is audited too: snapshot after it
    before = counts()
    before_sa = ServiceAccount.objects.count()
    last_event = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    response = getattr(client, method)(url, body, format="json") if body else getattr(client, method)(url)
    assert response.status_code in allowed, (role, case, response.status_code, response.content[:300])
    new_events = AuditEvent.objects.filter(id__gt=last_event)
    if method == "get":
        return
    if response.status_code < 300:
        assert new_events.filter(actor=user).exclude(action=AuditAction.ACCESS_DENIED).exists(), (role, case)
    else:
        after = counts()
        assert {k: v for k, v in after.items() if k != "audit_events"} == {
            k: v for k, v in before.items() if k != "audit_events"
        }
        assert ServiceAccount.objects.count() == before_sa
        assert not new_events.exclude(action=AuditAction.ACCESS_DENIED).exists(), list(new_events.values("action"))


@pytest.mark.parametrize("role", ROLES)
def test_list_counts_per_role(cast, role):
    world = _world(cast)
    cast.make_job(cast.globex_prod)
    client = client_for(getattr(cast, role))
    sees_acme = role in {"viewer", "operator", "author", "approver", "admin"}
    jobs = client.get("/api/v1/jobs/").json()["count"]
    runs = client.get("/api/v1/runs/").json()["count"]
    changes = client.get("/api/v1/change-requests/").json()["count"]
    if sees_acme:
        assert (jobs, runs, changes) == (
            1,
            Run.objects.filter(job=world["job"]).count(),
            ChangeRequest.objects.filter(tenant=cast.acme).count(),
        )
    elif role == "globex_admin":
        assert (jobs, runs) == (1, 0)
        assert changes == ChangeRequest.objects.filter(tenant=cast.globex).count()
    else:
        assert (jobs, runs, changes) == (0, 0, 0)
    export = client.get("/api/v1/audit-events/export/?format=csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    tenants = {row["tenant"] for row in rows}
    assert tenants <= ({"acme"} if sees_acme else {"globex"} if role == "globex_admin" else set())
