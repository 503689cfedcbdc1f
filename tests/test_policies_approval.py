"""Approval policies: per environment and criticality, separation of duties, governed policy changes."""

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from approvals.models import ApprovalPolicy, ChangeAction, ChangeStatus
from approvals.services import (
    ChangeError,
    approval_progress,
    approve_change,
    propose_change,
    propose_policy_change,
    reject_change,
)
from conftest import PASSWORD
from governance.actors import SYSTEM
from governance.models import AuditEvent, Role
from governance.services import AccessDenied, grant_role
from jobs.models import Job


def _set_policy(cast, environment, **rule):
    rule.setdefault("criticality", "")
    rule.setdefault("separation_of_duties", False)
    change = propose_policy_change(
        actor=cast.admin, environment=environment, rule=rule, justification="audit finding 12"
    )
    for approver in (cast.approver, cast.approver2)[: change.required_approvals]:
        change = approve_change(change, actor=approver)
    assert change.status == ChangeStatus.APPLIED, change.failure_reason
    return change


def _user(name):
    return get_user_model().objects.create_user(name, password=PASSWORD)


def test_critical_jobs_need_the_approvals_their_criticality_policy_says(cast):
    _set_policy(cast, cast.staging, criticality="critical", required_approvals=2)
    critical = cast.propose_job(
        environment=cast.staging,
        definition=cast.definition(criticality="critical", rationale="Ends in seconds; no heartbeat needed."),
        justification="new",
    )
    low = cast.propose_job(
        environment=cast.staging,
        definition=cast.definition(name="payments.ledger.cleanup", criticality="low"),
        justification="new",
    )
    assert (critical.required_approvals, low.required_approvals) == (2, 1)
    assert approve_change(critical, actor=cast.approver).status == ChangeStatus.SUBMITTED
    assert approve_change(low, actor=cast.approver).status == ChangeStatus.APPLIED
    assert approve_change(critical, actor=cast.approver2).status == ChangeStatus.APPLIED


def test_a_policy_change_takes_effect_only_after_approval(cast):
    change = propose_policy_change(
        actor=cast.admin,
        environment=cast.staging,
        justification="stricter",
        rule={"criticality": "high", "required_approvals": 2, "separation_of_duties": False},
    )
    assert change.action == ChangeAction.POLICY and change.status == ChangeStatus.SUBMITTED
    assert change.required_approvals == 1
    assert change.diff() == [{"field": "required_approvals", "before": None, "after": 2}]
    assert not ApprovalPolicy.objects.exists()
    change = approve_change(change, actor=cast.approver)
    assert change.status == ChangeStatus.APPLIED
    policy = ApprovalPolicy.objects.get()
    assert (policy.criticality, policy.required_approvals) == ("high", 2)
    record = policy.history.first()
    assert record.history_user == cast.approver
    assert f"change request #{change.pk}" in record.history_change_reason
    assert "acme-approver" in record.history_change_reason
    assert AuditEvent.objects.filter(action="policy.changed").exists()


def test_loosening_an_ungoverned_environment_still_needs_one_approval(cast):
    change = propose_policy_change(
        actor=cast.admin,
        environment=cast.dev,
        justification="dev is shared now",
        rule={"criticality": "", "required_approvals": 1, "separation_of_duties": False},
    )
    assert change.status == ChangeStatus.SUBMITTED and change.required_approvals == 1
    approve_change(change, actor=cast.approver)
    cast.dev.refresh_from_db()
    assert cast.dev.required_approvals == 1 and cast.dev.governed
    assert cast.dev.history.first().history_user == cast.approver


def test_only_tenant_admins_propose_policy_changes(cast):
    with pytest.raises(AccessDenied):
        propose_policy_change(
            actor=cast.author,
            environment=cast.prod,
            justification="fewer",
            rule={"criticality": "", "required_approvals": 0, "separation_of_duties": False},
        )
    with pytest.raises(AccessDenied):
        propose_policy_change(
            actor=cast.globex_admin,
            environment=cast.prod,
            justification="fewer",
            rule={"criticality": "", "required_approvals": 0, "separation_of_duties": False},
        )
    assert not ApprovalPolicy.objects.exists()


def test_superuser_cannot_approve_their_own_policy_change(cast):
    change = propose_policy_change(
        actor=cast.superuser,
        environment=cast.staging,
        justification="mine",
        rule={"criticality": "", "required_approvals": 0, "separation_of_duties": False},
    )
    with pytest.raises(AccessDenied):
        approve_change(change, actor=cast.superuser)
    change.refresh_from_db()
    assert change.status == ChangeStatus.SUBMITTED and not change.reviews.exists()


