"""The browser UI's permission matrix, generated: every UI URL x role x own/other tenant x read/write.

Mirrors tests/test_security_matrix.py (the API half). The URL names come from the live URL
resolver, so a page added without a row in ``VIEWS`` fails ``test_every_ui_url_has_a_matrix_entry``.

Speed: the cast and one set of objects per tenant are built once per module (and per xdist
worker) inside an outer transaction; each test runs in a savepoint rolled back at its end, and
reuses a session made once per role.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from approvals.models import ChangeRequest, PostReview
from approvals.services import approve_change, propose_change, reject_change
from conftest import Cast
from governance.actors import SYSTEM
from governance.models import AuditAction, AuditEvent, Role
from governance.services import grant_role
from jobs.models import Job, MaintenanceWindow, Run, RunStatus
from jobs.services import set_paused, trigger_run
from monitoring.incidents import raise_alert
from monitoring.signals import AlertSignal
from tests.api_support import counts

MEMBERS = ["viewer", "operator", "author", "approver", "tenant_admin"]
ROLES = [*MEMBERS, "outsider", "superuser"]
# Role name in the matrix -> attribute of the cast (acme's roles; outsider has none; root is superuser).
CAST_USER = {
    "viewer": "viewer",
    "operator": "operator",
    "author": "author",
    "approver": "approver",
    "tenant_admin": "admin",
    "outsider": "outsider",
    "superuser": "superuser",
}
# URL prefixes that are not the browser UI: the admin, the API, heartbeat pings.
NOT_UI = ("admin/", "api/", "hb/", "healthz", "readyz", "metrics")


def ui_url_names() -> dict[str, str]:
    """Every named URL of the browser UI (name -> route), read from the resolver."""
    found: dict[str, str] = {}

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if route.startswith(NOT_UI):
                continue
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and pattern.name:
                found[pattern.name] = route

    walk(get_resolver().url_patterns, "")
    return found


# --- the world: built once per module ----------------------------------------------------------


def _side(cast: Cast, *, env, team, prefix: str, author, author2, approver, operator) -> SimpleNamespace:
    """One tenant's objects: live jobs (one paused), a queued and a failed run, an open change,
    a stale one, and an emergency change awaiting its review after the fact."""
    job = cast.make_job(env, team, name=f"{prefix}.matrix.main")
    paused_job = cast.make_job(env, team, name=f"{prefix}.matrix.paused")
    set_paused(paused_job, actor=operator, paused=True, reason="matrix")
    stale_job = cast.make_job(env, team, name=f"{prefix}.matrix.stale")
    queued_run = trigger_run(job, actor=operator, reason="matrix")
    failed_run = trigger_run(stale_job, actor=operator, reason="matrix")
    Run.objects.filter(pk=failed_run.pk).update(status=RunStatus.FAILED, finished_at=timezone.now())
    change = propose_change(
        actor=author, action="update", job=job, definition={"cron": "0 * * * *"}, justification="hourly"
    )
    stale_change = propose_change(
        actor=author, action="update", job=stale_job, definition={"cron": "5 * * * *"}, justification="at five"
    )
    moved = propose_change(
        actor=author2, action="update", job=stale_job, definition={"cron": "7 * * * *"}, justification="at seven"
    )
    for _ in range(moved.required_approvals):
        moved = approve_change(moved, actor=approver)
    assert moved.status == "applied"
    rejected_change = propose_change(
        actor=author, action="update", job=paused_job, definition={"cron": "9 * * * *"}, justification="at nine"
    )
    rejected_change = reject_change(rejected_change, actor=approver, reason="matrix")
    created = ChangeRequest.objects.get(job=job, action="create")
    post_review = PostReview.objects.create(change_request=created)
    # Written directly (no change request), so the change counts below stay those of the jobs.
    window = MaintenanceWindow.objects.create(
        tenant=env.tenant,
        environment=env,
        name=f"{prefix} window",
        starts_at=datetime(2026, 6, 1, 22, 0, tzinfo=UTC),
        ends_at=datetime(2026, 6, 2, 2, 0, tzinfo=UTC),
    )
    incident = raise_alert(
        AlertSignal(
            tenant_id=env.tenant_id,
            job_id=job.pk,
            kind="run_failed",
            severity="high",
            fingerprint=f"matrix:{job.pk}",
            summary="matrix",
            at=timezone.now(),
            run_id=failed_run.pk,
        )
    )
    return SimpleNamespace(
        env=env,
        team=team,
        incident=incident,
        prefix=prefix,
        job=job,
        paused_job=paused_job,
        stale_job=stale_job,
        queued_run=queued_run,
        failed_run=failed_run,
        change=change,
        stale_change=stale_change,
        rejected_change=rejected_change,
        post_review=post_review,
        emergency_change=created,
        window=window,
    )


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock(), transaction.atomic():
        cast = Cast()
        own = _side(
            cast,
            env=cast.staging,
            team=cast.payments,
            prefix="payments",
            author=cast.author,
            author2=cast.author2,
            approver=cast.approver,
            operator=cast.operator,
        )
        other = _side(
            cast,
            env=cast.globex_prod,
            team=cast.ops,
            prefix="ops",
            author=cast.globex_author,
            author2=cast.globex_admin,
            approver=cast.globex_approver,
            operator=cast.globex_admin,
        )
        # Staff who are not superusers browse the admin read-only, limited to their roles' rows.
        cast.staff = get_user_model().objects.create_user("acme-staff", is_staff=True)
        grant_role(cast.staff, Role.VIEWER, tenant=cast.acme, actor=SYSTEM)
        sessions = {}
        for role, attribute in {**CAST_USER, "staff": "staff"}.items():
            client = Client()
            client.force_login(getattr(cast, attribute))
            sessions[role] = client.cookies[settings.SESSION_COOKIE_NAME].value
        yield SimpleNamespace(cast=cast, own=own, other=other, sessions=sessions)
        transaction.set_rollback(True)


def client_as(world, role: str | None) -> Client:
    """A fresh client carrying the role's session (None: anonymous)."""
    client = Client()
    if role is not None:
        client.cookies[settings.SESSION_COOKIE_NAME] = world.sessions[role]
    return client


