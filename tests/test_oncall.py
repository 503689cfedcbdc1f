"""On-call: who is on call across handoffs (exact across daylight-saving changes), overrides and
layers; the team page; the API that manages rotations, policies, routes and silences (admins only,
bad input refused with the field named and nothing saved)."""

from __future__ import annotations

import datetime as dt
from datetime import UTC

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from conftest import PASSWORD
from governance.actors import SYSTEM
from governance.models import AuditAction, AuditEvent, Role
from governance.services import grant_role
from monitoring import oncall, oncall_services
from monitoring.models import EscalationPolicy, Override, Rotation, Route, Silence
from tests.api_support import client_for
from tests.incident_support import rotation


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def who(team, at) -> str | None:
    user = oncall.who_is_on_call(team, at)
    return user.username if user else None


def test_weekly_handoff_stays_at_nine_local_across_both_dst_changes(cast):
    # Mondays 09:00 Europe/Berlin from 2026-03-16: 08:00Z in winter, 07:00Z in summer.
    rotation(cast.payments, [cast.operator, cast.admin], starts_on=dt.date(2026, 3, 16))
    team = cast.payments
    assert who(team, utc(2026, 3, 16, 7, 59)) is None  # before the first handoff
    assert who(team, utc(2026, 3, 16, 8, 0)) == "acme-operator"
    assert who(team, utc(2026, 3, 23, 8, 0)) == "acme-admin"
    # Spring: the clocks went forward on Sunday 29 March; Monday's 09:00 is 07:00Z.
    assert who(team, utc(2026, 3, 30, 6, 59, 59)) == "acme-admin"
    assert who(team, utc(2026, 3, 30, 7, 0)) == "acme-operator"
    handoff = oncall.next_handoff(team, utc(2026, 3, 25, 12, 0))
    assert (handoff.at, handoff.user.username) == (utc(2026, 3, 30, 7, 0), "acme-operator")
    # Autumn: back on Sunday 25 October; Monday 26 October 09:00 is 08:00Z again (shift 32: operator).
    assert who(team, utc(2026, 10, 26, 7, 59, 59)) == "acme-admin"
    assert who(team, utc(2026, 10, 26, 8, 0)) == "acme-operator"
    assert oncall.next_handoff(team, utc(2026, 10, 20)).at == utc(2026, 10, 26, 8, 0)


def test_a_handoff_time_the_spring_change_skips_happens_an_hour_later_and_a_repeated_one_once(cast):
    rotation(
        cast.payments,
        [cast.operator, cast.admin, cast.viewer],
        starts_on=dt.date(2026, 3, 27),
        days=1,
        handoff=dt.time(2, 30),
    )
    team = cast.payments
    assert who(team, utc(2026, 3, 28, 1, 30)) == "acme-admin"  # 02:30 CET
    # 29 March has no 02:30 in Berlin: the handoff is at 03:30 CEST (01:30Z).
    assert who(team, utc(2026, 3, 29, 1, 29)) == "acme-admin"
    assert who(team, utc(2026, 3, 29, 1, 30)) == "acme-viewer"
    assert oncall.next_handoff(team, utc(2026, 3, 29, 2, 0)).at == utc(2026, 3, 30, 0, 30)  # 02:30 CEST
    # 25 October has 02:30 twice: the handoff is at the first (00:30Z), not again an hour later.
    handoff = oncall.next_handoff(team, utc(2026, 10, 24, 23, 0))
    assert handoff.at == utc(2026, 10, 25, 0, 30)
    assert oncall.next_handoff(team, handoff.at).at == utc(2026, 10, 26, 1, 30)  # 02:30 CET


def test_an_override_wins_over_the_rotation_while_it_lasts(cast):
    made = rotation(cast.payments, [cast.operator], starts_on=dt.date(2026, 11, 30))
    oncall_services.create_override(
        actor=cast.admin,
        rotation=made,
        user=cast.admin,
        starts_at=utc(2026, 12, 2, 18, 0),
        ends_at=utc(2026, 12, 3, 6, 0),
        reason="swap",
    )
    team = cast.payments
    handoff = oncall.next_handoff(team, utc(2026, 12, 2, 12, 0))
    assert (handoff.at, handoff.user.username) == (utc(2026, 12, 2, 18, 0), "acme-admin")
    assert who(team, utc(2026, 12, 2, 18, 0)) == "acme-admin"
    assert who(team, utc(2026, 12, 3, 5, 59)) == "acme-admin"
    assert who(team, utc(2026, 12, 3, 6, 0)) == "acme-operator"
    assert oncall.next_handoff(team, utc(2026, 12, 2, 20, 0)).user.username == "acme-operator"


