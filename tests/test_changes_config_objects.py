"""Maintenance windows and holiday calendars are governed: every change is a reviewed change request."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError

from approvals.models import ApprovalPolicy, ChangeRequest, ChangeStatus
from approvals.services import (
    ChangeError,
    approve_change,
    edit_change,
    propose_config_change,
    rebase_change,
    reject_change,
)
from governance.actors import SYSTEM
from governance.models import AuditAction, AuditEvent, Role
from governance.services import AccessDenied, grant_role
from jobs.models import HolidayCalendar, MaintenanceWindow, Pool
from tests.api_support import client_for, counts

START = datetime(2026, 6, 1, 22, 0, tzinfo=UTC)


def window(**overrides) -> dict:
    body = {"name": "db upgrade", "starts_at": "2026-06-01T22:00:00Z", "ends_at": "2026-06-02T02:00:00Z"}
    body.update(overrides)
    return body


def propose(cast, *, actor=None, kind="maintenance_window", action="create", **kwargs):
    kwargs.setdefault("justification", "Quarterly database upgrade, OPS-77.")
    if action == "create" and "tenant" not in kwargs and "environment" not in kwargs:
        kwargs["tenant"] = cast.acme
    if action != "delete" and "definition" not in kwargs:
        kwargs["definition"] = window()
    return propose_config_change(actor=actor or cast.admin, kind=kind, action=action, **kwargs)


def everything() -> dict:
    return {
        **counts(),
        "windows": MaintenanceWindow.objects.count(),
        "calendars": HolidayCalendar.objects.count(),
        "pools": Pool.objects.count(),
    }


# Propose, approve, apply


def test_a_prod_window_needs_two_approvals_and_then_is_live(cast):
    change = propose(cast, environment=cast.prod)
    assert change.status == ChangeStatus.SUBMITTED and change.required_approvals == 2
    assert change.target_kind == "maintenance_window" and change.team is None
    assert not MaintenanceWindow.objects.exists()
    change = approve_change(change, actor=cast.approver)
    assert change.status == ChangeStatus.SUBMITTED and not MaintenanceWindow.objects.exists()
    change = approve_change(change, actor=cast.approver2)
    assert change.status == ChangeStatus.APPLIED
    live = MaintenanceWindow.objects.get()
    assert (live.name, live.environment, live.starts_at) == ("db upgrade", cast.prod, START)
    assert change.target_id == live.pk and live.change_request_id == change.pk


def test_a_dev_window_applies_at_once_but_is_still_a_change_request(cast):
    change = propose(cast, environment=cast.dev)
    assert change.status == ChangeStatus.APPLIED and change.required_approvals == 0
    assert MaintenanceWindow.objects.get().change_request_id == change.pk


def test_a_tenant_wide_window_takes_the_strictest_policy_of_the_tenant(cast):
    change = propose(cast)
    assert change.environment is None and change.required_approvals == 2
    ApprovalPolicy.objects.create(
        tenant=cast.acme, environment=cast.staging, criticality="critical", required_approvals=3
    )
    assert propose(cast, definition=window(name="other")).required_approvals == 3
    # An environment's own window takes that environment's strictest rule (any criticality).
    assert propose(cast, environment=cast.staging, definition=window(name="s")).required_approvals == 3


def test_an_update_and_a_delete_of_a_window_go_through_review_and_history_names_the_requests(cast):
    live = cast.make_window(environment=cast.prod, **window())
    update = propose(cast, action="update", target=live, definition=window(policy="skip"))
    assert update.environment == cast.prod
    assert update.diff() == [{"field": "policy", "before": "defer", "after": "skip"}]
    for approver in (cast.approver, cast.approver2):
        update = approve_change(update, actor=approver)
    live.refresh_from_db()
    assert live.policy == "skip" and live.change_request_id == update.pk
    delete = propose(cast, action="delete", target=live)
    for approver in (cast.approver, cast.approver2):
        delete = approve_change(delete, actor=approver)
    assert delete.status == ChangeStatus.APPLIED and not MaintenanceWindow.objects.exists()
    history = list(MaintenanceWindow.history.filter(id=live.pk).order_by("history_date", "history_id"))
    assert [h.history_type for h in history] == ["+", "~", "-"]
    assert [h.change_request_id for h in history][1:] == [update.pk, delete.pk]
    assert history[1].history_change_reason.startswith(f"change request #{update.pk}")
    assert "approved by acme-approver" in history[1].history_change_reason
    assert history[2].history_user == cast.approver2


def test_applying_is_audited_with_the_request(cast):
    change = propose(cast, environment=cast.dev)
    event = AuditEvent.objects.get(action=AuditAction.CONFIG_CHANGED)
    assert event.data == {
        "kind": "maintenance_window",
        "operation": "create",
        "name": "db upgrade",
        "change_request": change.pk,
    }
    assert event.environment_id == cast.dev.pk
    assert AuditEvent.objects.filter(action=AuditAction.CHANGE_APPLIED, object_id=str(change.pk)).exists()


def test_a_calendar_is_created_from_dates_and_the_holidays_package_and_keeps_a_name_jobs_use(cast):
    change = propose(
        cast,
        kind="holiday_calendar",
        definition={"name": "de-bank", "dates": ["2026-06-01"], "country": "DE", "years": [2026]},
    )
    assert change.required_approvals == 2 and change.environment is None
    for approver in (cast.approver, cast.approver2):
        change = approve_change(change, actor=approver)
    calendar = HolidayCalendar.objects.get()
    assert "2026-06-01" in calendar.dates and "2026-12-25" in calendar.dates and calendar.country == "DE"
    cast.make_job(cast.dev, holiday_calendar="de-bank")
    with pytest.raises(ValidationError) as info:
        propose(cast, kind="holiday_calendar", action="update", target=calendar, definition={"name": "renamed"})
    assert "keeps its name" in info.value.message_dict["name"][0]
    update = propose(
        cast, kind="holiday_calendar", action="update", target=calendar, definition={"name": "de-bank", "dates": []}
    )
    assert update.diff()[0]["field"] == "dates"


def test_a_calendar_that_jobs_use_cannot_be_deleted(cast):
    calendar = cast.make_calendar("de-bank", dates=["2026-06-01"])
    cast.make_job(cast.dev, holiday_calendar="de-bank")
    before = everything()
    with pytest.raises(ValidationError) as info:
        propose(cast, kind="holiday_calendar", action="delete", target=calendar)
    assert "payments.ledger.reconcile" in info.value.message_dict["target"][0]
    assert everything() == before


# Who may do what


def test_nobody_approves_their_own_window_change_superusers_included(cast):
    grant_role(cast.superuser, Role.TENANT_ADMIN, tenant=cast.acme, actor=SYSTEM)
    change = propose(cast, actor=cast.superuser, environment=cast.prod)
    with pytest.raises(AccessDenied):
        approve_change(change, actor=cast.superuser)
    change.refresh_from_db()
    assert change.status == ChangeStatus.SUBMITTED and not change.reviews.exists()


def test_lesser_roles_may_not_propose_and_tenant_wide_objects_are_for_admins(cast):
    for actor in (cast.viewer, cast.operator, cast.approver):
        with pytest.raises(AccessDenied):
            propose(cast, actor=actor, environment=cast.prod)
    # An author of the whole environment proposes its windows, but not tenant-wide ones or calendars.
    assert propose(cast, actor=cast.author, environment=cast.prod).status == ChangeStatus.SUBMITTED
    with pytest.raises(AccessDenied):
        propose(cast, actor=cast.author)
    with pytest.raises(AccessDenied):
        propose(cast, actor=cast.author, kind="holiday_calendar", definition={"name": "x"})
    # An author narrowed to one team affects other teams' jobs with a window: refused.
    team_author = cast.author2
    team_author.scopeuserrole_set.all().delete()
    grant_role(team_author, Role.AUTHOR, tenant=cast.acme, team=cast.payments, actor=SYSTEM)
    with pytest.raises(AccessDenied):
        propose(cast, actor=team_author, environment=cast.prod)


def test_a_team_narrowed_approver_may_not_review_a_window_change(cast):
    from django.contrib.auth import get_user_model

    narrow = get_user_model().objects.create_user("narrow-approver")
    grant_role(narrow, Role.APPROVER, tenant=cast.acme, team=cast.payments, actor=SYSTEM)
    change = propose(cast, environment=cast.prod)
    with pytest.raises(AccessDenied):
        approve_change(change, actor=narrow)
    assert not change.reviews.exists()


def test_another_tenants_admin_cannot_propose_for_acme(cast):
    with pytest.raises(AccessDenied):
        propose(cast, actor=cast.globex_admin, environment=cast.prod)
    with pytest.raises(AccessDenied):
        propose(cast, actor=cast.globex_admin, tenant=cast.acme, kind="holiday_calendar", definition={"name": "x"})


# Bad input and races


@pytest.mark.parametrize(
    ("definition", "field"),
    [
        (window(ends_at="2026-06-01T21:00:00Z"), "ends_at"),
        (window(starts_at="yesterday"), "starts_at"),
        (window(starts_at="2026-06-01T22:00:00"), "starts_at"),
        ({"name": "w", "cron": "0 25 * * *", "duration_minutes": 5}, "cron"),
        ({"name": "w", "cron": "0 2 * * *", "timezone": "Mars/Olympus", "duration_minutes": 5}, "timezone"),
        ({"name": "w", "cron": "0 2 * * *", "duration_minutes": 0}, "duration_minutes"),
        (window(policy="ignore"), "policy"),
        (window(name=""), "name"),
        (window(colour="red"), "definition"),
    ],
)
def test_an_invalid_window_is_refused_naming_the_field_and_nothing_is_saved(cast, definition, field):
    before = everything()
    with pytest.raises(ValidationError) as info:
        propose(cast, environment=cast.prod, definition=definition)
    assert field in info.value.message_dict
    assert everything() == before


def test_an_invalid_calendar_is_refused_and_nothing_is_saved(cast):
    cast.make_calendar("taken")
    before = everything()
    for definition, field in [
        ({"name": "x", "dates": ["2026-13-01"]}, "dates"),
        ({"name": "x", "dates": "2026-12-25"}, "dates"),
        ({"name": "Not A Slug"}, "name"),
        ({"name": "taken"}, "name"),
        ({"name": "x", "country": "XX", "years": [2026]}, "country"),
        ({"name": "x", "years": [2026]}, "country"),
    ]:
        with pytest.raises(ValidationError) as info:
            propose(cast, kind="holiday_calendar", definition=definition)
        assert field in info.value.message_dict, definition
    with pytest.raises(ValidationError) as info:
        propose(cast, kind="holiday_calendar", environment=cast.prod, definition={"name": "y"})
    assert list(info.value.message_dict) == ["environment"]
    assert everything() == before


def test_a_stale_window_request_must_be_rebased_before_it_is_approved(cast):
    live = cast.make_window(environment=cast.prod, **window())
    mine = propose(cast, action="update", target=live, definition=window(policy="skip"))
    other = propose(cast, actor=cast.author, action="update", target=live, definition=window(name="db upgrade v2"))
    for approver in (cast.approver, cast.approver2):
        other = approve_change(other, actor=approver)
    assert other.status == ChangeStatus.APPLIED
    with pytest.raises(ChangeError) as info:
        approve_change(mine, actor=cast.approver)
    assert info.value.conflict and info.value.code == "stale"
    mine = rebase_change(mine, actor=cast.admin)
    assert mine.proposed["name"] == "db upgrade v2" and mine.proposed["policy"] == "skip"
    for approver in (cast.approver, cast.approver2):
        mine = approve_change(mine, actor=approver)
    live.refresh_from_db()
    assert (live.name, live.policy) == ("db upgrade v2", "skip")


def test_an_approval_for_a_deleted_window_is_refused(cast):
    live = cast.make_window(environment=cast.staging, **window())
    update = propose(cast, action="update", target=live, definition=window(policy="skip"))
    cast.make_config("maintenance_window", target=live, action="delete")
    with pytest.raises(ChangeError) as info:
        approve_change(update, actor=cast.approver)
    assert info.value.code == "deleted"


def test_editing_a_window_request_resets_approvals_and_validates(cast):
    change = propose(cast, environment=cast.prod)
    change = approve_change(change, actor=cast.approver)
    with pytest.raises(ValidationError):
        edit_change(change, actor=cast.admin, based_on_revision=1, definition=window(ends_at="2020-01-01T00:00:00Z"))
    change = edit_change(change, actor=cast.admin, based_on_revision=1, definition=window(policy="skip"))
    assert change.revision == 2
    change = approve_change(change, actor=cast.approver2)
    assert change.status == ChangeStatus.SUBMITTED


def test_a_freeze_holds_an_approved_tenant_wide_change(cast):
    cast.freeze(environment=cast.staging, hours_to=1, reason="release")
    change = propose(cast)
    for approver in (cast.approver, cast.approver2):
        change = approve_change(change, actor=approver)
    assert change.status == ChangeStatus.APPROVED and not MaintenanceWindow.objects.exists()


def test_a_rejected_window_change_changes_nothing(cast):
    change = reject_change(propose(cast, environment=cast.prod), actor=cast.approver, comment="wrong night")
    assert change.status == ChangeStatus.REJECTED and not MaintenanceWindow.objects.exists()


# REST API


def test_the_api_proposes_a_window_and_lists_it_once_live(cast):
    body = {
        "target_kind": "maintenance_window",
        "action": "create",
        "environment": cast.prod.pk,
        "definition": window(),
        "justification": "Upgrade.",
    }
    response = client_for(cast.admin).post("/api/v1/change-requests/", body, format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert (data["target_kind"], data["required_approvals"], data["environment"]["slug"]) == (
        "maintenance_window",
        2,
        "prod",
    )
    assert [row["field"] for row in data["diff"]][:3] == ["name", "starts_at", "ends_at"]
    for approver in (cast.approver, cast.approver2):
        assert (
            client_for(approver)
            .post(f"/api/v1/change-requests/{data['id']}/approve/", {"revision": 1}, format="json")
            .status_code
            == 200
        )
    listed = client_for(cast.viewer).get("/api/v1/maintenance-windows/").json()["results"]
    assert [(w["name"], w["environment"]["slug"], w["change_request_id"]) for w in listed] == [
        ("db upgrade", "prod", data["id"])
    ]
    detail = client_for(cast.viewer).get(f"/api/v1/change-requests/{data['id']}/").json()
    assert detail["links"]["target"].endswith(f"/api/v1/maintenance-windows/{listed[0]['id']}/")
    history = client_for(cast.viewer).get(f"/api/v1/maintenance-windows/{listed[0]['id']}/history/").json()
    assert history["results"][0]["change_request_id"] == data["id"]


def test_the_api_updates_a_calendar_with_only_the_changed_fields(cast):
    calendar = cast.make_calendar("de-bank", dates=["2026-06-01"], country="DE")
    body = {
        "target_kind": "holiday_calendar",
        "action": "update",
        "target": calendar.pk,
        "definition": {"dates": ["2026-06-01", "2026-12-24"]},
        "justification": "Christmas Eve.",
    }
    response = client_for(cast.admin).post("/api/v1/change-requests/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["diff"] == [
        {"field": "dates", "before": ["2026-06-01"], "after": ["2026-06-01", "2026-12-24"]}
    ]
    body = {
        "target_kind": "holiday_calendar",
        "action": "create",
        "target_tenant": cast.acme.pk,
        "definition": {"name": "us", "dates": ["2026-07-04"]},
        "justification": "US holidays.",
    }
    assert client_for(cast.admin).post("/api/v1/change-requests/", body, format="json").status_code == 201


def test_the_api_answers_400_with_field_errors_and_saves_nothing(cast):
    before = everything()
    client = client_for(cast.admin)
    bad = {
        "target_kind": "maintenance_window",
        "action": "create",
        "environment": cast.prod.pk,
        "definition": window(ends_at="2026-06-01T21:00:00Z"),
        "justification": "x",
    }
    response = client.post("/api/v1/change-requests/", bad, format="json")
    assert response.status_code == 400 and "ends_at" in response.json()
    response = client.post("/api/v1/change-requests/", {**bad, "action": "update"}, format="json")
    assert response.status_code == 400 and set(response.json()) == {"target", "environment"}
    response = client.post("/api/v1/change-requests/", {**bad, "team": cast.payments.pk}, format="json")
    assert response.status_code == 400 and "team" in response.json()
    response = client.post(
        "/api/v1/change-requests/",
        {**bad, "environment": None, "target_kind": "holiday_calendar", "definition": {"name": "x"}},
        format="json",
    )
    assert response.status_code == 400 and "target_tenant" in response.json()
    assert everything() == before


def test_the_api_answers_403_to_a_lesser_role_and_409_to_a_stale_approval(cast):
    body = {
        "target_kind": "maintenance_window",
        "action": "create",
        "environment": cast.prod.pk,
        "definition": window(),
        "justification": "x",
    }
    response = client_for(cast.operator).post("/api/v1/change-requests/", body, format="json")
    assert response.status_code == 403
    live = cast.make_window(environment=cast.prod, **window())
    stale = propose(cast, action="update", target=live, definition=window(policy="skip"))
    cast.make_config("maintenance_window", target=live, name="renamed")
    response = client_for(cast.approver).post(
        f"/api/v1/change-requests/{stale.pk}/approve/", {"revision": 1}, format="json"
    )
    assert response.status_code == 409 and "rebase" in response.json()["detail"]


def test_another_tenants_windows_and_calendars_answer_404(cast):
    window_ = cast.make_window(environment=cast.prod, **window())
    calendar = cast.make_calendar("de-bank")
    outsider = client_for(cast.globex_admin)
    assert outsider.get(f"/api/v1/maintenance-windows/{window_.pk}/").status_code == 404
    assert outsider.get(f"/api/v1/holiday-calendars/{calendar.pk}/").status_code == 404
    assert outsider.get(f"/api/v1/maintenance-windows/{window_.pk}/history/").status_code == 404
    assert outsider.get("/api/v1/maintenance-windows/").json()["results"] == []
    assert outsider.get("/api/v1/holiday-calendars/").json()["results"] == []
    change = ChangeRequest.objects.filter(target_kind="maintenance_window").first()
    assert outsider.get(f"/api/v1/change-requests/{change.pk}/").status_code == 404
    # Naming acme's window as a target is the same answer as a missing one.
    body = {"target_kind": "maintenance_window", "action": "delete", "target": window_.pk, "justification": "x"}
    response = outsider.post("/api/v1/change-requests/", body, format="json")
    assert response.status_code == 400 and response.json()["target"] == [f"No maintenance window with id {window_.pk}."]
    assert MaintenanceWindow.objects.filter(pk=window_.pk).exists()


def test_environment_narrowed_viewers_see_tenant_wide_and_their_environments_windows(cast):
    from django.contrib.auth import get_user_model

    dev_viewer = get_user_model().objects.create_user("dev-viewer")
    grant_role(dev_viewer, Role.VIEWER, tenant=cast.acme, environment=cast.dev, actor=SYSTEM)
    cast.make_window(environment=cast.prod, **window(name="prod"))
    cast.make_window(environment=cast.dev, **window(name="dev"))
    cast.make_window(**window(name="everywhere"))
    names = [w["name"] for w in client_for(dev_viewer).get("/api/v1/maintenance-windows/").json()["results"]]
    assert names == ["dev", "everywhere"]


def test_the_window_list_runs_a_constant_number_of_queries(cast, django_assert_max_num_queries):
    client = client_for(cast.viewer)
    cast.make_window(environment=cast.prod, **window(name="a"))
    with django_assert_max_num_queries(12) as first:
        client.get("/api/v1/maintenance-windows/")
    for i in range(5):
        cast.make_window(environment=cast.dev, **window(name=f"w{i}"))
    with django_assert_max_num_queries(len(first.captured_queries)):
        assert len(client.get("/api/v1/maintenance-windows/").json()["results"]) == 6


# Pools


def test_a_prod_pool_needs_two_approvals_and_its_history_names_the_request(cast):
    change = propose(
        cast, kind="pool", environment=cast.prod, definition={"name": "batch", "slots": 4, "reserved_critical_slots": 1}
    )
    assert change.required_approvals == 2 and not Pool.objects.exists()
    for approver in (cast.approver, cast.approver2):
        change = approve_change(change, actor=approver)
    pool = Pool.objects.get()
    assert (pool.environment, pool.slots, pool.reserved_critical_slots) == (cast.prod, 4, 1)
    update = propose(cast, kind="pool", action="update", target=pool, definition={**change.proposed, "slots": 6})
    assert update.diff() == [{"field": "slots", "before": 4, "after": 6}]
    for approver in (cast.approver, cast.approver2):
        update = approve_change(update, actor=approver)
    record = pool.history.order_by("-history_date", "-history_id").first()
    assert record.slots == 6 and record.change_request_id == update.pk
    assert AuditEvent.objects.filter(action=AuditAction.CONFIG_CHANGED, data__kind="pool").count() == 2


def test_a_pool_belongs_to_one_environment(cast):
    with pytest.raises(ValidationError) as info:
        propose(cast, kind="pool", definition={"name": "batch", "slots": 1})
    assert list(info.value.message_dict) == ["environment"]


def test_a_pool_with_negative_slots_answers_400_and_nothing_is_saved(cast):
    before = everything()
    for definition, field in [
        ({"name": "batch", "slots": -1}, "slots"),
        ({"name": "batch", "slots": 2, "reserved_critical_slots": 3}, "reserved_critical_slots"),
        ({"name": "Batch!", "slots": 2}, "name"),
    ]:
        body = {
            "target_kind": "pool",
            "action": "create",
            "environment": cast.prod.pk,
            "definition": definition,
            "justification": "x",
        }
        response = client_for(cast.admin).post("/api/v1/change-requests/", body, format="json")
        assert response.status_code == 400 and field in response.json(), response.json()
    assert everything() == before


def test_a_pool_that_jobs_use_is_neither_renamed_nor_deleted(cast):
    pool = cast.make_pool(cast.dev, "batch")
    cast.make_job(cast.dev, pool="batch")
    with pytest.raises(ValidationError) as info:
        propose(cast, kind="pool", action="update", target=pool, definition={"name": "other", "slots": 2})
    assert "keeps its name" in info.value.message_dict["name"][0]
    with pytest.raises(ValidationError) as info:
        propose(cast, kind="pool", action="delete", target=pool)
    assert "payments.ledger.reconcile" in info.value.message_dict["target"][0]
    assert Pool.objects.filter(pk=pool.pk).exists()


def test_another_tenants_pools_answer_404_and_a_viewer_sees_the_pools_of_the_tenant(cast):
    pool = cast.make_pool(cast.prod)
    outsider = client_for(cast.globex_admin)
    assert outsider.get(f"/api/v1/pools/{pool.pk}/").status_code == 404
    assert outsider.get("/api/v1/pools/").json()["results"] == []
    listed = client_for(cast.viewer).get("/api/v1/pools/").json()["results"]
    assert [(p["name"], p["environment"]["slug"], p["slots"]) for p in listed] == [("batch", "prod", 2)]
    body = {
        "target_kind": "pool",
        "action": "update",
        "target": pool.pk,
        "definition": {"slots": 9},
        "justification": "x",
    }
    response = outsider.post("/api/v1/change-requests/", body, format="json")
    assert response.status_code == 400 and "target" in response.json()
    response = client_for(cast.operator).post("/api/v1/change-requests/", body, format="json")
    assert response.status_code == 403
    pool.refresh_from_db()
    assert pool.slots == 2