def user_of(world, role: str):
    return getattr(world.cast, CAST_USER[role])


# --- form bodies ---------------------------------------------------------------------------------


def _definition_fields(side, **overrides) -> dict:
    body = {
        "name": f"{side.prefix}.matrix.main",
        "description": "matrix",
        "criticality": "medium",
        "command": "/bin/true",
        "cron": "15 * * * *",
        "timezone": "UTC",
        "timeout_seconds": "60",
        "runbook": "",
        "gap": "shift",
        "overlap": "once",
        "catchup": "skip",
        "catchup_limit": "10",
        "starting_deadline_seconds": "",
        "rationale": "",
        "sunset_on": "",
        "justification": "matrix",
        "ticket": "",
    }
    body.update(overrides)
    return body


def _new_job_body(side) -> dict:
    return _definition_fields(side, team=side.team.pk, environment=side.env.pk, name=f"{side.prefix}.matrix.new")


def _revise_body(side) -> dict:
    return _definition_fields(side, based_on_revision=side.change.revision, cron="45 * * * *")


REASON = {"reason": "matrix"}
JUSTIFY = {"justification": "matrix"}
WINDOW_KIND = {"kind": "maintenance_window"}


def _window_body(side) -> dict:
    return {
        "name": f"{side.prefix} window",
        "starts_at": "2026-06-01T22:00",
        "ends_at": "2026-06-02T02:00",
        "cron": "",
        "timezone": "UTC",
        "duration_minutes": "",
        "policy": "skip",
        "justification": "matrix",
    }


def _new_window_body(side) -> dict:
    return {**_window_body(side), "place": f"e{side.env.pk}", "name": f"{side.prefix} new window"}


# --- the matrix ----------------------------------------------------------------------------------


def allowed(ok: int, *roles: str, denied: int = 403) -> dict[str, int]:
    """Expected statuses on the own tenant's object: ``roles`` get ``ok``, other members ``denied``,
    the outsider 404 (the object is hidden from them)."""
    expected = {role: (ok if role in roles else denied) for role in [*MEMBERS, "superuser"]}
    expected["outsider"] = 404
    return expected


EVERYONE = (*MEMBERS, "superuser")
OPERATORS = ("operator", "author", "tenant_admin", "superuser")
PROPOSERS = ("author", "tenant_admin", "superuser")
REVIEWERS = ("approver", "superuser")


