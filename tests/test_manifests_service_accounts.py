"""Pipelines apply manifests as service accounts: a token acts only within its account's tenant and role."""

import pytest
from rest_framework.test import APIClient

from approvals.models import ChangeRequest, ChangeStatus
from approvals.services import approve_change
from governance.services import AccessDenied
from governance.tokens import create_service_account, issue_token, revoke_token
from jobs.models import Job

RECONCILE = """\
apiVersion: governor/v1
kind: Jobs
tenant: acme
team: payments
jobs:
  - name: payments.ledger.reconcile
    environments: [dev, prod]
    command: [/bin/echo, reconcile]
    cron: "*/5 * * * *"
    timezone: Europe/Berlin
"""
BODY = {
    "files": [{"path": "payments.yaml", "content": RECONCILE}],
    "commit": "0123abc",
    "pipeline_url": "https://ci.example/pipelines/9",
}


def pipeline(cast, role, *, tenant=None, admin=None, name="ci", **narrowing):
    account = create_service_account(
        actor=admin or cast.admin, tenant=tenant or cast.acme, name=name, role=role, **narrowing
    )
    token, raw = issue_token(account.user, actor=admin or cast.admin)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    return client, account, token


def test_an_author_service_account_applies_and_its_requests_carry_the_commit_and_pipeline(cast):
    client, account, _ = pipeline(cast, "author")
    response = client.post("/api/v1/manifests/apply/", BODY, format="json")
    assert response.status_code == 200, response.json()
    prod = ChangeRequest.objects.get(environment=cast.prod)
    assert prod.author == account.user and prod.status == ChangeStatus.SUBMITTED
    assert "Commit: 0123abc" in prod.justification and "Pipeline: https://ci.example/pipelines/9" in prod.justification
    assert Job.objects.filter(environment=cast.dev).exists()
    # The pipeline can never approve what it opened.
    with pytest.raises(AccessDenied):
        approve_change(prod, actor=account.user)


def test_a_viewer_service_account_may_plan_but_not_apply(cast):
    client, _, _ = pipeline(cast, "viewer")
    assert client.post("/api/v1/manifests/plan/", BODY, format="json").status_code == 200
    response = client.post("/api/v1/manifests/apply/", BODY, format="json")
    assert response.status_code == 403
    assert response.json()["errors"][0]["message"] == (
        "You need the author role for team 'payments' in environment 'dev' to create 'payments.ledger.reconcile'."
    )
    assert not ChangeRequest.objects.exists() and not Job.objects.exists()


def test_a_service_account_narrowed_to_dev_cannot_touch_prod(cast):
    client, _, _ = pipeline(cast, "author", environment=cast.dev)
    response = client.post("/api/v1/manifests/apply/", BODY, format="json")
    assert response.status_code == 403
    assert [e["message"] for e in response.json()["errors"]] == [
        "You may not view team 'payments' in environment 'prod'."
    ]
    assert not ChangeRequest.objects.exists()


def test_another_tenants_service_account_finds_no_such_tenant(cast):
    client, _, _ = pipeline(cast, "author", tenant=cast.globex, admin=cast.globex_admin)
    for url in ("/api/v1/manifests/plan/", "/api/v1/manifests/apply/"):
        response = client.post(url, BODY, format="json")
        assert response.status_code == 400
        assert response.json()["errors"][0]["message"] == "Unknown tenant 'acme'."
    assert client.get("/api/v1/manifests/export/?tenant=acme").status_code == 404
    assert not ChangeRequest.objects.exists()


def test_a_revoked_pipeline_token_is_refused(cast):
    client, _, token = pipeline(cast, "author")
    revoke_token(token, actor=cast.admin)
    assert client.post("/api/v1/manifests/apply/", BODY, format="json").status_code == 401
    assert not ChangeRequest.objects.exists()
