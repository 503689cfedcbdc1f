"""Recovery rules are governed like other configuration objects (change kind ``recovery_rule``):
proposed, reviewed under the environment's policy, never approved by their author, and a hostile
author cannot point one at a job outside the rule's tenant and environment or at an unapproved job."""

from __future__ import annotations

import pytest

from approvals.models import ChangeRequest, ChangeStatus
from approvals.services import approve_change, propose_config_change
from governance.actors import SYSTEM
from governance.models import AuditEvent, Role
from governance.services import AccessDenied, grant_role
from monitoring.models import RecoveryRule
from tests.api_support import client_for


def rule(**overrides) -> dict:
    body = {
        "name": "retry-on-lock",
        "job": "payments.ledger.reconcile",
        "exit_codes": [3],
        "output_pattern": "lock (held|busy)",
        "action": "retry",
        "retry_attempts": 2,
        "retry_delay_seconds": 30,
        "retry_factor": 2,
    }
    body.update(overrides)
    return body


def api_propose(cast, user, environment, definition):
    body = {
        "target_kind": "recovery_rule",
        "action": "create",
        "environment": environment.pk,
        "definition": definition,
        "justification": "Retry the ledger when the lock is held.",
    }
    return client_for(user).post("/api/v1/change-requests/", body, format="json")


def test_a_prod_rule_applies_only_after_two_approvals_and_names_its_request(cast):
    cast.make_job(cast.prod)
    response = api_propose(cast, cast.author, cast.prod, rule())
    assert response.status_code == 201, response.json()
    data = response.json()
    assert (data["target_kind"], data["required_approvals"]) == ("recovery_rule", 2)
    assert [row["field"] for row in data["diff"]][:4] == ["name", "job", "team", "exit_codes"]
    assert not RecoveryRule.objects.exists()
    change = ChangeRequest.objects.get(pk=data["id"])
    change = approve_change(change, actor=cast.approver)
    assert not RecoveryRule.objects.exists()
    change = approve_change(change, actor=cast.approver2)
    assert change.status == ChangeStatus.APPLIED
    live = RecoveryRule.objects.get()
    assert (live.name, live.job.name, live.exit_codes, live.change_request_id) == (
        "retry-on-lock",
        "payments.ledger.reconcile",
        [3],
        change.pk,
    )
    event = AuditEvent.objects.filter(action="config.changed").latest("seq")
    assert event.data["kind"] == "recovery_rule" and event.data["change_request"] == change.pk


def test_nobody_approves_their_own_rule_superusers_included(cast):
    cast.make_job(cast.prod)
    grant_role(cast.superuser, Role.TENANT_ADMIN, tenant=cast.acme, actor=SYSTEM)
    change = propose_config_change(
        actor=cast.superuser,
        kind="recovery_rule",
        action="create",
        environment=cast.prod,
        definition=rule(),
        justification="x",
    )
    with pytest.raises(AccessDenied):
        approve_change(change, actor=cast.superuser)
    change.refresh_from_db()
    assert change.status == ChangeStatus.SUBMITTED and not RecoveryRule.objects.exists()


@pytest.mark.parametrize("who", ["viewer", "operator", "approver"])
def test_lesser_roles_may_not_propose_a_rule(cast, who):
    cast.make_job(cast.prod)
    response = api_propose(cast, getattr(cast, who), cast.prod, rule())
    assert response.status_code == 403
    assert not ChangeRequest.objects.filter(target_kind="recovery_rule").exists()


def test_another_tenants_job_as_remediation_is_refused(cast):
    cast.make_job(cast.prod)
    cast.make_job(cast.globex_prod, name="ops.disk.cleanup")
    response = api_propose(cast, cast.author, cast.prod, rule(action="remediate", remediation_job="ops.disk.cleanup"))
    assert response.status_code == 400
    assert "ops.disk.cleanup" in " ".join(response.json()["remediation_job"])
    assert not ChangeRequest.objects.filter(target_kind="recovery_rule").exists()


def test_a_remediation_job_of_another_environment_is_refused(cast):
    cast.make_job(cast.prod)
    cast.make_job(cast.dev, name="payments.ledger.cleanup")
    response = api_propose(
        cast, cast.author, cast.prod, rule(action="remediate", remediation_job="payments.ledger.cleanup")
    )
    assert response.status_code == 400
    assert "No live job 'payments.ledger.cleanup' in acme/prod" in " ".join(response.json()["remediation_job"])


def test_a_remediation_job_still_waiting_for_approval_is_refused(cast):
    cast.make_job(cast.prod)
    pending = cast.propose_job(environment=cast.prod, definition=cast.definition(name="payments.ledger.cleanup"))
    assert pending.status == ChangeStatus.SUBMITTED
    response = api_propose(
        cast, cast.author, cast.prod, rule(action="remediate", remediation_job="payments.ledger.cleanup")
    )
    assert response.status_code == 400
    assert "remediation_job" in response.json()