@dataclass(frozen=True)
class View:
    """One UI URL: the object its pk names (None: no pk), expected statuses per role for GET and
    POST on the own tenant's object (None: that method is not part of the view), the POST body,
    and the statuses on the other tenant's object where they are not plain 404."""

    obj: str | None
    get: dict[str, int] | None = None
    post: dict[str, int] | None = None
    body: object = None
    other_get: dict[str, int] = field(default_factory=dict)
    other_post: dict[str, int] = field(default_factory=dict)
    # URL arguments other than the object's pk (e.g. a version), from the side's objects.
    url_kwargs: Callable[[SimpleNamespace], dict] | None = None


def _everyone(status: int) -> dict[str, int]:
    return dict.fromkeys(ROLES, status)


VIEWS: dict[str, View] = {
    "login": View(None, get=_everyone(200)),
    "logout": View(None, post=_everyone(302)),
    # Pages without an object: what each role sees there is counted in test_ui_lists_show_...
    "dashboard": View(None, get=_everyone(200)),
    "audit_list": View(None, get=_everyone(200)),
    "notification_list": View(None, get=_everyone(200)),
    "job_list": View(None, get=_everyone(200)),
    "change_list": View(None, get=_everyone(200)),
    "change_new": View(
        None,
        get=allowed(200, *PROPOSERS) | {"outsider": 403},
        post=allowed(302, *PROPOSERS) | {"outsider": 403},
        body=_new_job_body,
        # The other tenant's team and environment are not choices: a form error, not a leak.
        other_post=allowed(302, "superuser") | {"outsider": 403, "author": 400, "tenant_admin": 400},
    ),
    "job_detail": View("job", get=allowed(200, *EVERYONE)),
    "job_live": View("job", get=allowed(200, *EVERYONE)),
    "run_live": View("queued_run", get=allowed(200, *EVERYONE)),
    # Lists and live fragments without an object: each role sees only its own runs.
    "run_list": View(None, get=_everyone(200)),
    "run_export": View(None, get=_everyone(200)),
    "now": View(None, get=_everyone(200)),
    "now_panel": View(None, get=_everyone(200)),
    "now_board": View(None, get=_everyone(200)),
    "job_trigger": View("job", post=allowed(302, *OPERATORS), body=REASON),
    "job_pause": View("job", post=allowed(302, *OPERATORS), body=REASON),
    "job_resume": View("paused_job", post=allowed(302, *OPERATORS), body=REASON),
    "change_edit": View(
        "job",
        get=allowed(200, *PROPOSERS),
        post=allowed(302, *PROPOSERS),
        body=lambda side: _definition_fields(side),
    ),
    # Pausing under change control is an operator's proposal (approvals follow like an update).
    "change_pause": View("job", get=allowed(200, *OPERATORS), post=allowed(302, *OPERATORS), body=JUSTIFY),
    "change_resume": View("paused_job", get=allowed(200, *OPERATORS), post=allowed(302, *OPERATORS), body=JUSTIFY),
    "change_delete": View("job", get=allowed(200, *PROPOSERS), post=allowed(302, *PROPOSERS), body=JUSTIFY),
    "run_detail": View("queued_run", get=allowed(200, *EVERYONE)),
    "run_cancel": View("queued_run", post=allowed(302, *OPERATORS), body=REASON),
    "run_rerun": View("failed_run", post=allowed(302, *OPERATORS), body=REASON),
    "run_rerun-failed": View("failed_run", post=allowed(302, *OPERATORS), body=REASON),
    "run_mark-succeeded": View("failed_run", post=allowed(302, *OPERATORS), body=REASON),
    "change_detail": View("change", get=allowed(200, *EVERYONE)),
    # The author of the open change is the matrix's author: nobody approves their own change.
    "change_approve": View(
        "change", post=allowed(302, *REVIEWERS), body=lambda side: {"comment": "ok", "revision": side.change.revision}
    ),
    "change_reject": View(
        "change", post=allowed(302, *REVIEWERS), body=lambda side: {"reason": "no", "revision": side.change.revision}
    ),
    # Only the author resubmits their rejected request.
    "change_resubmit": View(
        "rejected_change",
        post=allowed(302, "author"),
        body=lambda side: {"justification": "fixed", "based_on_revision": side.rejected_change.revision},
    ),
    # The propose form's live hints: any signed-in user; a job they may not propose to is ignored.
    "change_hints": View(None, get=_everyone(200)),
    "change_withdraw": View("change", post=allowed(302, "author"), body=REASON),
    "change_comment": View("change", post=allowed(302, "author", *REVIEWERS), body={"body": "why?"}),
    "change_revise": View(
        "change", get=allowed(200, "author"), post=allowed(302, "author"), body=lambda side: _revise_body(side)
    ),
    "change_rebase": View("stale_change", post=allowed(302, "author")),
    "change_post_review": View("emergency_change", post=allowed(302, *REVIEWERS), body={"notes": "fine"}),
    # Around the review flow (approvals.control_views): lists everyone sees, filtered to their tenant.
    "change_post_reviews": View(None, get=_everyone(200)),
    "policy_list": View(None, get=_everyone(200)),
    "freeze_list": View(None, get=_everyone(200)),
    "overdue_list": View(None, get=_everyone(200)),
    "policy_propose": View(None, get=allowed(200, "tenant_admin", "superuser") | {"outsider": 403}),
    "job_recertify": View("job", post=allowed(302, *PROPOSERS), body={"note": "checked"}),
    "job_rollback": View("job", get=allowed(200, *PROPOSERS), url_kwargs=lambda side: {"version": 1}),
    # The other side's job lives in the last environment: nothing to promote to, even for the superuser.
    "job_promote": View("job", get=allowed(200, *PROPOSERS), other_get={"superuser": 403}),
    # Maintenance windows (like calendars and pools) change through change requests proposed by tenant
    # admins and whole-environment authors.
    # Incidents: everyone reads; operators and above acknowledge and resolve (with a reason).
    "incident_list": View(None, get=_everyone(200)),
    "incident_detail": View("incident", get=allowed(200, *EVERYONE)),
    "incident_acknowledge": View("incident", post=allowed(302, *OPERATORS)),
    "incident_resolve": View("incident", post=allowed(302, *OPERATORS), body=REASON),
    # The team page (members, who is on call, open incidents): anyone who can see the team.
    "team_detail": View("team", get=allowed(200, *EVERYONE)),
    "config_list": View(None, get=_everyone(200)),
    "config_new": View(
        None,
        get=allowed(200, *PROPOSERS) | {"outsider": 403},
        post=allowed(302, *PROPOSERS) | {"outsider": 403},
        body=_new_window_body,
        # The other tenant's environment is not a choice: a form error, not a leak.
        other_post=allowed(302, "superuser") | {"outsider": 403, "author": 400, "tenant_admin": 400},
        url_kwargs=lambda side: WINDOW_KIND,
    ),
    "config_edit": View(
        "window",
        get=allowed(200, *PROPOSERS),
        post=allowed(302, *PROPOSERS),
        body=_window_body,
        url_kwargs=lambda side: WINDOW_KIND,
    ),
    "config_delete": View(
        "window",
        get=allowed(200, *PROPOSERS),
        post=allowed(302, *PROPOSERS),
        body=JUSTIFY,
        url_kwargs=lambda side: WINDOW_KIND,
    ),
    # Insights review pages (insights/review_views.py): every member reads them, filtered to their
    # part; "propose" opens a draft change request, so only those who may propose changes may.
    "insights_rightsizing": View(None, get=_everyone(200)),
    "insights_zombies": View(None, get=_everyone(200)),
    "insights_overhead": View(None, get=_everyone(200)),
    "insights_rightsizing_propose": View("job", post=allowed(302, *PROPOSERS), body={"timeout_seconds": "120"}),
    # Insights (issue 21): every member reads its tenant's; the outsider is told there is nothing.
    "insights_index": View(None, get=_everyone(200)),
    "insights_capacity": View(None, get=_everyone(200)),
    "insights_herds": View(None, get=_everyone(200)),
    "insights_herds_propose": View(
        None,
        post=allowed(302, *PROPOSERS),
        body=lambda side: {"tenant": side.env.tenant.slug, "job": [side.paused_job.pk]},
    ),
    # Recomputing the cache changes no governed data (not audited); the outsider has no tenant.
    "insights_refresh": View(None, post=_everyone(302) | {"outsider": 404}),
    # Alert rules (monitoring.views): everyone reads their tenant's; proposals go through config_new.
    "alert_rule_list": View(None, get=_everyone(200)),
}
# POSTs that write nothing governed, so leave no audit event.
NOT_AUDITED = ("login", "logout", "insights_refresh")


