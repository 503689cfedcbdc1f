"""The change-request API tells reviewers what the UI tells them: maintenance-window collisions,
freezes and non-standard jobs, in constant queries per list page."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.models import ChangeRequest, ChangeStatus
from approvals.services import withdraw_change
from jobs.models import MaintenanceWindow
from tests.api_support import client_for

LIST = "/api/v1/change-requests/"


def _propose(cast, environment=None, *, name="payments.ledger.reconcile", emergency=False, **overrides):
    return cast.propose_job(
        environment=environment or cast.prod,
        definition=cast.definition(name=name, **overrides),
        justification="needed",
        emergency=emergency,
    )


def _window(cast, tenant=None, environment=None, name="db patching"):
    now = timezone.now()
    return MaintenanceWindow.objects.create(
        tenant=tenant or cast.acme,
        environment=environment,
        name=name,
        starts_at=now,
        ends_at=now + timedelta(hours=1),
    )


def _kinds(payload) -> list[str]:
    return [w["kind"] for w in payload["warnings"]]


def test_a_schedule_colliding_with_a_maintenance_window_is_flagged_in_list_and_detail(cast):
    _window(cast, environment=cast.prod)
    change = _propose(cast)
    client = client_for(cast.approver)
    detail = client.get(f"{LIST}{change.pk}/").json()
    assert set(_kinds(detail)) == {"maintenance_window"}
    assert "db patching" in detail["warnings"][0]["message"] and "deferred to" in detail["warnings"][0]["message"]
    row = client.get(LIST).json()["results"][0]
    assert row["id"] == change.pk and row["warnings"] == detail["warnings"]


def test_windows_of_other_environments_and_tenants_do_not_warn(cast):
    _window(cast, environment=cast.staging)
    _window(cast, tenant=cast.globex, name="globex secret window")
    change = _propose(cast)
    assert client_for(cast.approver).get(f"{LIST}{change.pk}/").json()["warnings"] == []


def test_a_freeze_is_a_warning_that_says_what_happens(cast):
    cast.freeze(hours_to=4, reason="quarter close")
    normal = _propose(cast, cron="0 3 * * *", timezone="UTC")
    urgent = _propose(cast, name="payments.ledger.hotfix", cron="0 3 * * *", timezone="UTC", emergency=True)
    client = client_for(cast.approver)
    normal_warnings = client.get(f"{LIST}{normal.pk}/").json()["warnings"]
    urgent_warnings = client.get(f"{LIST}{urgent.pk}/").json()["warnings"]
    assert _kinds({"warnings": normal_warnings}) == ["freeze"]
    assert (
        "quarter close" in normal_warnings[0]["message"]
        and "waits until the freeze ends" in normal_warnings[0]["message"]
    )
    assert "review after the fact" in urgent_warnings[0]["message"]


def test_non_standard_jobs_are_flagged_with_their_rationale(cast):
    change = _propose(cast, cron="* * * * *", timezone="UTC", rationale="the queue must drain every minute")
    warnings = client_for(cast.approver).get(f"{LIST}{change.pk}/").json()["warnings"]
    assert _kinds({"warnings": warnings}) == ["nonstandard"]
    assert "more often than every 5 minutes" in warnings[0]["message"]
    assert "the queue must drain every minute" in warnings[0]["message"]


def test_closed_requests_carry_no_warnings(cast):
    _window(cast, environment=cast.prod)
    change = withdraw_change(_propose(cast), actor=cast.author, reason="")
    assert change.status == ChangeStatus.WITHDRAWN
    assert client_for(cast.author).get(f"{LIST}{change.pk}/").json()["warnings"] == []


def test_list_queries_do_not_grow_with_warned_rows(cast, django_assert_max_num_queries):
    _window(cast)
    _window(cast, environment=cast.prod, name="prod patching")
    client = client_for(cast.approver)

    def add(start, count):
        for i in range(start, start + count):
            ChangeRequest.objects.create(
                tenant=cast.acme,
                team=cast.payments,
                environment=cast.prod,
                action="create",
                proposed=cast.definition(name=f"payments.bulk.job-{i}"),
                author=cast.author,
                justification="bulk",
                status=ChangeStatus.SUBMITTED,
                required_approvals=2,
            )

    add(0, 3)
    with CaptureQueriesContext(connection) as small:
        response = client.get(LIST)
    assert all(row["warnings"] for row in response.json()["results"])
    add(3, 30)
    with django_assert_max_num_queries(len(small.captured_queries)):
        response = client.get(LIST)
    assert response.json()["count"] == 33


def test_a_freeze_at_the_apply_time_warns_and_both_ways_of_computing_agree(cast):
    from approvals.warnings import change_warnings, with_warning_facts

    now = timezone.now()
    cast.freeze(environment=cast.prod, hours_from=24, hours_to=48, reason="release weekend")
    _window(cast, environment=cast.prod)
    later = cast.propose_job(
        definition=cast.definition(name="payments.ledger.later"),
        justification="align with the release",
        apply_after=now + timedelta(days=1, hours=2),
    )
    now_change = _propose(cast, name="payments.ledger.now")
    plain = change_warnings(ChangeRequest.objects.all())
    annotated = change_warnings(with_warning_facts(ChangeRequest.objects.all()))
    assert plain == annotated
    assert "freeze" in [w["kind"] for w in plain[later.pk]]
    assert "freeze" not in [w["kind"] for w in plain[now_change.pk]]
