"""Maintenance windows, allowed run windows, holiday calendars and concurrency: every deferral and skip recorded."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from approvals.services import propose_config_change
from governance.services import AccessDenied
from jobs import scheduler
from jobs.definitions import clean_definition
from jobs.models import Job, MaintenanceWindow, Run, RunStatus


def hourly(cast, **overrides):
    job = cast.make_job(cast.dev, cron="0 * * * *", timezone="UTC", **overrides)
    slot = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    Job.objects.filter(pk=job.pk).update(next_fire_at=slot)
    job.refresh_from_db()
    return job, slot


def test_a_run_due_in_a_maintenance_window_is_deferred_to_its_end_and_then_queued(cast):
    job, slot = hourly(cast)
    end = slot + timedelta(minutes=45)
    cast.make_window(
        environment=cast.dev,
        name="db upgrade",
        starts_at=slot - timedelta(minutes=15),
        ends_at=end,
    )
    result = scheduler.tick(now=slot + timedelta(seconds=1))
    assert (result.created, result.deferred) == (0, 1)
    run = Run.objects.get(job=job)
    assert run.status == RunStatus.DEFERRED and run.deferred_until == end
    assert run.reason == "Deferred to 2026-06-01T12:45:00Z: maintenance window 'db upgrade'."
    assert scheduler.tick(now=end - timedelta(seconds=1)).promoted == 0
    assert scheduler.tick(now=end + timedelta(seconds=1)).promoted == 1
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.queued_at == end + timedelta(seconds=1)


def test_a_recurring_tenant_window_with_skip_policy_skips_the_run_with_the_reason(cast):
    job, slot = hourly(cast)
    cast.make_window(
        name="nightly backup",
        cron="30 13 * * *",
        timezone="Europe/Berlin",
        duration_minutes=60,
        policy="skip",
    )
    scheduler.tick(now=slot + timedelta(seconds=1))
    run = Run.objects.get(job=job)
    assert run.status == RunStatus.SKIPPED
    assert run.reason == "Skipped: inside maintenance window 'nightly backup' (until 2026-06-01T12:30:00Z)."


def test_back_to_back_windows_defer_to_the_end_of_the_last(cast):
    job, slot = hourly(cast)
    for i, (a, b) in enumerate([(-10, 20), (20, 50)]):
        cast.make_window(
            name=f"w{i}",
            starts_at=slot + timedelta(minutes=a),
            ends_at=slot + timedelta(minutes=b),
        )
    scheduler.tick(now=slot + timedelta(seconds=1))
    assert Run.objects.get(job=job).deferred_until == slot + timedelta(minutes=50)


def test_a_window_of_another_environment_or_tenant_changes_nothing(cast):
    job, slot = hourly(cast)
    cast.make_window(
        environment=cast.prod,
        name="prod only",
        starts_at=slot - timedelta(hours=1),
        ends_at=slot + timedelta(hours=1),
    )
    cast.make_window(
        tenant=cast.globex,
        name="globex",
        starts_at=slot - timedelta(hours=1),
        ends_at=slot + timedelta(hours=1),
    )
    assert scheduler.tick(now=slot + timedelta(seconds=1)).created == 1


def test_a_window_ending_before_it_starts_is_refused_naming_the_field_and_nothing_is_saved(cast):
    start = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    with pytest.raises(ValidationError) as info:
        cast.make_window(name="bad", starts_at=start, ends_at=start - timedelta(hours=1))
    assert list(info.value.message_dict) == ["ends_at"]
    assert (
        "ends (2026-06-01T11:00:00Z) before it starts (2026-06-01T12:00:00Z)" in info.value.message_dict["ends_at"][0]
    )
    with pytest.raises(ValidationError) as info:
        cast.make_window(name="bad", cron="0 25 * * *", duration_minutes=5)
    assert list(info.value.message_dict) == ["cron"]
    with pytest.raises(ValidationError) as info:
        cast.make_window(name="bad", cron="0 2 * * *", timezone="Nowhere")
    assert set(info.value.message_dict) == {"timezone", "duration_minutes"}
    assert not MaintenanceWindow.objects.exists()
    # The database refuses it too, whoever writes.
    with pytest.raises(IntegrityError):
        MaintenanceWindow.objects.create(tenant=cast.acme, name="raw", starts_at=start, ends_at=start)


def test_only_tenant_admins_change_windows(cast):
    start = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    window = {"name": "x", "starts_at": start, "ends_at": start + timedelta(hours=1)}
    for actor, tenant in [(cast.author, cast.acme), (cast.admin, cast.globex)]:
        with pytest.raises(AccessDenied):
            propose_config_change(
                actor=actor,
                kind="maintenance_window",
                action="create",
                tenant=tenant,
                definition=window,
                justification="x",
            )
    assert not MaintenanceWindow.objects.exists()


def test_a_slot_on_a_holiday_of_the_jobs_calendar_is_skipped(cast):
    cast.make_calendar("de-bank", dates=["2026-06-01"])
    job, slot = hourly(cast, holiday_calendar="de-bank")
    scheduler.tick(now=slot + timedelta(seconds=1))
    run = Run.objects.get(job=job)
    assert run.status == RunStatus.SKIPPED
    assert run.reason == "Skipped: 2026-06-01 is a holiday in calendar 'de-bank'."


def test_a_calendar_is_built_from_the_holidays_package(cast):
    calendar = cast.make_calendar("de", country="DE", years=[2026])
    assert "2026-12-25" in calendar.dates and "2026-10-03" in calendar.dates
    with pytest.raises(ValidationError) as info:
        cast.make_calendar("xx", country="XX", years=[2026])
    assert list(info.value.message_dict) == ["country"]


def test_a_job_may_reference_only_its_own_tenants_calendar(cast):
    cast.make_calendar("ops", tenant=cast.globex, dates=[])
    with pytest.raises(ValidationError) as info:
        clean_definition(
            cast.definition(holiday_calendar="ops"), tenant=cast.acme, team=cast.payments, environment=cast.dev
        )
    assert info.value.message_dict == {"holiday_calendar": ["No holiday calendar named 'ops' in this tenant."]}


def test_outside_the_allowed_windows_a_run_waits_for_the_next_one_or_is_skipped(cast):
    job, slot = hourly(cast, windows=[{"cron": "0 22 * * *", "duration_minutes": 120}])
    scheduler.tick(now=slot + timedelta(seconds=1))
    run = Run.objects.get(job=job)
    assert run.status == RunStatus.DEFERRED and run.deferred_until == datetime(2026, 6, 1, 22, 0, tzinfo=UTC)
    assert "outside the job's allowed run windows" in run.reason

    other, slot = hourly(
        cast,
        name="payments.ledger.strict",
        window_policy="skip",
        windows=[{"cron": "0 22 * * *", "duration_minutes": 120}],
    )
    scheduler.tick(now=slot + timedelta(seconds=1))
    assert Run.objects.get(job=other).status == RunStatus.SKIPPED


def test_bad_allowed_windows_are_refused_naming_the_field(cast):
    for windows, fragment in [
        ([{"cron": "0 22 * * *", "duration_minutes": 0}], "duration_minutes must be between"),
        ([{"cron": "0 99 * * *", "duration_minutes": 60}], "Bad hour"),
        ("nightly", "Must be a list"),
    ]:
        with pytest.raises(ValidationError) as info:
            clean_definition(
                cast.definition(windows=windows), tenant=cast.acme, team=cast.payments, environment=cast.dev
            )
        assert list(info.value.message_dict) == ["windows"] and fragment in info.value.message_dict["windows"][0]


def active_run(job, status=RunStatus.RUNNING):
    return Run.objects.create(
        job=job,
        tenant=job.tenant,
        scheduled_for=datetime(2026, 6, 1, 11, 0, tzinfo=UTC),
        status=status,
        job_version=1,
        definition={},
    )


def test_concurrency_forbid_skips_a_slot_while_a_run_is_active(cast):
    job, slot = hourly(cast, concurrency="forbid")
    busy = active_run(job)
    scheduler.tick(now=slot + timedelta(seconds=1))
    run = Run.objects.get(job=job, scheduled_for=slot)
    assert run.status == RunStatus.SKIPPED and f"#{busy.pk} still active" in run.reason


def test_concurrency_replace_cancels_the_active_run_and_queues_the_new_one(cast):
    job, slot = hourly(cast, concurrency="replace")
    busy = active_run(job)
    scheduler.tick(now=slot + timedelta(seconds=1))
    busy.refresh_from_db()
    assert busy.status == RunStatus.CANCELLED and "replaced by the run of slot 2026-06-01T12:00:00Z" in busy.reason
    assert Run.objects.get(job=job, scheduled_for=slot).status == RunStatus.QUEUED


def test_max_active_runs_skips_when_the_limit_is_reached(cast):
    job, slot = hourly(cast, max_active_runs=1, concurrency="allow", rationale="Two runs may overlap.")
    active_run(job, status=RunStatus.QUEUED)
    scheduler.tick(now=slot + timedelta(seconds=1))
    assert "at most 1" in Run.objects.get(job=job, scheduled_for=slot).reason