def _other_expected(view: View, method: str, role: str) -> int:
    overrides = view.other_get if method == "get" else view.other_post
    if role in overrides:
        return overrides[role]
    own = view.get if method == "get" else view.post
    if view.obj is None:
        return own[role]
    # Another tenant's object: 404 like a missing one, for everyone but the superuser.
    return own[role] if role == "superuser" else 404


def _cases():
    for name, view in VIEWS.items():
        for method in ("get", "post"):
            own = view.get if method == "get" else view.post
            if own is None:
                continue
            sides = ["own", "other"] if (view.obj is not None or view.other_post or view.other_get) else ["own"]
            for side in sides:
                for role in ROLES:
                    yield pytest.param(name, method, side, role, id=f"{name}-{method}-{side}-{role}")


def _url(world, name: str, view: View, side) -> str:
    kwargs = {"pk": getattr(side, view.obj).pk} if view.obj else {}
    if view.url_kwargs is not None:
        kwargs.update(view.url_kwargs(side))
    return reverse(name, kwargs=kwargs)


def _body(view: View, side) -> dict:
    if view.body is None:
        return {}
    return view.body(side) if callable(view.body) else dict(view.body)


def test_every_ui_url_has_a_matrix_entry():
    names = ui_url_names()
    missing = sorted(set(names) - set(VIEWS))
    stale = sorted(set(VIEWS) - set(names))
    assert not missing, "UI URLs without a permission-matrix entry in tests/test_security_matrix_ui.py VIEWS: " + (
        ", ".join(f"{name} ({names[name]})" for name in missing)
    )
    assert not stale, f"Matrix entries for URLs that no longer exist: {stale}"