def test_team_narrowed_approver_cannot_review_a_policy_change(cast):
    team_approver = _user("payments-approver")
    grant_role(team_approver, Role.APPROVER, tenant=cast.acme, team=cast.payments, actor=SYSTEM)
    change = propose_policy_change(
        actor=cast.admin,
        environment=cast.staging,
        justification="x",
        rule={"criticality": "low", "required_approvals": 0, "separation_of_duties": False},
    )
    with pytest.raises(AccessDenied):
        approve_change(change, actor=team_approver)
    assert not change.reviews.exists()


def test_invalid_policy_is_refused_with_field_errors(cast):
    with pytest.raises(ValidationError) as info:
        propose_policy_change(
            actor=cast.admin,
            environment=cast.prod,
            justification="",
            rule={"criticality": "urgent", "required_approvals": -1, "separation_of_duties": "yes", "x": 1},
        )
    assert set(info.value.message_dict) == {
        "justification",
        "criticality",
        "required_approvals",
        "separation_of_duties",
        "definition",
    }
    with pytest.raises(ValidationError) as info:
        propose_policy_change(
            actor=cast.admin,
            environment=cast.prod,
            justification="same",
            rule={"criticality": "", "required_approvals": 2, "separation_of_duties": False},
        )
    assert "identical" in info.value.message_dict["definition"][0]


def test_separation_of_duties_waits_for_an_approver_from_another_team(cast):
    _set_policy(cast, cast.staging, criticality="high", required_approvals=1, separation_of_duties=True)
    payments_approver = _user("payments-approver")
    grant_role(payments_approver, Role.APPROVER, tenant=cast.acme, team=cast.payments, actor=SYSTEM)
    # approver2 belongs to the data team (a grant narrowed to it) and approves tenant-wide.
    grant_role(cast.approver2, Role.VIEWER, tenant=cast.acme, team=cast.data, actor=SYSTEM)
    change = cast.propose_job(environment=cast.staging, justification="new")
    assert change.requires_independent_approver
    change = approve_change(change, actor=payments_approver)
    assert change.status == ChangeStatus.SUBMITTED
    assert approval_progress(change)["needs_independent_approver"]
    # A tenant-wide approver belongs to no team, so does not count as independent either.
    change = approve_change(change, actor=cast.approver)
    assert change.status == ChangeStatus.SUBMITTED
    change = approve_change(change, actor=cast.approver2)
    assert change.status == ChangeStatus.APPLIED


def test_lowering_criticality_is_reviewed_under_the_stricter_rule(cast):
    _set_policy(cast, cast.staging, criticality="critical", required_approvals=2)
    _set_policy(cast, cast.staging, criticality="low", required_approvals=1)
    job = cast.make_job(cast.staging, criticality="critical", rationale="Ends in seconds; no heartbeat needed.")
    change = propose_change(
        actor=cast.author, action="update", job=job, definition={"criticality": "low"}, justification="demote"
    )
    assert change.required_approvals == 2


def test_approver_of_another_environment_cannot_approve(cast):
    dev_approver = _user("dev-approver")
    grant_role(dev_approver, Role.APPROVER, tenant=cast.acme, environment=cast.dev, actor=SYSTEM)
    change = cast.propose_job(justification="new")
    for attacker in (dev_approver, cast.globex_approver, cast.admin, cast.author2):
        with pytest.raises(AccessDenied):
            approve_change(change, actor=attacker)
        with pytest.raises(AccessDenied):
            reject_change(change, actor=attacker)
    change.refresh_from_db()
    assert change.status == ChangeStatus.SUBMITTED and not change.reviews.exists()
    assert not Job.objects.exists()


def test_stale_policy_change_cannot_be_approved(cast):
    first = propose_policy_change(
        actor=cast.admin,
        environment=cast.staging,
        justification="a",
        rule={"criticality": "low", "required_approvals": 0, "separation_of_duties": False},
    )
    second = propose_policy_change(
        actor=cast.admin,
        environment=cast.staging,
        justification="b",
        rule={"criticality": "low", "required_approvals": 2, "separation_of_duties": False},
    )
    approve_change(first, actor=cast.approver)
    with pytest.raises(ChangeError) as info:
        approve_change(second, actor=cast.approver)
    assert info.value.code == "stale"
    assert ApprovalPolicy.objects.get().required_approvals == 0
