"""Every action the issue lists leaves an audit event."""

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404

from governance.access import Action, get_object_or_404_for
from governance.models import AuditAction, AuditEvent
from jobs.models import Job


@pytest.mark.parametrize(
    ("user", "action", "refusal"),
    [("viewer", Action.TRIGGER, PermissionDenied), ("globex_admin", Action.VIEW, Http404)],
    ids=["a visible object the user may not act on: 403", "probing another tenant's object by id: 404"],
)
def test_a_refused_object_records_access_denied(cast, user, action, refusal):
    job = cast.make_job(cast.dev)
    with pytest.raises(refusal):
        get_object_or_404_for(getattr(cast, user), action, Job.objects.all(), pk=job.pk)
    event = AuditEvent.objects.filter(action=AuditAction.ACCESS_DENIED).get()
    assert event.actor == getattr(cast, user) and event.tenant == cast.acme
    assert event.object_id == str(job.pk) and event.data["action"] == action


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
    from approvals.services import approve_change
    from jobs.services import set_paused, trigger_run

    change = cast.propose_job(environment=cast.staging, justification="x")
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