@pytest.mark.parametrize(("name", "method", "side_name", "role"), list(_cases()))
def test_ui_permission_matrix(world, db, name, method, side_name, role):
    view = VIEWS[name]
    side = getattr(world, side_name)
    expected = (view.get if method == "get" else view.post)[role]
    if side_name == "other":
        expected = _other_expected(view, method, role)
    user = user_of(world, role)
    client = client_as(world, role)
    url = _url(world, name, view, side)
    before = counts()
    last_event = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    response = client.post(url, _body(view, side)) if method == "post" else client.get(url)
    assert response.status_code == expected, (name, method, side_name, role, response.status_code)
    new_events = AuditEvent.objects.filter(id__gt=last_event)
    target = getattr(side, view.obj) if view.obj else None
    if response.status_code == 403 or (response.status_code == 404 and target is not None):
        # A refusal, or a probe of an object that exists: always on the record.
        denied = new_events.filter(action=AuditAction.ACCESS_DENIED, actor=user)
        assert denied.exists(), (name, method, side_name, role, "no access.denied event")
        if target is not None:
            # In the object's own chain, where its tenant's admins can see it.
            assert denied.filter(tenant_id=target.tenant_id).exists(), (name, role, "denial outside the tenant")
    if method == "post" and name not in ("login", "logout"):
        if response.status_code < 400:
            assert (
                name in NOT_AUDITED or new_events.filter(actor=user).exclude(action=AuditAction.ACCESS_DENIED).exists()
            ), (
                name,
                role,
                "an allowed write left no audit event",
            )
        else:
            after = counts()
            assert {k: v for k, v in after.items() if k != "audit_events"} == {
                k: v for k, v in before.items() if k != "audit_events"
            }
            assert not new_events.exclude(action=AuditAction.ACCESS_DENIED).exists(), list(
                new_events.values_list("action", flat=True)
            )
            if response.status_code in (403,):
                assert new_events.filter(action=AuditAction.ACCESS_DENIED, actor=user).exists(), (
                    name,
                    role,
                    "a refused write left no access.denied event",
                )


@pytest.mark.parametrize("name", [n for n, v in VIEWS.items() if n not in ("login", "logout")])
@pytest.mark.parametrize("method", ["get", "post"])
def test_ui_anonymous_is_sent_to_login(world, db, name, method):
    view = VIEWS[name]
    response = getattr(client_as(world, None), method)(_url(world, name, view, world.own))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


@pytest.mark.parametrize("name", [n for n, v in VIEWS.items() if v.get is None and n != "logout"])
def test_ui_actions_refuse_get(world, db, name):
    view = VIEWS[name]
    response = client_as(world, "viewer").get(_url(world, name, view, world.own))
    assert response.status_code == 405


