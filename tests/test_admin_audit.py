"""The Django admin cannot lower an approval policy, and every write it allows lands in the audit chain
of the tenant it touches (and so in the SIEM stream)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.test import RequestFactory
from django.urls import reverse
from guardian.shortcuts import assign_perm

from conftest import PASSWORD
from governance import audit
from governance.actors import SYSTEM
from governance.admin import AuditedAdminMixin
from governance.models import AuditAction, AuditEvent, Role, Scope, ScopeUserRole
from governance.siem import forward_once, parse_destination
from jobs.models import EnvironmentExecutionPolicy, TenantExecutionPolicy
from monitoring import oncall_services
from notifications.models import Channel
from tests.incident_support import T0, policy, rotation
from tests.test_audit_siem import SyslogReceiver
from tests.vault import free_port


@pytest.fixture
def root(client, cast):
    client.login(username=cast.superuser.username, password=PASSWORD)
    return client


class _FormFields(HTMLParser):
    """The fields a browser would submit from the admin's change form (id ``<model>_form``)."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.data: dict[str, list[str]] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def _add(self, name: str, value: str) -> None:
        self.data.setdefault(name, []).append(value)

    def handle_starttag(self, tag, attrs):
        attr = dict(attrs)
        if tag == "form":
            self.inside = attr.get("id") == self.form_id
        if not self.inside or ("name" not in attr and tag != "option"):
            return
        if tag == "input":
            kind = attr.get("type", "text")
            if kind in {"submit", "button", "file"}:
                return
            if kind in {"checkbox", "radio"}:
                if "checked" in attr:
                    self._add(attr["name"], attr.get("value") or "on")
                return
            self._add(attr["name"], attr.get("value") or "")
        elif tag == "select":
            self._select = attr["name"]
            self.data.setdefault(self._select, [])
        elif tag == "option" and self._select and "selected" in attr:
            self._add(self._select, attr.get("value") or "")
        elif tag == "textarea":
            self._textarea = attr["name"]
            self._add(self._textarea, "")

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea][-1] += data

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            if self._textarea:
                # Django renders a newline after <textarea> that browsers drop.
                self.data[self._textarea][-1] = self.data[self._textarea][-1].removeprefix("\n")
            self._textarea = None
        elif tag == "form":
            self.inside = False


def _change_form(client, obj) -> tuple[str, dict[str, list[str]]]:
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    return _change_form_at(client, url, f"{opts.model_name}_form")


def _change_form_at(client, url: str, form_id: str) -> tuple[str, dict[str, list[str]]]:
    response = client.get(url)
    assert response.status_code == 200, url
    parser = _FormFields(form_id)
    parser.feed(response.content.decode())
    assert parser.data, f"no change form found on {url}"
    parser.data["_save"] = ["Save"]
    return url, parser.data


def _events(tenant, action=None, obj=None):
    events = AuditEvent.objects.filter(tenant=tenant)
    if action:
        events = events.filter(action=action)
    if obj is not None:
        events = events.filter(object_type=obj._meta.label_lower, object_id=str(obj.pk))
    return events


# --- hole 9: the admin cannot lower an approval policy --------------------------------------


def test_superuser_cannot_lower_prod_required_approvals_in_admin(root, cast):
    url, data = _change_form(root, cast.prod)
    assert "required_approvals" not in data  # shown read-only, not as an input
    data["required_approvals"] = ["0"]
    root.post(url, data)
    cast.prod.refresh_from_db()
    assert cast.prod.required_approvals == 2

    change = cast.propose_job(justification="the next prod change after the admin edit")
    assert change.required_approvals == 2
    assert change.status == "submitted"


def test_reverting_an_environment_to_a_version_with_fewer_approvals_is_refused(root, cast):
    cast.prod.required_approvals = 0
    cast.prod.save()
    lax = cast.prod.history.order_by("-history_date").first()
    cast.prod.required_approvals = 2
    cast.prod.save()
    url = reverse("admin:governance_environment_simple_history", args=[cast.prod.pk, lax.history_id])
    response = root.post(url, {"slug": "prod", "name": "Prod", "order": "2", "tenant": cast.acme.pk, "_save": "Save"})
    assert response.status_code == 403
    cast.prod.refresh_from_db()
    assert cast.prod.required_approvals == 2
    assert not _events(cast.acme, AuditAction.ADMIN_CHANGED).exists()


