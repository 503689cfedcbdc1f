"""Bad input through the API: HTTP 400 with field errors, and nothing written."""

import pytest

from approvals.models import ChangeRequest, ChangeStatus
from tests.api_support import client_for, counts, propose_body


def post_change(user, body):
    return client_for(user).post("/api/v1/change-requests/", body, format="json")


def definition_with(cast, **fields):
    return {"definition": cast.definition(**fields)}


BAD_CREATES = {
    "unknown time zone": (lambda c: definition_with(c, timezone="Mars/Olympus"), "timezone", "Unknown time zone"),
    "invalid cron": (lambda c: definition_with(c, cron="61 * * * *"), "cron", "cron"),
    "cron with six fields": (lambda c: definition_with(c, cron="0 0 * * * *"), "cron", "5 fields"),
    "command not a list": (lambda c: definition_with(c, command="/bin/echo hi"), "command", "list"),
    "command with a number": (lambda c: definition_with(c, command=["/bin/echo", 1]), "command", "string"),
    "empty justification": (lambda c: {"justification": "   "}, "justification", "justification"),
    "unknown definition field": (
        lambda c: {"definition": {**c.definition(), "shell": "bash -c"}},
        "definition",
        "shell",
    ),
    "definition not an object": (lambda c: {"definition": ["/bin/echo"]}, "definition", "object"),
    "name outside the team's prefix": (lambda c: definition_with(c, name="data.x.y"), "name", "payments."),
    "team of another tenant": (lambda c: {"team": c.ops.pk}, "team", "No team"),
    "environment of another tenant": (lambda c: {"environment": c.globex_prod.pk}, "environment", "No environment"),
    "missing team": (lambda c: {"team": None}, "team", "team"),
    "missing environment": (lambda c: {"environment": None}, "environment", "environment"),
    "team id not a number": (lambda c: {"team": "payments"}, "team", "No team"),
    "unknown action": (lambda c: {"action": "rename"}, "action", "valid choice"),
    "zero timeout": (lambda c: definition_with(c, timeout_seconds=0), "timeout_seconds", "between"),
    "create naming a job": (lambda c: {"job": c.make_job(c.dev).pk}, "job", "must not name"),
}


@pytest.mark.parametrize("case", BAD_CREATES, ids=list(BAD_CREATES))
def test_bad_create_answers_400_with_the_field_and_writes_nothing(cast, case):
    build, field, fragment = BAD_CREATES[case]
    body = propose_body(cast, **build(cast))
    before = counts()
    response = post_change(cast.author, body)
    assert response.status_code == 400, response.content
    errors = response.json()
    assert field in errors, errors
    assert isinstance(errors[field], list)
    assert fragment.lower() in " ".join(errors[field]).lower(), errors
    assert counts() == before


def test_several_bad_fields_are_reported_together(cast):
    body = propose_body(cast, **definition_with(cast, timezone="Nowhere/Else", cron="a b c d e", command="ls"))
    response = post_change(cast.author, body)
    assert response.status_code == 400
    assert set(response.json()) == {"timezone", "cron", "command"}


def test_missing_team_and_environment_are_both_reported(cast):
    body = propose_body(cast)
    del body["team"], body["environment"]
    response = post_change(cast.author, body)
    assert response.status_code == 400
    assert set(response.json()) == {"team", "environment"}


@pytest.mark.parametrize("field", ["status", "author", "tenant", "required_approvals", "revision", "proposed", "id"])
def test_server_owned_fields_cannot_be_set(cast, field):
    value = {
        "status": "applied",
        "author": cast.approver.pk,
        "tenant": cast.globex.pk,
        "required_approvals": 0,
        "revision": 7,
        "proposed": cast.definition(command=["/bin/rm", "-rf", "/"]),
        "id": 999,
    }[field]
    before = counts()
    response = post_change(cast.author, propose_body(cast, **{field: value}))
    assert response.status_code == 400
    assert response.json() == {field: ["This field cannot be set."]}
    assert counts() == before


def test_unknown_top_level_fields_are_refused(cast):
    response = post_change(cast.author, propose_body(cast, approvals=2, approved_by=[cast.approver.pk]))
    assert response.status_code == 400
    assert response.json() == {"approvals": ["Unknown field."], "approved_by": ["Unknown field."]}
    assert not ChangeRequest.objects.exists()


def test_a_draft_stays_a_draft_and_the_server_sets_author_and_policy(cast):
    response = post_change(cast.author, propose_body(cast, submit=False))
    assert response.status_code == 201
    change = response.json()
    assert (change["status"], change["author"], change["tenant"]["slug"]) == ("draft", "acme-author", "acme")
    assert change["required_approvals"] is None  # fixed by the policy at submit
    assert ChangeRequest.objects.get().status == ChangeStatus.DRAFT


def test_update_takes_a_partial_definition_merged_over_the_live_job(cast):
    job = cast.make_job(cast.prod)
    body = {"action": "update", "job": job.pk, "definition": {"cron": "0 3 * * *"}, "justification": "nightly only"}
    response = post_change(cast.author, body)
    assert response.status_code == 201, response.content
    change = response.json()
    assert change["diff"] == [{"field": "cron", "before": "*/5 * * * *", "after": "0 3 * * *"}]
    assert change["proposed"] == {**change["base_definition"], "cron": "0 3 * * *"}
    assert change["base_definition"].items() >= cast.definition().items()
    assert change["base_version"] == 1
    assert change["job"]["id"] == job.pk


def test_update_refuses_moving_the_job_and_identical_definitions(cast):
    job = cast.make_job(cast.prod)
    base = {"action": "update", "job": job.pk, "justification": "x"}
    before = counts()
    response = post_change(cast.author, {**base, "definition": {"cron": "0 3 * * *"}, "team": cast.data.pk})
    assert response.status_code == 400 and "team" in response.json()
    response = post_change(cast.author, {**base, "definition": {"cron": "*/5 * * * *"}})
    assert response.status_code == 400 and "identical" in response.json()["definition"][0]
    response = post_change(cast.author, {**base, "job": None, "definition": {"cron": "0 3 * * *"}})
    assert response.status_code == 400 and "job" in response.json()
    response = post_change(cast.globex_author, {**base, "definition": {"cron": "0 3 * * *"}})
    assert response.status_code == 400 and response.json() == {"job": [f"No job with id {job.pk}."]}
    assert counts() == before


def test_delete_through_a_change_request(cast):
    job = cast.make_job(cast.dev)
    response = post_change(
        cast.author, {"action": "delete", "job": job.pk, "definition": {"cron": "x"}, "justification": "x"}
    )
    assert response.status_code == 400 and "definition" in response.json()
    response = post_change(cast.author, {"action": "delete", "job": job.pk, "justification": "retired"})
    assert response.status_code == 201
    change = response.json()
    assert change["status"] == "applied" and change["proposed"] is None
    assert {row["after"] for row in change["diff"]} == {None}
    assert client_for(cast.viewer).get(f"/api/v1/jobs/{job.pk}/").json()["status"] == "deleted"


def test_malformed_json_is_a_400(cast):
    response = client_for(cast.author).post(
        "/api/v1/change-requests/", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert not ChangeRequest.objects.exists()


def test_bad_filters_answer_400(cast):
    client = client_for(cast.viewer)
    assert client.get("/api/v1/jobs/?status=sleeping").status_code == 400
    assert client.get("/api/v1/runs/?job=abc").status_code == 400
    assert client.get("/api/v1/audit-events/?since=yesterday").status_code == 400
    assert client.get("/api/v1/jobs/abc/").status_code == 404
