"""Alert rules are governed objects: proposed, reviewed and applied as change requests (kind
alert_rule); bad input is a 400 naming the field with nothing saved; tenants never see or touch
each other's rules; job tags flow like other definition fields."""

from __future__ import annotations

import pytest
from django.urls import reverse

from approvals.config_changes import kind_of
from approvals.models import ChangeRequest, ChangeStatus
from approvals.services import approve_change, propose_config_change
from monitoring.models import AlertRule
from tests.api_support import client_for, counts


def rule_body(cast, environment=None, **definition) -> dict:
    body = {
        "name": "reconcile-failed",
        "kind": "run_failed",
        "scope": "job",
        "job": "payments.ledger.reconcile",
        "severity": "critical",
    }
    body.update(definition)
    return {
        "target_kind": "alert_rule",
        "action": "create",
        "environment": (environment or cast.prod).pk,
        "definition": {k: v for k, v in body.items() if v is not None},
        "justification": "Page on-call when the ledger reconcile fails.",
    }


def govern(cast, *, environment=None, target=None, action=None, **definition):
    """Create, update (``target``) or delete an acme rule through change control, as the tenant admin."""
    if target is not None and action is None:
        definition = {**kind_of("alert_rule").definition(target), **definition}
    change = propose_config_change(
        actor=cast.admin,
        kind="alert_rule",
        action=action or ("update" if target is not None else "create"),
        tenant=cast.acme if target is None else None,
        environment=environment,
        target=target,
        definition=definition if action != "delete" else None,
        justification="test rule",
    )
    for approver in [cast.approver, cast.approver2][: change.required_approvals]:
        change = approve_change(change, actor=approver)
    assert change.status == "applied", change.failure_reason
    return change.changed_object()


def everything() -> dict:
    return {**counts(), "rules": AlertRule.objects.count()}


@pytest.fixture
def job(cast):
    return cast.make_job(cast.prod, criticality="medium", tags=["ledger", "nightly"])


def test_a_rule_is_proposed_reviewed_by_two_approvers_and_then_live(cast, job):
    response = client_for(cast.admin).post("/api/v1/change-requests/", rule_body(cast), format="json")
    assert response.status_code == 201, response.json()
    change = ChangeRequest.objects.get(pk=response.json()["id"])
    assert (change.status, change.required_approvals, change.environment) == ("submitted", 2, cast.prod)
    assert not AlertRule.objects.exists()
    change = approve_change(change, actor=cast.approver)
    change = approve_change(change, actor=cast.approver2)
    assert change.status == ChangeStatus.APPLIED
    rule = AlertRule.objects.get()
    assert (rule.job, rule.team, rule.environment, rule.severity) == (job, cast.payments, cast.prod, "critical")
    assert rule.change_request_id == change.pk
    listed = client_for(cast.viewer).get("/api/v1/alert-rules/").json()["results"]
    assert [(r["name"], r["job"], r["kind"]) for r in listed] == [
        ("reconcile-failed", "payments.ledger.reconcile", "run_failed")
    ]


def test_a_lesser_role_cannot_approve_a_rule(cast, job):
    data = client_for(cast.admin).post("/api/v1/change-requests/", rule_body(cast), format="json").json()
    for user in (cast.viewer, cast.operator, cast.author2, cast.globex_approver):
        response = client_for(user).post(
            f"/api/v1/change-requests/{data['id']}/approve/", {"revision": 1}, format="json"
        )
        assert response.status_code in (403, 404), (user, response.status_code)
    # Nor the author, however senior.
    response = client_for(cast.admin).post(f"/api/v1/change-requests/{data['id']}/approve/", {"revision": 1})
    assert response.status_code == 403
    assert ChangeRequest.objects.get(pk=data["id"]).status == "submitted" and not AlertRule.objects.exists()