def test_superuser_edit_of_the_executable_allow_list_is_audited_and_forwarded(root, cast):
    policy = TenantExecutionPolicy.objects.create(tenant=cast.acme, allowed_executables=["/usr/bin/*"])
    url, data = _change_form(root, policy)
    data["allowed_executables"] = [json.dumps(["/usr/bin/*", "/tmp/*"])]
    assert root.post(url, data).status_code == 302
    policy.refresh_from_db()
    assert policy.allowed_executables == ["/usr/bin/*", "/tmp/*"]

    event = _events(cast.acme, AuditAction.ADMIN_CHANGED, policy).get()
    assert event.actor == cast.superuser
    assert event.data["changes"]["allowed_executables"] == [["/usr/bin/*"], ["/usr/bin/*", "/tmp/*"]]
    assert audit.verify_chain(cast.acme.pk)[2] == ""
    assert not _events(cast.globex, AuditAction.ADMIN_CHANGED).exists()

    receiver = SyslogReceiver(free_port())
    receiver.start()
    try:
        forward_once(parse_destination(f"syslog+tcp://127.0.0.1:{receiver.port}"))
    finally:
        receiver.stop()
    assert event.pk in receiver.ids()
    forwarded = [m for m in receiver.messages if f'id="{event.pk}"'.encode() in m]
    assert b'tenant="acme"' in forwarded[0] and f'hash="{event.hash}"'.encode() in forwarded[0]


def test_superuser_role_grant_in_admin_lands_in_the_tenant_chain(root, cast):
    scope = Scope.objects.get(tenant=cast.acme, team=None, environment=None)
    approver = Permission.objects.get(codename=f"role_{Role.APPROVER}")
    response = root.post(
        reverse("admin:governance_scopeuserrole_add"),
        {"user": cast.viewer.pk, "permission": approver.pk, "content_object": scope.pk, "_save": "Save"},
    )
    assert response.status_code == 302
    grant = ScopeUserRole.objects.get(user=cast.viewer, permission=approver)
    event = _events(cast.acme, AuditAction.ADMIN_CREATED, grant).get()
    assert event.data["changes"]["permission"] == [None, approver.pk]
    assert audit.verify_chain(cast.acme.pk)[2] == ""


def test_bulk_deleting_role_grants_is_audited_per_grant(root, cast):
    grants = list(ScopeUserRole.objects.filter(user__in=[cast.viewer, cast.operator]))
    response = root.post(
        reverse("admin:governance_scopeuserrole_changelist"),
        {"action": "delete_selected", "_selected_action": [g.pk for g in grants], "post": "yes"},
    )
    assert response.status_code == 302
    assert not ScopeUserRole.objects.filter(pk__in=[g.pk for g in grants]).exists()
    deleted = _events(cast.acme, AuditAction.ADMIN_DELETED)
    assert sorted(int(e.object_id) for e in deleted) == sorted(g.pk for g in grants)
    assert audit.verify_chain(cast.acme.pk)[2] == ""


def test_adding_a_user_to_a_group_with_roles_is_audited_in_that_tenant(root, cast):
    group = Group.objects.create(name="globex-approvers")
    assign_perm(f"governance.role_{Role.APPROVER}", group, Scope.objects.get(tenant=cast.globex, team=None))
    url, data = _change_form(root, cast.outsider)
    data["groups"] = [str(group.pk)]
    assert root.post(url, data).status_code == 302
    event = _events(cast.globex, AuditAction.ADMIN_CHANGED, cast.outsider).get()
    assert event.data["changes"]["groups"] == [[], [group.pk]]
    assert not _events(cast.acme, AuditAction.ADMIN_CHANGED).exists()