# Rows of the world each role sees in the list pages: acme's members see acme's, the superuser
# both tenants', the outsider nothing.
JOBS_PER_SIDE = 3
CHANGES_PER_SIDE = 7  # three creations, the open change, the stale one, the one that made it stale, a rejected one
OPEN_FOR_REVIEW_PER_SIDE = 2  # the open change and the stale one


def _sides_seen(role: str) -> int:
    return {"outsider": 0, "superuser": 2}.get(role, 1)


@pytest.mark.parametrize("role", ROLES)
def test_ui_lists_show_exactly_the_rows_of_the_roles_tenant(world, db, role):
    client = client_as(world, role)
    sides = _sides_seen(role)
    assert Job.objects.filter(tenant=world.cast.acme).count() == JOBS_PER_SIDE
    assert ChangeRequest.objects.filter(tenant=world.cast.acme).count() == CHANGES_PER_SIDE

    jobs = client.get(reverse("job_list"))
    assert len(jobs.context["jobs"]) == JOBS_PER_SIDE * sides
    html = jobs.content.decode()
    assert ("payments.matrix.main" in html) == (role != "outsider")
    assert ("ops.matrix.main" in html) == (role == "superuser")

    changes = client.get(reverse("change_list"), {"tab": "all"})
    assert len(changes.context["changes"]) == CHANGES_PER_SIDE * sides
    queue = {"approver": 1, "superuser": 2}.get(role, 0) * OPEN_FOR_REVIEW_PER_SIDE
    assert changes.context["queue_count"] == queue

    dashboard = client.get(reverse("dashboard"))
    assert sum(env["total"] for env in dashboard.context["environments"]) == JOBS_PER_SIDE * sides
    assert len(dashboard.context["queue"]) == queue

    if role == "superuser":
        expected_events = AuditEvent.objects.count()
    elif role == "outsider":
        expected_events = 0
    else:
        expected_events = AuditEvent.objects.filter(tenant=world.cast.acme).count()
    audit = client.get(reverse("audit_list"))
    assert audit.context["page"].paginator.count == expected_events
    assert len(audit.context["events"]) == min(expected_events, 50)


# The admin's changelists of the governed models, as separate cases: members without staff status
# are sent to the admin login, staff see their tenant's rows (read-only), the superuser every row.
ADMIN_CHANGELISTS = {
    "jobs.job": lambda tenant: Job.objects.filter(tenant=tenant).count(),
    "jobs.run": lambda tenant: Run.objects.filter(tenant=tenant).count(),
    "approvals.changerequest": lambda tenant: ChangeRequest.objects.filter(tenant=tenant).count(),
    "governance.auditevent": lambda tenant: AuditEvent.objects.filter(tenant=tenant).count(),
}


@pytest.mark.parametrize("role", [*ROLES, "staff"])
@pytest.mark.parametrize("model", list(ADMIN_CHANGELISTS))
def test_admin_changelists_of_governed_models(world, db, model, role):
    app_label, model_name = model.split(".")
    url = reverse(f"admin:{app_label}_{model_name}_changelist")
    response = client_as(world, role).get(url)
    if role not in ("staff", "superuser"):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
        return
    assert response.status_code == 200
    rows = response.context["cl"].result_count
    count = ADMIN_CHANGELISTS[model]
    if role == "staff":
        assert rows == count(world.cast.acme) > 0
    else:
        everything = count(world.cast.acme) + count(world.cast.globex)
        assert rows == (AuditEvent.objects.count() if model == "governance.auditevent" else everything)


def test_a_refusal_no_view_recorded_is_audited_with_its_path(world, db):
    """The safety net: a 403 from outside any view (here CSRF) is still on the record, once."""
    client = Client(enforce_csrf_checks=True)
    client.cookies[settings.SESSION_COOKIE_NAME] = world.sessions["approver"]
    url = reverse("change_approve", kwargs={"pk": world.own.change.pk})
    last_event = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    response = client.post(url, {"comment": "forged", "revision": world.own.change.revision})
    assert response.status_code == 403
    denied = AuditEvent.objects.filter(id__gt=last_event)
    assert [(e.action, e.actor, e.data["path"]) for e in denied] == [
        (AuditAction.ACCESS_DENIED, world.cast.approver, url)
    ]
    assert not world.own.change.reviews.exists()
