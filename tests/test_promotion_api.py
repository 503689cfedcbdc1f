"""Rollback and promotion through the REST API: the same services and rules as the UI."""

from approvals.models import ChangeStatus
from approvals.services import propose_change
from tests.api_support import client_for, counts

URL = "/api/v1/change-requests/"


def test_an_author_proposes_an_earlier_version_again(cast):
    job = cast.make_job(cast.dev)
    propose_change(actor=cast.author, action="update", job=job, definition={"timeout_seconds": 90}, justification="x")
    author = client_for(cast.author)
    response = author.post(
        f"{URL}rollback/", {"job": job.pk, "version": 1, "justification": "90 s was too long"}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == ChangeStatus.APPLIED  # dev is ungoverned
    assert body["diff"] == [{"field": "timeout_seconds", "before": 90, "after": 60}]
    before = counts()
    missing = author.post(f"{URL}rollback/", {"job": job.pk, "version": 9, "justification": "x"}, format="json")
    assert missing.status_code == 400 and "version" in missing.json()
    hidden = client_for(cast.globex_author).post(
        f"{URL}rollback/", {"job": job.pk, "version": 1, "justification": "x"}, format="json"
    )
    assert hidden.status_code == 400 and "job" in hidden.json()
    assert counts() == before


def test_promotion_goes_to_the_next_environment_and_is_validated_first(cast):
    job = cast.make_job(cast.dev)
    author = client_for(cast.author)
    before = counts()
    skip = author.post(
        f"{URL}promote/", {"job": job.pk, "environment": cast.prod.pk, "justification": "x"}, format="json"
    )
    assert skip.status_code == 400 and "environment" in skip.json()
    bad = author.post(f"{URL}promote/", {"job": job.pk, "justification": "x", "parameter_values": [1]}, format="json")
    assert bad.status_code == 400 and "parameters" in bad.json()
    assert counts() == before
    forbidden = client_for(cast.operator).post(f"{URL}promote/", {"job": job.pk, "justification": "x"}, format="json")
    assert forbidden.status_code == 403
    after = counts()
    assert after.pop("audit_events") == before.pop("audit_events") + 1  # the denial itself is audited
    assert after == before

    response = author.post(f"{URL}promote/", {"job": job.pk, "justification": "tested in dev"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["action"], body["environment"]["slug"], body["status"]) == ("create", "staging", "submitted")
    assert body["justification"] == "Promote from dev v1: tested in dev"