def test_a_write_that_fails_leaves_no_event(root, cast):
    url, data = _change_form(root, cast.data)
    data["slug"] = ["payments"]  # taken in the tenant
    assert root.post(url, data).status_code == 200
    assert not _events(cast.acme, AuditAction.ADMIN_CHANGED).exists()


# --- every registered admin: refused, or audited in the right chain --------------------------


@dataclass(frozen=True)
class Edit:
    """How the walk below changes one object of an editable admin, and whose chain must show it."""

    make: Callable
    field: str
    value: Callable
    tenant: Callable


def _group_with_role(cast):
    group = Group.objects.create(name="acme-readers")
    assign_perm(f"governance.role_{Role.VIEWER}", group, Scope.objects.get(tenant=cast.acme, team=None))
    return group


def _perm(role):
    return lambda cast, obj: str(Permission.objects.get(codename=f"role_{role}").pk)


EDITABLE = {
    "governance.tenant": Edit(
        lambda c: c.globex, "naming_pattern", lambda c, o: r"^(?P<team>[a-z]+)\..+$", lambda c: c.globex
    ),
    "governance.team": Edit(lambda c: c.ops, "name", lambda c, o: "Operations", lambda c: c.globex),
    "governance.environment": Edit(lambda c: c.staging, "name", lambda c, o: "Stage", lambda c: c.acme),
    "governance.scope": Edit(
        lambda c: Scope.objects.create(tenant=c.acme, team=c.data),
        "environment",
        lambda c, o: str(c.prod.pk),
        lambda c: c.acme,
    ),
    "governance.scopeuserrole": Edit(
        lambda c: ScopeUserRole.objects.get(user=c.viewer), "permission", _perm(Role.TENANT_ADMIN), lambda c: c.acme
    ),
    "governance.scopegrouprole": Edit(
        lambda c: _group_with_role(c).scopegrouprole_set.get(), "permission", _perm(Role.APPROVER), lambda c: c.acme
    ),
    "jobs.tenantexecutionpolicy": Edit(
        lambda c: TenantExecutionPolicy.objects.create(tenant=c.globex),
        "allowed_executables",
        lambda c, o: '["/bin/sh"]',
        lambda c: c.globex,
    ),
    "notifications.channel": Edit(
        lambda c: Channel.objects.create(tenant=c.globex, name="ops-mail", kind="email", target="ops@globex.test"),
        "target",
        lambda c, o: "oncall@globex.test",
        lambda c: c.globex,
    ),
    "jobs.environmentexecutionpolicy": Edit(
        lambda c: EnvironmentExecutionPolicy.objects.create(environment=c.prod),
        "http_allowed_hosts",
        lambda c, o: '["evil.example.com"]',
        lambda c: c.acme,
    ),
    # On-call is managed without change requests; superusers' admin edits are audited.
    "monitoring.rotation": Edit(
        lambda c: rotation(c.payments, [c.operator]), "name", lambda c, o: "payments nights", lambda c: c.acme
    ),
    "monitoring.rotationlayer": Edit(
        lambda c: rotation(c.payments, [c.operator]).layers.get(), "name", lambda c, o: "nights", lambda c: c.acme
    ),
    "monitoring.override": Edit(
        lambda c: oncall_services.create_override(
            actor=SYSTEM,
            rotation=rotation(c.payments, [c.operator]),
            user=c.admin,
            starts_at=T0,
            ends_at=T0 + timedelta(hours=8),
        ),
        "reason",
        lambda c, o: "swap",
        lambda c: c.acme,
    ),
    "monitoring.escalationpolicy": Edit(
        lambda c: policy(c.acme, c.payments, [{"users": [c.operator]}]),
        "description",
        lambda c, o: "pages the operator",
        lambda c: c.acme,
    ),
    "monitoring.route": Edit(
        lambda c: policy(c.acme, c.payments, [{"users": [c.operator]}]).routes.get(),
        "page_during_maintenance",
        lambda c, o: "on",
        lambda c: c.acme,
    ),
    "monitoring.silence": Edit(
        lambda c: oncall_services.create_silence(
            actor=SYSTEM, tenant=c.acme, team=c.payments, ends_at=T0 + timedelta(days=3650), reason="migration"
        ),
        "reason",
        lambda c, o: "migration, phase 2",
        lambda c: c.acme,
    ),
    "auth.user": Edit(lambda c: c.approver, "first_name", lambda c, o: "Mallory", lambda c: c.acme),
    "auth.group": Edit(_group_with_role, "name", lambda c, o: "acme-everyone", lambda c: c.acme),
}