def test_another_tenant_can_neither_propose_a_rule_on_our_job_nor_see_our_rules(cast, job):
    before = everything()
    # In our environment: not an environment they can name.
    response = client_for(cast.globex_admin).post("/api/v1/change-requests/", rule_body(cast), format="json")
    assert response.status_code == 400 and "environment" in response.json(), response.json()
    # In their own environment, naming our job: no such job there.
    response = client_for(cast.globex_admin).post(
        "/api/v1/change-requests/", rule_body(cast, environment=cast.globex_prod), format="json"
    )
    assert response.status_code == 400 and response.json()["job"] == [
        "No job named 'payments.ledger.reconcile' in prod."
    ]
    # A tag only our jobs carry is unknown to them.
    response = client_for(cast.globex_admin).post(
        "/api/v1/change-requests/",
        rule_body(cast, environment=cast.globex_prod, scope="tag", job=None, tag="ledger"),
        format="json",
    )
    assert response.status_code == 400 and "tag" in response.json()
    assert everything() == before
    govern(cast, **_definition(scope="tag", tag="nightly", job=None))
    rule = AlertRule.objects.get()
    assert client_for(cast.globex_admin).get("/api/v1/alert-rules/").json()["results"] == []
    assert client_for(cast.globex_admin).get(f"/api/v1/alert-rules/{rule.pk}/").status_code == 404


