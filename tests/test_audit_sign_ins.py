"""Sign-ins (login, failed login, logout) land in the signing-in user's tenant trail, and only there."""

from django.core.management import call_command

from conftest import PASSWORD
from governance.actors import SYSTEM
from governance.models import AuditAction, AuditEvent

SIGN_INS = [AuditAction.LOGIN, AuditAction.LOGIN_FAILED, AuditAction.LOGOUT]


def sign_in_and_out(client, username):
    assert not client.login(username=username, password="wrong")
    assert client.login(username=username, password=PASSWORD)
    client.logout()


def audit_page(client, user, **params):
    client.force_login(user)
    return client.get("/audit/", params).content.decode()


def test_sign_ins_carry_the_users_tenant(cast, client):
    sign_in_and_out(client, "acme-viewer")
    events = AuditEvent.objects.filter(action__in=SIGN_INS, actor_repr="acme-viewer")
    assert sorted(events.values_list("action", flat=True)) == sorted(SIGN_INS)
    assert {e.tenant_id for e in events} == {cast.acme.pk}


def test_the_tenants_auditor_sees_its_members_sign_ins_and_the_other_tenant_does_not(cast, client):
    sign_in_and_out(client, "acme-viewer")
    sign_in_and_out(client, "globex-author")
    from governance.access import restrict

    acme_seen = restrict(AuditEvent.objects.filter(action__in=SIGN_INS), cast.admin)
    assert set(acme_seen.values_list("actor_repr", flat=True)) == {"acme-viewer"}
    globex_seen = restrict(AuditEvent.objects.filter(action__in=SIGN_INS), cast.globex_admin)
    assert set(globex_seen.values_list("actor_repr", flat=True)) == {"globex-author"}
    # The audit page's action filter is no longer empty for the tenant, and never shows the other tenant.
    html = audit_page(client, cast.admin, action=AuditAction.LOGIN_FAILED)
    assert "acme-viewer" in html and "globex-author" not in html
    html = audit_page(client, cast.globex_admin, action=AuditAction.LOGIN)
    assert "globex-author" in html and "acme-viewer" not in html


def test_a_failed_login_for_an_unknown_name_has_no_tenant(cast, client):
    assert not client.login(username="mallory", password="x")
    event = AuditEvent.objects.get(action=AuditAction.LOGIN_FAILED)
    assert event.tenant_id is None and event.data == {"username": "mallory"}
    assert not AuditEvent.objects.filter(action=AuditAction.LOGIN_FAILED, tenant__isnull=False).exists()


def test_a_member_of_two_tenants_signs_in_to_both_trails(cast, client):
    from governance.models import Role
    from governance.services import grant_role

    grant_role(cast.viewer, Role.VIEWER, tenant=cast.globex, actor=SYSTEM)
    assert client.login(username="acme-viewer", password=PASSWORD)
    logins = AuditEvent.objects.filter(action=AuditAction.LOGIN, actor=cast.viewer)
    assert sorted(logins.values_list("tenant_id", flat=True)) == sorted([cast.acme.pk, cast.globex.pk])


def test_a_user_of_no_tenant_signs_in_to_the_platform_trail(cast, client):
    assert client.login(username="nobody", password=PASSWORD)
    assert AuditEvent.objects.get(action=AuditAction.LOGIN).tenant_id is None


def test_the_chains_still_verify_after_sign_ins(cast, client):
    sign_in_and_out(client, "acme-viewer")
    sign_in_and_out(client, "globex-author")
    assert not client.login(username="mallory", password="x")
    call_command("verify_audit")  # raises CommandError (non-zero) on any broken chain
    from governance import audit

    reports = {r.tenant: r for r in audit.verify_all()}
    assert all(r.ok for r in reports.values())
    assert reports["acme"].checked >= 3 and reports["globex"].checked >= 3 and reports["platform"].checked >= 1