def test_a_weekend_layer_wins_on_its_days_only(cast):
    base = {
        "name": "weekdays",
        "users": [cast.operator],
        "starts_on": dt.date(2026, 11, 30),
        "rotation_days": 7,
        "handoff_time": dt.time(9, 0),
        "timezone": "Europe/Berlin",
        "weekdays": [],
    }
    weekend = {**base, "name": "weekend", "users": [cast.admin], "weekdays": [5, 6]}
    oncall_services.save_rotation(actor=SYSTEM, team=cast.payments, name="payments", layers=[base, weekend])
    team = cast.payments
    assert who(team, utc(2026, 12, 4, 22, 59)) == "acme-operator"  # Friday 23:59 Berlin
    assert who(team, utc(2026, 12, 4, 23, 0)) == "acme-admin"  # Saturday 00:00 Berlin
    assert who(team, utc(2026, 12, 6, 22, 59)) == "acme-admin"
    assert who(team, utc(2026, 12, 6, 23, 0)) == "acme-operator"  # Monday
    assert oncall.next_handoff(team, utc(2026, 12, 3, 12, 0)).at == utc(2026, 12, 4, 23, 0)


def test_the_team_page_shows_who_is_on_call_now_and_next(cast, client):
    from django.utils import timezone

    today = timezone.now().astimezone(UTC).date()
    rotation(cast.payments, [cast.operator, cast.admin], starts_on=today - dt.timedelta(days=1), days=1, zone="UTC")
    cast.make_job(cast.dev)
    client.login(username=cast.viewer.username, password=PASSWORD)
    page = client.get(reverse("team_detail", args=[cast.payments.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    now_user = oncall.who_is_on_call(cast.payments, timezone.now()).username
    other = {"acme-operator": "acme-admin", "acme-admin": "acme-operator"}[now_user]
    assert f'data-testid="oncall-now">{now_user}<' in html
    assert f"Next: <strong>{other}</strong>" in html
    assert page.context["job_count"] == 1
    assert {m["user"].username for m in page.context["members"]} >= {"acme-viewer", "acme-admin"}


# --- the API: admins manage, bad input is refused naming the field ----------------------------------


def _layer(users, **overrides):
    return {
        "name": "primary",
        "users": users,
        "starts_on": "2026-11-30",
        "rotation_days": 7,
        "handoff_time": "09:00",
        "timezone": "Europe/Berlin",
        **overrides,
    }


def _nothing_saved():
    assert not Rotation.objects.exists() and not EscalationPolicy.objects.exists()
    assert not Override.objects.exists() and not Silence.objects.exists() and not Route.objects.exists()
    assert not AuditEvent.objects.filter(action__in=[AuditAction.ONCALL_CHANGED, AuditAction.SILENCE_CREATED]).exists()


def test_an_admin_creates_a_rotation_policy_route_and_silence_each_audited(cast):
    api = client_for(cast.admin)
    made = api.post(
        "/api/v1/rotations/",
        {"team": cast.payments.pk, "name": "payments", "layers": [_layer([cast.operator.pk, cast.admin.pk])]},
        format="json",
    )
    assert made.status_code == 201, made.content
    assert made.json()["layers"][0]["users"] == ["acme-operator", "acme-admin"]
    assert "on_call_now" in made.json() and made.json()["next_handoff"]["at"].endswith("Z")
    policy = api.post(
        "/api/v1/escalation-policies/",
        {
            "team": cast.payments.pk,
            "name": "payments",
            "repeat": 1,
            "steps": [
                {"delay_minutes": 5},
                {"delay_minutes": 10, "notify_on_call": False, "users": [cast.approver.pk]},
            ],
        },
        format="json",
    )
    assert policy.status_code == 201, policy.content
    assert [s["users"] for s in policy.json()["steps"]] == [[], ["acme-approver"]]
    route = api.post(
        "/api/v1/escalation-routes/",
        {"team": cast.payments.pk, "policy": policy.json()["id"], "criticality": "critical"},
        format="json",
    )
    assert route.status_code == 201, route.content
    silence = api.post(
        "/api/v1/silences/",
        {"team": cast.payments.pk, "ends_at": "2030-01-01T00:00:00Z", "reason": "migration"},
        format="json",
    )
    assert silence.status_code == 201, silence.content
    assert silence.json()["active"] is True
    ended = api.post(f"/api/v1/silences/{silence.json()['id']}/end/")
    assert ended.status_code == 200 and ended.json()["active"] is False
    actions = list(AuditEvent.objects.filter(actor=cast.admin).order_by("seq").values_list("action", "data__kind"))
    assert actions[-5:] == [
        (AuditAction.ONCALL_CHANGED, "rotation"),
        (AuditAction.ONCALL_CHANGED, "escalation_policy"),
        (AuditAction.ONCALL_CHANGED, "route"),
        (AuditAction.SILENCE_CREATED, None),
        (AuditAction.SILENCE_ENDED, None),
    ]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/escalation-policies/", lambda c: {"team": c.payments.pk, "name": "p", "steps": []}, "steps"),
        (
            "/api/v1/escalation-policies/",
            lambda c: {"team": c.payments.pk, "name": "p", "steps": [{"notify_on_call": False}]},
            "steps",
        ),
        (
            "/api/v1/rotations/",
            lambda c: {
                "team": c.payments.pk,
                "name": "r",
                "layers": [_layer([c.operator.pk], timezone="Mars/Olympus")],
            },
            "layers",
        ),
        # Another tenant's user is never someone to page (and looks like a missing one).
        (
            "/api/v1/rotations/",
            lambda c: {"team": c.payments.pk, "name": "r", "layers": [_layer([c.globex_admin.pk])]},
            "layers",
        ),
        ("/api/v1/rotations/", lambda c: {"team": c.payments.pk, "name": "r", "layers": []}, "layers"),
        ("/api/v1/rotations/", lambda c: {"team": c.ops.pk, "name": "r", "layers": [_layer([c.operator.pk])]}, "team"),
        (
            "/api/v1/silences/",
            lambda c: {"team": c.payments.pk, "ends_at": "2020-01-01T00:00:00Z", "reason": "past"},
            "ends_at",
        ),
        ("/api/v1/silences/", lambda c: {"team": c.payments.pk, "ends_at": "2030-01-01T00:00:00Z"}, "reason"),
        (
            "/api/v1/escalation-routes/",
            lambda c: {"team": c.payments.pk, "policy": 999999},
            "policy",
        ),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_nothing_is_saved(cast, path, body, field):
    response = client_for(cast.admin).post(path, body(cast), format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    _nothing_saved()


def test_an_unknown_zone_names_the_layers_timezone(cast):
    body = {"team": cast.payments.pk, "name": "r", "layers": [_layer([cast.operator.pk], timezone="Mars/Olympus")]}
    response = client_for(cast.admin).post("/api/v1/rotations/", body, format="json")
    assert "Unknown time zone" in response.json()["layers"]["0"]["timezone"][0]


def test_an_override_ending_before_it_starts_is_refused(cast):
    made = rotation(cast.payments, [cast.operator])
    before = AuditEvent.objects.count()
    response = client_for(cast.admin).post(
        "/api/v1/rotation-overrides/",
        {
            "rotation": made.pk,
            "user": cast.admin.pk,
            "starts_at": "2026-12-03T06:00:00Z",
            "ends_at": "2026-12-02T18:00:00Z",
        },
        format="json",
    )
    assert response.status_code == 400 and "ends_at" in response.json()
    assert not Override.objects.exists() and AuditEvent.objects.count() == before


@pytest.mark.parametrize("role", ["viewer", "operator", "author", "approver"])
def test_lesser_roles_cannot_manage_on_call(cast, role):
    made = rotation(cast.payments, [cast.operator])
    api = client_for(getattr(cast, role))
    body = {"team": cast.payments.pk, "name": "p", "steps": [{"delay_minutes": 5}]}
    assert api.post("/api/v1/escalation-policies/", body, format="json").status_code == 403
    assert api.delete(f"/api/v1/rotations/{made.pk}/").status_code == 403
    assert api.get(f"/api/v1/rotations/{made.pk}/").status_code == 200
    assert Rotation.objects.filter(pk=made.pk).exists() and not EscalationPolicy.objects.exists()


def test_a_team_admin_manages_their_team_only_and_other_tenants_see_nothing(cast):
    made = rotation(cast.payments, [cast.operator])
    data_admin = get_user_model().objects.create_user("data-admin", password=PASSWORD)
    grant_role(data_admin, Role.TENANT_ADMIN, tenant=cast.acme, team=cast.data, actor=SYSTEM)
    api = client_for(data_admin)
    assert api.get(f"/api/v1/rotations/{made.pk}/").status_code == 404
    assert api.delete(f"/api/v1/rotations/{made.pk}/").status_code == 404
    ok = api.post(
        "/api/v1/rotations/", {"team": cast.data.pk, "name": "data", "layers": [_layer([data_admin.pk])]}, format="json"
    )
    assert ok.status_code == 201, ok.content
    # A tenant-wide policy needs a tenant-wide admin.
    wide = api.post(
        "/api/v1/escalation-policies/",
        {"tenant": cast.acme.pk, "name": "all", "steps": [{"delay_minutes": 5}]},
        format="json",
    )
    assert wide.status_code == 403
    globex = client_for(cast.globex_admin)
    assert globex.get("/api/v1/rotations/").json()["count"] == 0
    assert globex.get(f"/api/v1/rotations/{made.pk}/").status_code == 404
    assert globex.delete(f"/api/v1/rotations/{made.pk}/").status_code == 404
    assert Rotation.objects.filter(pk=made.pk).exists()
