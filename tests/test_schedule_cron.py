"""Cron syntax: names, ranges, lists, steps, L, #, H, and the errors for bad input."""

from collections import Counter
from datetime import UTC, datetime

import pytest

from jobs import schedule

AFTER = datetime(2026, 1, 1, tzinfo=UTC)


def fires(cron, count=3, tz="UTC", **kw):
    return [f.isoformat() for f in schedule.next_n(cron, tz, AFTER, count, **kw)]


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("0 9 * JAN MON-FRI", ["2026-01-01T09:00:00+00:00", "2026-01-02T09:00:00+00:00", "2026-01-05T09:00:00+00:00"]),
        ("0 9 * * sat,sun", ["2026-01-03T09:00:00+00:00", "2026-01-04T09:00:00+00:00", "2026-01-10T09:00:00+00:00"]),
        ("0 0 L * *", ["2026-01-31T00:00:00+00:00", "2026-02-28T00:00:00+00:00", "2026-03-31T00:00:00+00:00"]),
        ("0 0 * * 1#1", ["2026-01-05T00:00:00+00:00", "2026-02-02T00:00:00+00:00", "2026-03-02T00:00:00+00:00"]),
        ("0 0 * * FRI#2", ["2026-01-09T00:00:00+00:00", "2026-02-13T00:00:00+00:00", "2026-03-13T00:00:00+00:00"]),
        ("0 0 * * 5L", ["2026-01-30T00:00:00+00:00", "2026-02-27T00:00:00+00:00", "2026-03-27T00:00:00+00:00"]),
        ("0 12 1-31/10 2 *", ["2026-02-01T12:00:00+00:00", "2026-02-11T12:00:00+00:00", "2026-02-21T12:00:00+00:00"]),
        # Day-of-month and day-of-week both restricted: either matches (Vixie).
        ("0 0 13 * FRI", ["2026-01-02T00:00:00+00:00", "2026-01-09T00:00:00+00:00", "2026-01-13T00:00:00+00:00"]),
    ],
)
def test_cron_syntax_fires_when_an_operator_expects(cron, expected):
    assert fires(cron) == expected


def test_h_is_stable_for_a_job_and_spreads_jobs_apart():
    seed = schedule.job_seed(1, 2, "payments.ledger.reconcile")
    first = fires("H H * * *", seed=seed)
    assert first == fires("H H * * *", seed=seed)
    starts = Counter(
        schedule.next_after("H H * * *", "UTC", AFTER, seed=schedule.job_seed(1, 2, f"team.sys.job-{i}")).time()
        for i in range(200)
    )
    assert len(starts) > 150  # 200 jobs, 1440 possible minutes: nearly all distinct


def test_h_with_step_and_range_stays_inside_them():
    seed = schedule.job_seed(1, 1, "data.lake.compact")
    quarter = schedule.next_n("H/15 * * * *", "UTC", AFTER, 8, seed=seed)
    assert {b - a for a, b in zip(quarter, quarter[1:], strict=False)} == {quarter[1] - quarter[0]}
    assert (quarter[1] - quarter[0]).total_seconds() == 900
    assert quarter[0].minute < 15
    for i in range(50):
        s = schedule.job_seed(1, 1, f"x.y.z{i}")
        instant = schedule.next_after("H(0-29) H(1-5) * * *", "UTC", AFTER, seed=s)
        assert instant.minute < 30 and 1 <= instant.hour <= 5


def test_h_without_a_job_is_refused_with_the_reason():
    with pytest.raises(schedule.ScheduleError, match="uses H"):
        schedule.next_n("H 2 * * *", "UTC", AFTER, 1)


@pytest.mark.parametrize(
    ("cron", "fragment"),
    [
        ("* * * *", "must have 5 fields"),
        ("61 * * * *", "Bad minute"),
        ("* 24 * * *", "Bad hour"),
        ("0 0 32 * *", "Bad day-of-month"),
        ("0 0 * 13 *", "Bad month"),
        ("0 0 * * FUN", "Bad day-of-week"),
        ("*/0 * * * *", "Bad minute"),
        ("HH * * * *", "H is written"),
        ("H(50-70) * * * *", "outside the minute range"),
        ("0 0 30 2 *", "never fires: day-of-month .30. does not occur in month .2."),
    ],
)
def test_invalid_cron_names_the_problem(cron, fragment):
    with pytest.raises(schedule.ScheduleError, match=fragment):
        schedule.validate_cron(cron)


def test_unknown_zone_and_policy_are_refused():
    with pytest.raises(schedule.ScheduleError, match="Unknown time zone 'Mars/Olympus'"):
        schedule.next_n("0 0 * * *", "Mars/Olympus", AFTER, 1)
    with pytest.raises(schedule.ScheduleError, match="gap must be one of"):
        schedule.next_n("0 0 * * *", "UTC", AFTER, 1, gap="later")
    with pytest.raises(schedule.ScheduleError, match="overlap must be one of"):
        schedule.next_n("0 0 * * *", "UTC", AFTER, 1, overlap="thrice")
