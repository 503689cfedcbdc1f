"""The alert-rule engine: each kind fires exactly when its condition has held for the rule's `for`,
never before, clears when it stops, with a deterministic clock (``now`` is passed in)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.models import HolidayCalendar, Job, Run, RunStatus
from monitoring.models import AlertRule, DurationSamples, RuleState
from monitoring.rule_step import on_run_finished
from monitoring.rules import evaluate

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # a Monday
SECOND = timedelta(seconds=1)


def make_job(cast, name="nightly", criticality="medium", tenant=None, **fields):
    globex = tenant is cast.globex
    return Job.objects.create(
        tenant=cast.globex if globex else cast.acme,
        team=cast.ops if globex else cast.payments,
        environment=cast.globex_prod if globex else cast.prod,
        **cast.definition(name=f"{'ops' if globex else 'payments'}.batch.{name}", criticality=criticality),
        **fields,
    )


def make_rule(job=None, kind="run_failed", *, scope="job", team=None, tag="", for_seconds=0, enabled=True, **params):
    tenant = job.tenant if job is not None else team.tenant if team is not None else params.pop("tenant")
    return AlertRule.objects.create(
        tenant=tenant,
        name=f"{kind.replace('_', '-')}-{AlertRule.objects.count()}",
        scope=scope,
        job=job if scope == "job" else None,
        team=team if scope == "team" else None,
        tag=tag,
        kind=kind,
        severity="high",
        for_seconds=for_seconds,
        enabled=enabled,
        params=params,
    )


def make_run(job, status, *, scheduled_for=T0, started=None, finished=None, **fields):
    return Run.objects.create(
        job=job,
        tenant_id=job.tenant_id,
        status=status,
        scheduled_for=scheduled_for,
        started_at=started,
        finished_at=finished,
        job_version=1,
        definition={},
        **fields,
    )


def fingerprints(result):
    return [s.fingerprint for s in result.signals]


# --- run_failed ---------------------------------------------------------------------------------


def test_run_failed_fires_once_on_the_failed_run_and_clears_when_a_run_succeeds(cast):
    job = make_job(cast)
    rule = make_rule(job)
    assert evaluate(T0).signals == []
    make_run(job, RunStatus.QUEUED, attempt=1, next_attempt_at=T0 + 60 * SECOND)  # retrying: not yet failed
    assert evaluate(T0 + SECOND).signals == []
    failed = make_run(job, RunStatus.FAILED, scheduled_for=T0 + SECOND, started=T0, finished=T0 + 5 * SECOND)
    result = evaluate(T0 + 10 * SECOND)
    assert fingerprints(result) == [f"rule:{rule.pk}:job:{job.pk}"]
    signal = result.signals[0]
    assert (signal.kind, signal.severity, signal.run_id, signal.rule_id) == ("run_failed", "high", failed.pk, rule.pk)
    assert evaluate(T0 + 20 * SECOND).signals == []  # fired once, not every cycle
    make_run(job, RunStatus.SUCCEEDED, scheduled_for=T0 + 60 * SECOND, started=T0, finished=T0 + 70 * SECOND)
    result = evaluate(T0 + 80 * SECOND)
    assert result.signals == [] and [c.fingerprint for c in result.clears] == [f"rule:{rule.pk}:job:{job.pk}"]
    assert not RuleState.objects.exists()


def test_a_failed_run_alerts_at_once_from_the_run_finished_listener(cast):
    job = make_job(cast, criticality="critical")
    failed = make_run(job, RunStatus.FAILED, started=T0, finished=T0 + SECOND)
    result = on_run_finished(failed)  # incidents are another part: their errors are logged, not raised
    assert result is not None and fingerprints(result) == [f"default:run_failed:job:{job.pk}"]
    assert result.signals[0].severity == "critical"
    assert evaluate(T0 + 60 * SECOND).signals == []  # the cycle does not fire it again


def test_the_debounce_waits_for_the_condition_to_hold_for_seconds(cast):
    job = make_job(cast)
    rule = make_rule(job, for_seconds=300)
    make_run(job, RunStatus.FAILED, started=T0, finished=T0)
    assert evaluate(T0 + 299 * SECOND).signals == []
    assert fingerprints(evaluate(T0 + 300 * SECOND)) == [f"rule:{rule.pk}:job:{job.pk}"]


def test_a_failure_that_recovers_within_the_debounce_never_fires_nor_clears(cast):
    job = make_job(cast)
    make_rule(job, for_seconds=300)
    make_run(job, RunStatus.FAILED, started=T0, finished=T0)
    assert evaluate(T0 + 100 * SECOND).signals == []
    make_run(job, RunStatus.SUCCEEDED, scheduled_for=T0 + 60 * SECOND, started=T0, finished=T0 + 120 * SECOND)
    result = evaluate(T0 + 400 * SECOND)
    assert result.signals == [] and result.clears == []


# --- late_start ---------------------------------------------------------------------------------


def test_late_start_fires_after_the_grace_and_clears_when_the_run_starts(cast):
    job = make_job(cast)
    rule = make_rule(job, "late_start", grace_seconds=600)
    run = make_run(job, RunStatus.QUEUED, scheduled_for=T0)
    assert evaluate(T0 + 599 * SECOND).signals == []
    result = evaluate(T0 + 600 * SECOND)
    assert fingerprints(result) == [f"rule:{rule.pk}:job:{job.pk}"] and result.signals[0].run_id == run.pk
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, started_at=T0 + 700 * SECOND)
    assert [c.fingerprint for c in evaluate(T0 + 701 * SECOND).clears] == [f"rule:{rule.pk}:job:{job.pk}"]


def test_late_start_sees_a_slot_the_scheduler_never_fired_and_ignores_a_paused_job(cast):
    job = make_job(cast, next_fire_at=T0)
    make_rule(job, "late_start", grace_seconds=60)
    assert evaluate(T0 + 59 * SECOND).signals == []
    assert len(evaluate(T0 + 60 * SECOND).signals) == 1
    paused = make_job(cast, "paused", next_fire_at=T0, status="paused")
    make_rule(paused, "late_start", grace_seconds=60)
    assert evaluate(T0 + 3600 * SECOND).signals == []


# --- long_running -------------------------------------------------------------------------------


def test_long_running_with_an_absolute_limit(cast):
    job = make_job(cast)
    rule = make_rule(job, "long_running", seconds=3600)
    make_run(job, RunStatus.RUNNING, started=T0)
    assert evaluate(T0 + 3599 * SECOND).signals == []
    assert fingerprints(evaluate(T0 + 3600 * SECOND)) == [f"rule:{rule.pk}:job:{job.pk}"]


def test_long_running_at_k_times_p95_of_the_last_successful_runs(cast):
    job = make_job(cast)
    make_rule(job, "long_running", k=2.0, samples=10, min_samples=5)
    # Newest first; the 11th sample is older than the 10 the rule reads.
    DurationSamples.objects.create(job=job, seconds=[100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 99999])
    make_run(job, RunStatus.RUNNING, started=T0)
    assert evaluate(T0 + 1999 * SECOND).signals == []  # p95 = 1000 s, 2 x p95 = 2000 s
    result = evaluate(T0 + 2000 * SECOND)
    assert len(result.signals) == 1 and result.signals[0].details["limit_seconds"] == 2000


def test_long_running_needs_the_minimum_number_of_samples(cast):
    job = make_job(cast)
    make_rule(job, "long_running", k=2.0, samples=10, min_samples=5)
    DurationSamples.objects.create(job=job, seconds=[10, 10, 10, 10])
    make_run(job, RunStatus.RUNNING, started=T0)
    assert evaluate(T0 + 86400 * SECOND).signals == []


def test_a_successful_run_records_its_duration_for_the_percentiles(cast):
    """For the jobs whose rules read durations: critical and high ones (the defaults) and every job
    of a tenant with rules; a medium job of a tenant without rules costs its worker nothing."""
    quiet = make_job(cast, name="quiet")
    on_run_finished(
        make_run(quiet, RunStatus.SUCCEEDED, scheduled_for=T0, started=T0, finished=T0 + timedelta(minutes=1))
    )
    assert not DurationSamples.objects.filter(job=quiet).exists()
    job = make_job(cast, criticality="high")
    for minutes in (10, 20):
        run = make_run(
            job,
            RunStatus.SUCCEEDED,
            scheduled_for=T0 + timedelta(hours=minutes),
            started=T0 + timedelta(hours=minutes),
            finished=T0 + timedelta(hours=minutes, minutes=minutes),
        )
        on_run_finished(run)
    assert DurationSamples.objects.get(job=job).seconds == [1200.0, 600.0]


# --- failure_rate -------------------------------------------------------------------------------


def test_failure_rate_over_the_window_with_a_minimum_of_runs_and_a_debounce(cast):
    job = make_job(cast)
    rule = make_rule(job, "failure_rate", threshold=0.5, window_seconds=3600, min_runs=4, for_seconds=120)
    for i, status in enumerate([RunStatus.FAILED, RunStatus.SUCCEEDED, RunStatus.FAILED]):
        at = T0 + i * 60 * SECOND
        make_run(job, status, scheduled_for=at, started=at, finished=at)
    assert evaluate(T0 + 600 * SECOND).signals == []  # 3 runs: below min_runs
    make_run(job, RunStatus.SUCCEEDED, scheduled_for=T0 + 400 * SECOND, started=T0, finished=T0 + 400 * SECOND)
    assert evaluate(T0 + 601 * SECOND).signals == []  # 2 of 4 failed: holds, debounce starts
    assert evaluate(T0 + 720 * SECOND).signals == []
    assert fingerprints(evaluate(T0 + 721 * SECOND)) == [f"rule:{rule.pk}:job:{job.pk}"]
    # An hour later the failures left the window.
    assert [c.fingerprint for c in evaluate(T0 + 3700 * SECOND).clears] == [f"rule:{rule.pk}:job:{job.pk}"]


# --- deadlines ----------------------------------------------------------------------------------


BERLIN_6 = {"time": "06:00", "timezone": "Europe/Berlin", "days": "business"}


def test_deadline_missed_fires_at_the_local_deadline_on_a_business_day(cast):
    job = make_job(cast)
    rule = make_rule(job, "deadline_missed", **BERLIN_6)
    monday_deadline = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)  # 06:00 CEST
    friday = datetime(2026, 5, 29, 3, 0, tzinfo=UTC)  # met Friday's deadline
    make_run(job, RunStatus.SUCCEEDED, scheduled_for=friday, started=friday, finished=friday)
    assert evaluate(monday_deadline - SECOND).signals == []
    result = evaluate(monday_deadline)
    assert fingerprints(result) == [f"rule:{rule.pk}:job:{job.pk}"]
    # It finished late: the deadline is no longer open.
    late = monday_deadline + timedelta(minutes=30)
    make_run(job, RunStatus.SUCCEEDED, scheduled_for=late, started=late, finished=late)
    assert len(evaluate(late + SECOND).clears) == 1


def test_a_run_that_finished_before_the_deadline_meets_it(cast):
    job = make_job(cast)
    make_rule(job, "deadline_missed", **BERLIN_6)
    done = datetime(2026, 6, 1, 3, 30, tzinfo=UTC)
    make_run(job, RunStatus.SUCCEEDED, scheduled_for=done, started=done, finished=done)
    assert evaluate(datetime(2026, 6, 1, 4, 0, tzinfo=UTC)).signals == []
    # Yesterday's success does not meet tomorrow's deadline.
    assert len(evaluate(datetime(2026, 6, 2, 4, 0, tzinfo=UTC)).signals) == 1


def test_no_deadline_on_weekends_nor_on_the_jobs_holidays(cast):
    HolidayCalendar.objects.create(tenant=cast.acme, name="de", dates=["2026-06-01"])
    job = make_job(cast, holiday_calendar="de")
    make_rule(job, "deadline_missed", **BERLIN_6)
    assert evaluate(datetime(2026, 5, 30, 12, 0, tzinfo=UTC)).signals[0].details["deadline"] == "2026-05-29 04:00:00Z"
    RuleState.objects.all().delete()
    # Saturday, Sunday and the Monday holiday have no deadline: the last one is Friday's.
    for day in (30, 31):
        assert evaluate(datetime(2026, 5, day, 12, 0, tzinfo=UTC)).signals[0].details["deadline"] == (
            "2026-05-29 04:00:00Z"
        )
        RuleState.objects.all().delete()
    friday_done = datetime(2026, 5, 29, 3, 0, tzinfo=UTC)
    make_run(job, RunStatus.SUCCEEDED, scheduled_for=friday_done, started=friday_done, finished=friday_done)
    assert evaluate(datetime(2026, 6, 1, 12, 0, tzinfo=UTC)).signals == []  # Monday is a holiday
    assert len(evaluate(datetime(2026, 6, 2, 4, 0, tzinfo=UTC)).signals) == 1  # Tuesday is not


@pytest.mark.parametrize(
    ("day", "deadline_utc", "previous_utc"),
    [
        # Spring forward (Sunday 29 March 2026): 06:00 is CEST (+2) that morning, CET (+1) the day before.
        ((2026, 3, 29), (2026, 3, 29, 4, 0), (2026, 3, 28, 5, 0)),
        # Fall back (Sunday 25 October 2026): 06:00 is CET (+1) that morning, CEST (+2) the day before.
        ((2026, 10, 25), (2026, 10, 25, 5, 0), (2026, 10, 24, 4, 0)),
    ],
)
def test_the_deadline_follows_berlin_wall_clock_on_the_dst_switch_days(cast, day, deadline_utc, previous_utc):
    job = make_job(cast)
    make_rule(job, "deadline_missed", time="06:00", timezone="Europe/Berlin", days="daily")
    deadline = datetime(*deadline_utc, tzinfo=UTC)
    previous = datetime(*previous_utc, tzinfo=UTC)
    # A success just after the previous day's deadline counts for this one; one just before does not.
    make_run(job, RunStatus.SUCCEEDED, scheduled_for=previous, started=previous, finished=previous)
    assert len(evaluate(deadline).signals) == 1
    RuleState.objects.all().delete()
    after = previous + SECOND
    make_run(job, RunStatus.SUCCEEDED, scheduled_for=after, started=after, finished=after)
    assert evaluate(deadline).signals == []
    Run.objects.all().delete()
    met = previous - timedelta(hours=1)  # the previous day's deadline was met
    make_run(job, RunStatus.SUCCEEDED, scheduled_for=met, started=met, finished=met)
    assert evaluate(deadline - SECOND).signals == []  # not one second early (nor an hour: a fixed offset would be)
    assert evaluate(deadline).signals[0].details["deadline"] == deadline.strftime("%Y-%m-%d %H:%M:%SZ")


def test_a_deadline_in_the_skipped_hour_counts_from_the_same_instant_an_hour_later(cast):
    job = make_job(cast)
    make_rule(job, "deadline_missed", time="02:30", timezone="Europe/Berlin", days="daily")
    skipped = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 02:30 CET never happens: 03:30 CEST
    assert evaluate(skipped - SECOND).signals[0].details["deadline"] == "2026-03-28 01:30:00Z"
    RuleState.objects.all().delete()
    assert evaluate(skipped).signals[0].details["deadline"] == "2026-03-29 01:30:00Z"


def test_deadline_predicted_from_the_start_and_the_p90_of_successful_runs(cast):
    slow, fast = make_job(cast, "slow"), make_job(cast, "fast")
    rule = make_rule(slow, "deadline_predicted", samples=10, min_samples=5, **BERLIN_6)
    make_rule(fast, "deadline_predicted", samples=10, min_samples=5, **BERLIN_6)
    DurationSamples.objects.create(job=slow, seconds=[5400] * 10)  # 90 min
    DurationSamples.objects.create(job=fast, seconds=[1800] * 10)  # 30 min
    start = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)  # 05:00 CEST; deadline 06:00 CEST
    assert evaluate(start).signals == []  # nothing running yet
    for job in (slow, fast):
        make_run(job, RunStatus.RUNNING, scheduled_for=start, started=start)
    result = evaluate(start + SECOND)
    assert fingerprints(result) == [f"rule:{rule.pk}:job:{slow.pk}"]
    assert result.signals[0].details["predicted"] == "2026-06-01 04:30:00Z"


# --- heartbeat_silence --------------------------------------------------------------------------


def test_heartbeat_silence_after_the_last_sign_of_life(cast):
    job = make_job(cast)
    rule = make_rule(job, "heartbeat_silence", seconds=600)
    make_run(job, RunStatus.RUNNING, started=T0 - timedelta(hours=1), heartbeat_at=T0)
    assert evaluate(T0 + 599 * SECOND).signals == []
    assert fingerprints(evaluate(T0 + 600 * SECOND)) == [f"rule:{rule.pk}:job:{job.pk}"]
    Run.objects.update(heartbeat_at=T0 + 650 * SECOND)
    assert len(evaluate(T0 + 651 * SECOND).clears) == 1


# --- defaults and scopes ------------------------------------------------------------------------


def test_a_new_critical_job_is_covered_by_the_defaults_and_a_medium_one_is_not(cast):
    critical, medium = make_job(cast, "critical", criticality="critical"), make_job(cast, "medium")
    for job in (critical, medium):
        make_run(job, RunStatus.FAILED, started=T0, finished=T0)
    result = evaluate(T0 + SECOND)
    assert fingerprints(result) == [f"default:run_failed:job:{critical.pk}"]
    assert result.signals[0].severity == "critical" and result.signals[0].details["default"] is True


def test_the_critical_defaults_include_late_start_and_three_times_p95(cast):
    job = make_job(cast, criticality="critical", next_fire_at=T0)
    DurationSamples.objects.create(job=job, seconds=[100] * 10)
    make_run(job, RunStatus.RUNNING, scheduled_for=T0 - timedelta(hours=1), started=T0 - 299 * SECOND)
    assert evaluate(T0).signals == []
    kinds = {s.kind for s in evaluate(T0 + 900 * SECOND).signals}
    assert kinds == {"late_start", "long_running"}


def test_an_explicit_rule_replaces_the_default_and_a_disabled_one_opts_out(cast):
    covered, opted_out = make_job(cast, "covered", criticality="critical"), make_job(cast, "out", criticality="high")
    rule = make_rule(covered, for_seconds=0)
    make_rule(opted_out, enabled=False)
    for job in (covered, opted_out):
        make_run(job, RunStatus.FAILED, started=T0, finished=T0)
    assert fingerprints(evaluate(T0 + SECOND)) == [f"rule:{rule.pk}:job:{covered.pk}"]


def test_team_and_tag_rules_apply_to_their_jobs_in_their_environment_only(cast):
    tagged = make_job(cast, "tagged", tags=["nightly"])
    other = make_job(cast, "other")
    in_dev = Job.objects.create(
        tenant=cast.acme,
        team=cast.data,
        environment=cast.dev,
        **cast.definition(name="data.batch.dev", tags=["nightly"]),
    )
    tag_rule = make_rule(scope="tag", tag="nightly", tenant=cast.acme)
    team_rule = make_rule(scope="team", team=cast.payments)
    AlertRule.objects.filter(pk=team_rule.pk).update(environment=cast.prod)
    for job in (tagged, other, in_dev):
        make_run(job, RunStatus.FAILED, started=T0, finished=T0)
    assert sorted(fingerprints(evaluate(T0 + SECOND))) == sorted(
        [
            f"rule:{tag_rule.pk}:job:{tagged.pk}",
            f"rule:{tag_rule.pk}:job:{in_dev.pk}",
            f"rule:{team_rule.pk}:job:{tagged.pk}",
            f"rule:{team_rule.pk}:job:{other.pk}",
        ]
    )


def test_a_rule_never_sees_another_tenants_jobs(cast):
    make_rule(scope="tag", tag="nightly", tenant=cast.acme)
    theirs = make_job(cast, "theirs", tenant=cast.globex, tags=["nightly"])
    make_run(theirs, RunStatus.FAILED, started=T0, finished=T0)
    assert evaluate(T0 + SECOND).signals == []


def test_a_disabled_or_deleted_rule_clears_what_it_fired(cast):
    job = make_job(cast)
    rule = make_rule(job)
    make_run(job, RunStatus.FAILED, started=T0, finished=T0)
    assert len(evaluate(T0 + SECOND).signals) == 1
    AlertRule.objects.filter(pk=rule.pk).update(enabled=False)
    assert [c.fingerprint for c in evaluate(T0 + 2 * SECOND).clears] == [f"rule:{rule.pk}:job:{job.pk}"]


# --- cost ---------------------------------------------------------------------------------------


def _queries(now) -> int:
    with CaptureQueriesContext(connection) as ctx:
        evaluate(now)
    return len(ctx.captured_queries)


def test_the_query_count_does_not_grow_with_jobs_or_rules(cast):
    def add(n: int, offset: int) -> None:
        for i in range(offset, offset + n):
            job = make_job(cast, f"job-{i}", criticality="critical", tags=["nightly"], next_fire_at=T0)
            make_rule(job, "failure_rate", threshold=0.5, window_seconds=3600, min_runs=1)
            make_rule(job, "deadline_missed", **BERLIN_6)
            make_run(job, RunStatus.FAILED, started=T0, finished=T0)
            make_run(job, RunStatus.RUNNING, scheduled_for=T0 + SECOND, started=T0)

    make_rule(scope="tag", tag="nightly", tenant=cast.acme, kind="heartbeat_silence", seconds=60)
    add(2, 0)
    _queries(T0 + 10 * SECOND)  # states created
    few = _queries(T0 + 20 * SECOND)
    add(12, 2)
    _queries(T0 + 30 * SECOND)
    assert _queries(T0 + 40 * SECOND) == few
