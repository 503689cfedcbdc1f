"""Every action the issue lists leaves an audit event."""

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404

from governance.access import Action, get_object_or_404_for
from governance.models import AuditAction, AuditEvent
from jobs.models import Job


def test_a_visible_object_the_user_may_not_act_on_records_access_denied(cast):
    job = cast.make_job(cast.dev)
    with pytest.raises(PermissionDenied):
        get_object_or_404_for(cast.viewer, Action.TRIGGER, Job.objects.all(), pk=job.pk)
    event = AuditEvent.objects.filter(action=AuditAction.ACCESS_DENIED).get()
    assert event.actor == cast.viewer and event.tenant == cast.acme
    assert event.object_id == str(job.pk) and event.data["action"] == "trigger"


def test_probing_another_tenants_object_by_id_answers_404_and_is_recorded(cast):
    job = cast.make_job(cast.dev)
    with pytest.raises(Http404):
        get_object_or_404_for(cast.globex_admin, Action.VIEW, Job.objects.all(), pk=job.pk)
    event = AuditEvent.objects.filter(action=AuditAction.ACCESS_DENIED).get()
    assert event.actor == cast.globex_admin and event.tenant == cast.acme


def test_a_truly_missing_object_records_nothing(cast):
    with pytest.raises(Http404):
        get_object_or_404_for(cast.viewer, Action.VIEW, Job.objects.all(), pk=987654)
    assert not AuditEvent.objects.filter(action=AuditAction.ACCESS_DENIED).exists()


def test_login_and_failed_login_are_audited(cast, client):
    from conftest import PASSWORD

    assert not client.login(username="acme-viewer", password="wrong")
    assert client.login(username="acme-viewer", password=PASSWORD)
    # In the viewer's own tenant trail, where the tenant's auditors look.
    actions = list(AuditEvent.objects.filter(tenant=cast.acme).values_list("action", "actor_repr"))
    assert (AuditAction.LOGIN_FAILED, "acme-viewer") in actions
    assert (AuditAction.LOGIN, "acme-viewer") in actions


def test_changes_reviews_triggers_and_operator_actions_are_audited(cast):
    from approvals.services import approve_change, propose_change
    from jobs.services import set_paused, trigger_run

    change = propose_change(
        actor=cast.author,
        action="create",
        team=cast.payments,
        environment=cast.staging,
        definition=cast.definition(),
        justification="x",
    )
    approve_change(change, actor=cast.approver)
    job = Job.objects.get()
    trigger_run(job, actor=cast.operator, reason="smoke test")
    set_paused(job, paused=True, actor=cast.operator, reason="upstream outage")
    actions = set(AuditEvent.objects.filter(tenant=cast.acme).values_list("action", flat=True))
    assert {
        AuditAction.CHANGE_CREATED,
        AuditAction.CHANGE_SUBMITTED,
        AuditAction.CHANGE_APPROVED,
        AuditAction.CHANGE_APPLIED,
        AuditAction.JOB_CREATED,
        AuditAction.RUN_TRIGGERED,
        AuditAction.JOB_PAUSED,
    } <= actions
