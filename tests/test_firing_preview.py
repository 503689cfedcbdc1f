"""Previews show deferrals and skips with their reasons (issue 14), decided by jobs.firing with the
job's own tenant and environment only."""

from datetime import UTC, datetime, timedelta

from django.urls import reverse
from django.utils import timezone

from conftest import PASSWORD
from jobs.preview import compare_definitions, preview_definition

AFTER = "2026-06-01T00:00:00Z"


def login(client, user):
    assert client.login(username=user.get_username(), password=PASSWORD)
    return client


def test_the_api_says_which_runs_a_holiday_skips_and_keeps_its_old_fields(client, cast):
    cast.make_calendar("closed", dates=["2026-06-02"])
    job = cast.make_job(cast.dev, cron="0 9 * * *", timezone="Europe/Berlin", holiday_calendar="closed")
    login(client, cast.viewer)
    url = "/api/v1/schedule-preview/"
    entries = client.get(url, {"job": job.pk, "after": AFTER, "count": 3, "detail": "true"}).json()
    assert [(e["utc"], e["decision"], e["reason"], e["deferred_to"]) for e in entries] == [
        ("2026-06-01T07:00:00Z", "fire", "", None),
        ("2026-06-02T07:00:00Z", "skip", "Skipped: 2026-06-02 is a holiday in calendar 'closed'.", None),
        ("2026-06-03T07:00:00Z", "fire", "", None),
    ]
    assert {"utc", "local", "zone", "offset", "dst"} <= set(entries[0])
    assert entries[0]["concurrency"] == "concurrency=forbid: skipped if the previous run is still active"
    # Without detail: the same array of instants as before, skipped ones included.
    assert client.get(url, {"job": job.pk, "after": AFTER, "count": 3}).json() == [e["utc"] for e in entries]
    # A bare cron has no calendars or windows: every instant fires.
    bare = client.get(url, {"cron": "0 9 * * *", "tz": "Europe/Berlin", "after": AFTER, "detail": "1"}).json()
    assert {e["decision"] for e in bare} == {"fire"}


def test_another_tenants_calendar_and_windows_of_the_same_name_change_nothing(cast):
    cast.make_calendar("closed", tenant=cast.globex, dates=["2026-06-02"])
    cast.make_window(
        tenant=cast.globex,
        name="globex only",
        starts_at=datetime(2026, 6, 1, tzinfo=UTC),
        ends_at=datetime(2026, 6, 5, tzinfo=UTC),
    )
    cast.make_window(
        environment=cast.prod,
        name="prod only",
        starts_at=datetime(2026, 6, 1, tzinfo=UTC),
        ends_at=datetime(2026, 6, 5, tzinfo=UTC),
    )
    definition = cast.definition(cron="0 9 * * *", timezone="UTC", holiday_calendar="closed")
    entries = preview_definition(
        definition,
        tenant_id=cast.acme.pk,
        environment_id=cast.dev.pk,
        after=datetime(2026, 6, 1, tzinfo=UTC),
        count=3,
    )
    assert [e["decision"] for e in entries] == ["fire", "fire", "fire"]


def test_the_job_page_shows_a_deferral_with_its_reason(client, cast):
    now = timezone.now()
    end = (now + timedelta(days=2)).replace(microsecond=0)
    cast.make_window(environment=cast.dev, name="db upgrade", starts_at=now - timedelta(hours=1), ends_at=end)
    job = cast.make_job(cast.dev, cron="0 * * * *", timezone="UTC")
    html = login(client, cast.viewer).get(reverse("job_detail", args=[job.pk])).content.decode()
    assert "maintenance window &#x27;db upgrade&#x27;" in html
    assert 'data-decision="defer"' in html


def test_a_change_of_allowed_windows_alone_shows_the_runs_it_defers(cast):
    before = cast.definition(cron="0 * * * *", timezone="UTC")
    after = {**before, "windows": [{"cron": "0 22 * * *", "duration_minutes": 120}], "window_policy": "defer"}
    now = datetime(2026, 6, 1, 12, 30, tzinfo=UTC)
    result = compare_definitions(before, after, tenant_id=cast.acme.pk, environment_id=cast.dev.pk, now=now, count=2)
    assert result is not None
    row = result["rows"][0]
    assert row["before"]["decision"] == "fire"
    assert row["after"]["decision"] == "defer"
    assert row["after"]["reason"] == "Deferred to 2026-06-01T22:00:00Z: outside the job's allowed run windows."
    assert not row["same"]


def test_the_change_request_page_shows_the_reason_a_proposed_run_is_skipped(client, cast):
    now = timezone.now()
    cast.make_window(
        environment=cast.prod,
        name="quiet hours",
        starts_at=now - timedelta(hours=1),
        ends_at=now + timedelta(days=2),
        policy="skip",
    )
    change = cast.propose_job(definition=cast.definition(cron="0 * * * *", timezone="UTC"), justification="hourly")
    html = login(client, cast.approver).get(reverse("change_detail", args=[change.pk])).content.decode()
    assert "Skipped: inside maintenance window &#x27;quiet hours&#x27;" in html