def test_a_rule_for_another_tenants_job_or_team_is_refused(cast):
    cast.make_job(cast.globex_prod)
    response = api_propose(cast, cast.author, cast.prod, rule(job="ops.backup.snapshot"))
    assert response.status_code == 400 and "job" in response.json()
    response = api_propose(cast, cast.author, cast.prod, rule(job="", team="ops"))
    assert response.status_code == 400 and "No team 'ops' in acme" in " ".join(response.json()["team"])


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"output_pattern": r"(a+)\1"}, "output_pattern"),
        ({"output_pattern": "(?=lock)"}, "output_pattern"),
        ({"job": "no.such.job"}, "job"),
        ({"team": "payments"}, "job"),
        ({"exit_codes": [], "output_pattern": ""}, "exit_codes"),
        ({"exit_codes": ["3"]}, "exit_codes"),
        ({"http_statuses": [700]}, "http_statuses"),
        ({"action": "reboot"}, "action"),
        ({"action": "remediate"}, "remediation_job"),
        ({"remediation_job": "payments.ledger.reconcile"}, "remediation_job"),
        ({"retry_attempts": 0}, "retry_attempts"),
        ({"retry_factor": 0.5}, "retry_factor"),
        ({"max_actions": 0}, "max_actions"),
        ({"severity": "urgent"}, "severity"),
        ({"name": "Not A Slug"}, "name"),
        ({"colour": "red"}, "definition"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_field_and_nothing_is_saved(cast, overrides, field):
    cast.make_job(cast.dev)
    before = ChangeRequest.objects.count()
    response = api_propose(cast, cast.author, cast.dev, rule(**overrides))
    assert response.status_code == 400, response.json()
    assert field in response.json(), response.json()
    assert ChangeRequest.objects.count() == before and not RecoveryRule.objects.exists()


def test_a_rule_in_dev_applies_at_once_and_can_be_changed_and_deleted(cast):
    cast.make_job(cast.dev)
    created = propose_config_change(
        actor=cast.author,
        kind="recovery_rule",
        action="create",
        environment=cast.dev,
        definition=rule(),
        justification="x",
    )
    assert created.status == ChangeStatus.APPLIED
    live = RecoveryRule.objects.get()
    assert live.action == "retry" and live.change_request_id == created.pk
    change = propose_config_change(
        actor=cast.author,
        kind="recovery_rule",
        action="update",
        target=live,
        definition={**rule(), "action": "pause"},
        justification="Pause instead.",
    )
    assert change.status == ChangeStatus.APPLIED
    live.refresh_from_db()
    assert live.action == "pause"
    change = propose_config_change(
        actor=cast.author, kind="recovery_rule", action="delete", target=live, justification="Not needed."
    )
    assert change.status == ChangeStatus.APPLIED and not RecoveryRule.objects.exists()


# The pages (the configuration list and the proposal form of approvals.config_views)


def form_body(cast, **overrides) -> dict:
    body = {
        "place": f"e{cast.dev.pk}",
        "name": "retry-on-lock",
        "job": "payments.ledger.reconcile",
        "exit_codes": "3",
        "output_pattern": "lock held",
        "action": "retry",
        "retry_attempts": "2",
        "retry_delay_seconds": "30",
        "retry_factor": "2",
        "severity": "high",
        "max_actions": "3",
        "window_minutes": "60",
        "justification": "Retry the ledger when the lock is held.",
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize(("who", "status"), [("viewer", 403), ("operator", 403), ("author", 200), ("admin", 200)])
def test_the_proposal_page_is_for_proposers_only(cast, client, who, status):
    cast.make_job(cast.dev)
    client.force_login(getattr(cast, who))
    assert client.get("/config/recovery_rule/new/").status_code == status
    response = client.post("/config/recovery_rule/new/", form_body(cast))
    assert response.status_code == (302 if status == 200 else 403)
    assert RecoveryRule.objects.exists() == (status == 200)


def test_the_page_proposes_a_rule_lists_it_and_names_a_refused_pattern(cast, client):
    cast.make_job(cast.dev)
    client.force_login(cast.author)
    response = client.post("/config/recovery_rule/new/", form_body(cast, output_pattern=r"(lock)\1"))
    assert response.status_code == 400
    page = response.content.decode()
    assert "Only linear-time (RE2)" in page and not RecoveryRule.objects.exists()
    response = client.post("/config/recovery_rule/new/", form_body(cast, exit_codes="3, x"))
    assert response.status_code == 400 and "Give whole numbers" in response.content.decode()
    response = client.post("/config/recovery_rule/new/", form_body(cast))
    assert response.status_code == 302
    live = RecoveryRule.objects.get()
    assert live.exit_codes == [3] and live.output_pattern == "lock held"
    client.force_login(cast.viewer)
    listing = client.get("/config/").content.decode()
    assert 'data-testid="recovery-rule-row"' in listing and "retry-on-lock" in listing
    edit = client.get(f"/config/recovery_rule/{live.pk}/propose/")
    assert edit.status_code == 403
    client.force_login(cast.author)
    edit = client.get(f"/config/recovery_rule/{live.pk}/propose/")
    assert edit.status_code == 200 and 'value="lock held"' in edit.content.decode()


def test_the_api_lists_live_rules_to_their_tenant_only_and_links_the_request(cast):
    cast.make_job(cast.dev)
    created = propose_config_change(
        actor=cast.author,
        kind="recovery_rule",
        action="create",
        environment=cast.dev,
        definition=rule(),
        justification="x",
    )
    listed = client_for(cast.viewer).get("/api/v1/recovery-rules/").json()["results"]
    assert [(r["name"], r["job"], r["team"], r["exit_codes"], r["change_request_id"]) for r in listed] == [
        ("retry-on-lock", "payments.ledger.reconcile", None, [3], created.pk)
    ]
    assert client_for(cast.globex_admin).get("/api/v1/recovery-rules/").json()["results"] == []
    detail = client_for(cast.viewer).get(f"/api/v1/change-requests/{created.pk}/").json()
    assert detail["links"]["target"].endswith(f"/api/v1/recovery-rules/{listed[0]['id']}/")
    history = client_for(cast.viewer).get(f"/api/v1/recovery-rules/{listed[0]['id']}/history/").json()
    assert history["results"][0]["change_request_id"] == created.pk