# Registered, editable, and outside governance (docs/operations.md says why).
NOT_GOVERNED = {
    "axes.accessattempt",  # login throttling state: deleting a row unlocks a login
    "axes.accesslog",
    "axes.accessfailurelog",
    "django_q.success",  # worker bookkeeping; a resubmitted run task is stopped by the run claim
    "django_q.failure",
    "django_q.ormq",
}


def _superuser_request(cast):
    request = RequestFactory().get("/admin/")
    request.user = cast.superuser
    return request


def _registry():
    return sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label_lower)


def test_every_registered_admin_is_read_only_audited_or_declared_ungoverned(cast):
    request = _superuser_request(cast)
    seen = set()
    for model, model_admin in _registry():
        label = model._meta.label_lower
        writes = (
            model_admin.has_add_permission(request),
            model_admin.has_change_permission(request),
            model_admin.has_delete_permission(request),
        )
        if not any(writes):
            assert label not in EDITABLE and label not in NOT_GOVERNED, f"{label} is read-only: drop it from the lists"
            continue
        seen.add(label)
        if label in NOT_GOVERNED:
            continue
        assert label in EDITABLE, f"{label}: a superuser may write it; make it read-only, or audit it and add an Edit"
        assert isinstance(model_admin, AuditedAdminMixin), f"{label}: writes are not audited"
    assert seen == set(EDITABLE) | NOT_GOVERNED


@pytest.mark.parametrize(
    "label", [model._meta.label_lower for model, _ in _registry() if model._meta.app_label not in {"axes", "django_q"}]
)
def test_a_superuser_change_is_refused_or_lands_in_the_right_tenant_chain(root, cast, label):
    model, model_admin = next((m, a) for m, a in admin.site._registry.items() if m._meta.label_lower == label)
    opts = model._meta
    if label not in EDITABLE:
        # Read-only: nothing is added, changed or deleted, whatever is posted.
        add_url = reverse(f"admin:{opts.app_label}_{opts.model_name}_add")
        assert root.post(add_url, {"_save": "Save"}).status_code == 403
        obj = cast.make_job(cast.prod) if label == "jobs.job" else model._default_manager.first()
        if obj is not None:
            for view in ("change", "delete"):
                url = reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=[obj.pk])
                assert root.post(url, {"post": "yes", "_save": "Save"}).status_code == 403, url
            assert model._default_manager.filter(pk=obj.pk).exists()
        return
    edit = EDITABLE[label]
    obj = edit.make(cast)
    tenant = edit.tenant(cast)
    before = _events(tenant).count()
    url, data = _change_form(root, obj)
    data[edit.field] = [edit.value(cast, obj)]
    response = root.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    event = _events(tenant, AuditAction.ADMIN_CHANGED, obj).get()
    assert edit.field in event.data["changes"]
    assert event.actor == cast.superuser and event.seq == before + 1
    checked, bad, reason = audit.verify_chain(tenant.pk)
    assert reason == "" and checked == event.seq


def test_a_history_revert_of_an_audited_object_is_audited(root, cast):
    cast.ops.name = "Operations"
    cast.ops.save()
    first = cast.ops.history.order_by("history_date").first()
    url = reverse("admin:governance_team_simple_history", args=[cast.ops.pk, first.history_id])
    _, data = _change_form_at(root, url, "historicalteam_form")
    assert root.post(url, data).status_code == 302
    cast.ops.refresh_from_db()
    assert cast.ops.name == "Ops"
    event = _events(cast.globex, AuditAction.ADMIN_CHANGED, cast.ops).get()
    assert event.data["changes"]["name"] == ["Operations", "Ops"]