def _definition(**changes) -> dict:
    body = {"name": "ledger-nightly", "kind": "run_failed", "scope": "job", "job": "payments.ledger.reconcile"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"job": "payments.ledger.nope"}, "job"),
        ({"scope": "tag", "job": None, "tag": "no-such-tag"}, "tag"),
        ({"scope": "team", "job": None, "team": "ops"}, "team"),  # globex's team
        ({"kind": "deadline_missed", "time": "06:00", "timezone": "Mars/Olympus"}, "timezone"),
        ({"kind": "deadline_missed", "time": "06:00", "timezone": "localtime"}, "timezone"),
        ({"kind": "deadline_missed", "time": "25:00", "timezone": "Europe/Berlin"}, "time"),
        ({"kind": "deadline_missed", "time": "6am", "timezone": "Europe/Berlin"}, "time"),
        ({"kind": "deadline_missed", "time": "06:00", "timezone": "Europe/Berlin", "days": "weekends"}, "days"),
        ({"kind": "long_running", "k": 0.5}, "k"),
        ({"kind": "long_running", "k": 1000}, "k"),
        ({"kind": "long_running", "k": 3, "samples": 1000}, "samples"),
        ({"kind": "long_running", "k": 3, "samples": 10, "min_samples": 20}, "min_samples"),
        ({"kind": "long_running", "k": 3, "min_samples": 1}, "min_samples"),
        ({"kind": "long_running", "k": 3, "seconds": 600}, "seconds"),
        ({"kind": "long_running"}, "k"),
        ({"kind": "failure_rate", "threshold": 1.5}, "threshold"),
        ({"kind": "failure_rate", "threshold": 0.5, "window_seconds": 10}, "window_seconds"),
        ({"kind": "heartbeat_silence"}, "seconds"),
        ({"kind": "late_start", "grace_seconds": -1}, "grace_seconds"),
        ({"kind": "run_failed", "grace_seconds": 60}, "grace_seconds"),
        ({"kind": "cpu_melting"}, "kind"),
        ({"severity": "apocalyptic"}, "severity"),
        ({"for_seconds": 10**9}, "for_seconds"),
        ({"name": "Not A Slug"}, "name"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_saves_nothing(cast, job, changes, field):
    before = everything()
    body = rule_body(cast)
    body["definition"] = {k: v for k, v in {**body["definition"], **changes}.items() if v is not None}
    response = client_for(cast.admin).post("/api/v1/change-requests/", body, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json(), response.json()
    assert everything() == before


def test_a_job_rule_names_its_environment(cast, job):
    body = rule_body(cast)
    body.pop("environment")
    body["target_tenant"] = cast.acme.pk
    response = client_for(cast.admin).post("/api/v1/change-requests/", body, format="json")
    assert response.status_code == 400 and "environment" in response.json()


def test_a_rule_update_and_delete_go_through_change_requests(cast, job):
    rule = govern(cast, **_definition(scope="tag", tag="nightly", job=None))
    govern(cast, target=rule, kind="failure_rate", threshold=0.5)
    rule.refresh_from_db()
    assert (rule.kind, rule.params) == ("failure_rate", {"threshold": 0.5, "window_seconds": 86400, "min_runs": 5})
    govern(cast, target=rule, action="delete")
    assert not AlertRule.objects.exists()
    assert AlertRule.history.filter(id=rule.pk).count() == 3


# --- job tags -----------------------------------------------------------------------------------


def test_job_tags_are_validated_normalised_and_shown_in_the_api(cast):
    job = cast.make_job(cast.dev, tags=["nightly", "ledger", "nightly"])
    assert job.tags == ["ledger", "nightly"]
    assert client_for(cast.viewer).get(f"/api/v1/jobs/{job.pk}/").json()["tags"] == ["ledger", "nightly"]
    before = counts()
    body = {
        "action": "update",
        "job": job.pk,
        "definition": {"tags": ["Not Slug"]},
        "justification": "retag",
    }
    response = client_for(cast.author).post("/api/v1/change-requests/", body, format="json")
    assert response.status_code == 400 and "tags" in response.json()
    assert counts() == before


# --- pages --------------------------------------------------------------------------------------


def test_the_job_page_lists_explicit_and_default_rules(cast, client):
    critical = cast.make_job(
        cast.dev,
        name="payments.ledger.critical",
        criticality="critical",
        tags=["nightly"],
        rationale="Pings come from the warehouse.",
    )
    govern(cast, environment=cast.dev, **_definition(scope="tag", tag="nightly", job=None))
    client.force_login(cast.viewer)
    page = client.get(reverse("job_detail", args=[critical.pk])).content.decode()
    assert "ledger-nightly" in page and 'data-kind="late_start"' in page and 'data-kind="long_running"' in page
    assert "default (critical)" in page
    # The explicit run_failed rule replaced the default of that kind.
    assert page.count('data-kind="run_failed"') == 1


def test_the_rules_page_shows_the_tenants_rules_and_the_defaults(cast, client, job):
    govern(cast, **_definition(scope="tag", tag="nightly", job=None))
    client.force_login(cast.viewer)
    page = client.get(reverse("alert_rule_list")).content.decode()
    assert 'data-rule="ledger-nightly"' in page and 'data-testid="default-rules"' in page
    client.force_login(cast.globex_admin)
    assert 'data-rule="ledger-nightly"' not in client.get(reverse("alert_rule_list")).content.decode()


def test_the_propose_form_creates_a_change_request_or_names_the_bad_field(cast, client, job):
    client.force_login(cast.admin)
    url = reverse("config_new", kwargs={"kind": "alert_rule"})
    assert client.get(url).status_code == 200
    form = {
        "place": f"e{cast.prod.pk}",
        "name": "reconcile-deadline",
        "kind": "deadline_missed",
        "severity": "high",
        "scope": "job",
        "job": "payments.ledger.reconcile",
        "enabled": "on",
        "time": "06:00",
        "timezone": "Europe/Atlantis",
        "justification": "SLA",
    }
    response = client.post(url, form)
    assert response.status_code == 400 and "Europe/Atlantis" in response.content.decode()
    assert not ChangeRequest.objects.filter(target_kind="alert_rule").exists()
    response = client.post(url, {**form, "timezone": "Europe/Berlin"})
    assert response.status_code == 302
    change = ChangeRequest.objects.get(target_kind="alert_rule")
    assert change.proposed["time"] == "06:00" and change.proposed["days"] == "business"
