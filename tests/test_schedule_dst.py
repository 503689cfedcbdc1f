"""Daylight-saving semantics of job schedules, as in Vixie/Debian cron plus per-job policies.

The table lists hand-checked instants for every kind of transition: Northern
(Berlin, New York) and Southern hemisphere (Sydney), a 30-minute shift
(Lord Howe), midnight transitions (Santiago, Havana), no DST (Kolkata) and UTC,
in both 2026 and 2027.
"""

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from jobs import schedule

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/Havana",
    "Asia/Kolkata",
    "UTC",
]


def z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# (zone, cron, after, gap, overlap, expected UTC instants)
TABLE = [
    # Berlin: gap 02:00-03:00 local (01:00Z), overlap 02:00-03:00 local.
    ("Europe/Berlin", "30 2 * * *", "2026-03-28T12:00Z", "shift", "once", ["2026-03-29T01:00Z", "2026-03-30T00:30Z"]),
    ("Europe/Berlin", "30 2 * * *", "2026-03-28T12:00Z", "skip", "once", ["2026-03-30T00:30Z", "2026-03-31T00:30Z"]),
    (
        "Europe/Berlin",
        "0,15,30,45 2 * * *",
        "2026-03-28T12:00Z",
        "shift",
        "once",
        ["2026-03-29T01:00Z", "2026-03-30T00:00Z"],
    ),
    (
        "Europe/Berlin",
        "0,30 2,3 * * *",
        "2026-03-28T12:00Z",
        "shift",
        "once",
        ["2026-03-29T01:00Z", "2026-03-29T01:30Z", "2026-03-30T00:00Z"],
    ),
    (
        "Europe/Berlin",
        "*/15 * * * *",
        "2026-03-29T00:40Z",
        "shift",
        "once",
        ["2026-03-29T00:45Z", "2026-03-29T01:00Z", "2026-03-29T01:15Z"],
    ),
    ("Europe/Berlin", "30 2 * * *", "2026-10-24T12:00Z", "shift", "once", ["2026-10-25T00:30Z", "2026-10-26T01:30Z"]),
    (
        "Europe/Berlin",
        "30 2 * * *",
        "2026-10-24T12:00Z",
        "shift",
        "twice",
        ["2026-10-25T00:30Z", "2026-10-25T01:30Z", "2026-10-26T01:30Z"],
    ),
    (
        "Europe/Berlin",
        "0,30 2 * * *",
        "2026-10-24T12:00Z",
        "shift",
        "twice",
        ["2026-10-25T00:00Z", "2026-10-25T00:30Z", "2026-10-25T01:00Z", "2026-10-25T01:30Z", "2026-10-26T01:00Z"],
    ),
    (
        "Europe/Berlin",
        "30 * * * *",
        "2026-10-24T23:45Z",
        "shift",
        "once",
        ["2026-10-25T00:30Z", "2026-10-25T01:30Z", "2026-10-25T02:30Z"],
    ),
    # Starting inside the first pass still finds the second pass of a later minute.
    ("Europe/Berlin", "30 2 * * *", "2026-10-25T00:45Z", "shift", "twice", ["2026-10-25T01:30Z", "2026-10-26T01:30Z"]),
    ("Europe/Berlin", "30 2 * * *", "2027-03-27T12:00Z", "shift", "once", ["2027-03-28T01:00Z", "2027-03-29T00:30Z"]),
    (
        "Europe/Berlin",
        "30 2 * * *",
        "2027-10-30T12:00Z",
        "shift",
        "twice",
        ["2027-10-31T00:30Z", "2027-10-31T01:30Z", "2027-11-01T01:30Z"],
    ),
    # New York: gap 02:00-03:00 local (07:00Z), overlap 01:00-02:00 local.
    (
        "America/New_York",
        "30 2 * * *",
        "2026-03-07T12:00Z",
        "shift",
        "once",
        ["2026-03-08T07:00Z", "2026-03-09T06:30Z"],
    ),
    ("America/New_York", "30 2 * * *", "2026-03-07T12:00Z", "skip", "once", ["2026-03-09T06:30Z", "2026-03-10T06:30Z"]),
    (
        "America/New_York",
        "30 1 * * *",
        "2026-10-31T12:00Z",
        "shift",
        "once",
        ["2026-11-01T05:30Z", "2026-11-02T06:30Z"],
    ),
    (
        "America/New_York",
        "30 1 * * *",
        "2026-10-31T12:00Z",
        "shift",
        "twice",
        ["2026-11-01T05:30Z", "2026-11-01T06:30Z", "2026-11-02T06:30Z"],
    ),
    (
        "America/New_York",
        "*/30 * * * *",
        "2026-11-01T05:10Z",
        "shift",
        "once",
        ["2026-11-01T05:30Z", "2026-11-01T06:00Z", "2026-11-01T06:30Z", "2026-11-01T07:00Z"],
    ),
    ("America/New_York", "0 2 * * *", "2027-03-13T12:00Z", "shift", "once", ["2027-03-14T07:00Z", "2027-03-15T06:00Z"]),
    (
        "America/New_York",
        "0 1 * * *",
        "2027-11-06T12:00Z",
        "shift",
        "twice",
        ["2027-11-07T05:00Z", "2027-11-07T06:00Z", "2027-11-08T06:00Z"],
    ),
    # Sydney (southern): overlap 02:00-03:00 local in April, gap 02:00-03:00 local in October.
    (
        "Australia/Sydney",
        "30 2 * * *",
        "2026-04-04T00:00Z",
        "shift",
        "once",
        ["2026-04-04T15:30Z", "2026-04-05T16:30Z"],
    ),
    (
        "Australia/Sydney",
        "30 2 * * *",
        "2026-04-04T00:00Z",
        "shift",
        "twice",
        ["2026-04-04T15:30Z", "2026-04-04T16:30Z", "2026-04-05T16:30Z"],
    ),
    (
        "Australia/Sydney",
        "30 2 * * *",
        "2026-10-03T00:00Z",
        "shift",
        "once",
        ["2026-10-03T16:00Z", "2026-10-04T15:30Z"],
    ),
    ("Australia/Sydney", "30 2 * * *", "2026-10-03T00:00Z", "skip", "once", ["2026-10-04T15:30Z", "2026-10-05T15:30Z"]),
    (
        "Australia/Sydney",
        "15 2 * * *",
        "2027-04-03T00:00Z",
        "shift",
        "twice",
        ["2027-04-03T15:15Z", "2027-04-03T16:15Z", "2027-04-04T16:15Z"],
    ),
    (
        "Australia/Sydney",
        "15 2 * * *",
        "2027-10-02T00:00Z",
        "shift",
        "once",
        ["2027-10-02T16:00Z", "2027-10-03T15:15Z"],
    ),
    # Lord Howe: a 30-minute shift. Overlap 01:30-02:00 local in April, gap 02:00-02:30 in October.
    (
        "Australia/Lord_Howe",
        "45 1 * * *",
        "2026-04-04T00:00Z",
        "shift",
        "once",
        ["2026-04-04T14:45Z", "2026-04-05T15:15Z"],
    ),
    (
        "Australia/Lord_Howe",
        "45 1 * * *",
        "2026-04-04T00:00Z",
        "shift",
        "twice",
        ["2026-04-04T14:45Z", "2026-04-04T15:15Z", "2026-04-05T15:15Z"],
    ),
    (
        "Australia/Lord_Howe",
        "*/15 * * * *",
        "2026-04-04T14:40Z",
        "shift",
        "once",
        ["2026-04-04T14:45Z", "2026-04-04T15:00Z", "2026-04-04T15:15Z", "2026-04-04T15:30Z"],
    ),
    (
        "Australia/Lord_Howe",
        "15 2 * * *",
        "2026-10-03T00:00Z",
        "shift",
        "once",
        ["2026-10-03T15:30Z", "2026-10-04T15:15Z"],
    ),
    (
        "Australia/Lord_Howe",
        "15 2 * * *",
        "2026-10-03T00:00Z",
        "skip",
        "once",
        ["2026-10-04T15:15Z", "2026-10-05T15:15Z"],
    ),
    (
        "Australia/Lord_Howe",
        "0,15 2 * * *",
        "2026-10-03T00:00Z",
        "shift",
        "once",
        ["2026-10-03T15:30Z", "2026-10-04T15:00Z"],
    ),
    (
        "Australia/Lord_Howe",
        "45 1 * * *",
        "2027-04-03T00:00Z",
        "shift",
        "twice",
        ["2027-04-03T14:45Z", "2027-04-03T15:15Z", "2027-04-04T15:15Z"],
    ),
    (
        "Australia/Lord_Howe",
        "15 2 * * *",
        "2027-10-02T00:00Z",
        "shift",
        "once",
        ["2027-10-02T15:30Z", "2027-10-03T15:15Z"],
    ),
    # Santiago changes at midnight: overlap 23:00-24:00 in April, gap 00:00-01:00 in September.
    (
        "America/Santiago",
        "30 23 * * *",
        "2026-04-04T12:00Z",
        "shift",
        "once",
        ["2026-04-05T02:30Z", "2026-04-06T03:30Z"],
    ),
    (
        "America/Santiago",
        "30 23 * * *",
        "2026-04-04T12:00Z",
        "shift",
        "twice",
        ["2026-04-05T02:30Z", "2026-04-05T03:30Z", "2026-04-06T03:30Z"],
    ),
    ("America/Santiago", "0 0 * * *", "2026-09-05T12:00Z", "shift", "once", ["2026-09-06T04:00Z", "2026-09-07T03:00Z"]),
    ("America/Santiago", "0 0 * * *", "2026-09-05T12:00Z", "skip", "once", ["2026-09-07T03:00Z", "2026-09-08T03:00Z"]),
    # The date exists but its midnight does not: skip waits a year.
    ("America/Santiago", "0 0 6 9 *", "2026-09-05T12:00Z", "skip", "once", ["2027-09-06T03:00Z"]),
    ("America/Santiago", "0 0 6 9 *", "2026-09-05T12:00Z", "shift", "once", ["2026-09-06T04:00Z", "2027-09-06T03:00Z"]),
    (
        "America/Santiago",
        "30 23 * * *",
        "2027-04-03T12:00Z",
        "shift",
        "twice",
        ["2027-04-04T02:30Z", "2027-04-04T03:30Z", "2027-04-05T03:30Z"],
    ),
    ("America/Santiago", "0 0 * * *", "2027-09-04T12:00Z", "shift", "once", ["2027-09-05T04:00Z", "2027-09-06T03:00Z"]),
    # Havana: gap 00:00-01:00 in March, overlap 00:00-01:00 in November.
    ("America/Havana", "30 0 * * *", "2026-03-07T12:00Z", "shift", "once", ["2026-03-08T05:00Z", "2026-03-09T04:30Z"]),
    (
        "America/Havana",
        "30 0 * * *",
        "2026-10-31T12:00Z",
        "shift",
        "twice",
        ["2026-11-01T04:30Z", "2026-11-01T05:30Z", "2026-11-02T05:30Z"],
    ),
    ("America/Havana", "30 0 * * *", "2027-03-13T12:00Z", "skip", "once", ["2027-03-15T04:30Z", "2027-03-16T04:30Z"]),
    ("America/Havana", "30 0 * * *", "2027-11-06T12:00Z", "shift", "once", ["2027-11-07T04:30Z", "2027-11-08T05:30Z"]),
    # No DST: policies change nothing.
    ("Asia/Kolkata", "30 2 * * *", "2026-03-28T12:00Z", "skip", "twice", ["2026-03-28T21:00Z", "2026-03-29T21:00Z"]),
    ("Asia/Kolkata", "30 2 * * *", "2027-10-30T12:00Z", "shift", "twice", ["2027-10-30T21:00Z", "2027-10-31T21:00Z"]),
    ("UTC", "30 2 * * *", "2026-10-24T12:00Z", "skip", "twice", ["2026-10-25T02:30Z", "2026-10-26T02:30Z"]),
    ("UTC", "*/30 * * * *", "2027-03-28T00:50Z", "shift", "once", ["2027-03-28T01:00Z", "2027-03-28T01:30Z"]),
]


@pytest.mark.parametrize(("tz", "cron", "after", "gap", "overlap", "expected"), TABLE)
def test_fire_instants_match_the_dst_table(tz, cron, after, gap, overlap, expected):
    fires = schedule.next_n(cron, tz, z(after), len(expected), gap=gap, overlap=overlap)
    assert [schedule.isoz(f).replace(":00Z", "Z") for f in fires] == expected


def _transitions(tz):
    return schedule.transitions(tz, datetime(2026, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC))


TRANSITIONS = [(tz, t) for tz in ZONES for t, _before, _after in _transitions(tz)]


def test_every_dst_zone_has_four_transitions_in_the_two_years():
    counts = Counter(tz for tz, _ in TRANSITIONS)
    assert counts == {tz: 4 for tz in ZONES if tz not in ("Asia/Kolkata", "UTC")}


@pytest.mark.parametrize(("tz", "instant"), TRANSITIONS, ids=[f"{tz}-{t:%Y-%m}" for tz, t in TRANSITIONS])
def test_elapsed_time_schedules_fire_every_quarter_hour_of_real_time_across_the_transition(tz, instant):
    fires = schedule.next_n("*/15 * * * *", tz, instant - timedelta(hours=4), 32)
    steps = {b - a for a, b in zip(fires, fires[1:], strict=False)}
    assert steps == {timedelta(minutes=15)}
    assert instant in fires


@pytest.mark.parametrize(("tz", "instant"), TRANSITIONS, ids=[f"{tz}-{t:%Y-%m}" for tz, t in TRANSITIONS])
def test_fixed_time_schedules_fire_once_per_local_day_by_default(tz, instant):
    zone = schedule.zone(tz)
    shift = abs(instant.astimezone(zone).utcoffset() - (instant - timedelta(minutes=1)).astimezone(zone).utcoffset())
    local = instant.astimezone(zone).replace(tzinfo=None)
    # Every quarter hour around the transition, in local wall-clock terms.
    for minutes in range(-120, 135, 15):
        wall = local + timedelta(minutes=minutes)
        cron = f"{wall.minute} {wall.hour} * * *"
        start = instant - timedelta(days=2)
        default = schedule.next_n(cron, tz, start, 5)
        per_day = Counter(f.astimezone(zone).date() for f in default)
        assert len(default) == len(set(default)) == 5
        assert max(per_day.values()) == 1, (cron, default)
        twice = schedule.next_n(cron, tz, start, 6, overlap="twice")
        skipped = schedule.next_n(cron, tz, start, 4, gap="skip")
        assert len(twice) == len(set(twice))
        extra = sorted(set(twice[:5]) - set(default))
        missing = sorted(set(default[:4]) - set(skipped))
        for instant_twice in extra:
            # A second pass is exactly one DST shift after the first.
            assert instant_twice - shift in default
        assert len(extra) <= 1 and len(missing) <= 1
        assert all(m == instant for m in missing), "only the gap-end fire disappears with gap=skip"


def test_several_matches_inside_one_gap_fire_once_at_its_end():
    fires = schedule.next_n("*/10 2 * * *", "Europe/Berlin", z("2026-03-28T12:00Z"), 3)
    # */10 in the minute field is elapsed time: the skipped hour has no matches.
    assert fires[0] == z("2026-03-30T00:00Z")
    fires = schedule.next_n("0,10,20,30,40,50 2 * * *", "Europe/Berlin", z("2026-03-28T12:00Z"), 2)
    assert fires == [z("2026-03-29T01:00Z"), z("2026-03-30T00:00Z")]


def test_elapsed_time_schedule_fires_in_both_passes_of_the_repeated_hour():
    day = [
        f
        for f in schedule.next_n("*/30 * * * *", "Europe/Berlin", z("2026-10-24T21:59Z"), 60)
        if f.astimezone(schedule.zone("Europe/Berlin")).date().isoformat() == "2026-10-25"
    ]
    assert len(day) == 50


def test_fires_carry_notes_that_explain_dst():
    fires = [
        f
        for _, f in zip(
            range(3),
            schedule.iter_fires("30 2 * * *", "Europe/Berlin", z("2026-10-24T12:00Z"), overlap="twice"),
            strict=False,
        )
    ]
    assert "first pass" in fires[0].note and "second pass" in fires[1].note and fires[2].note == ""
    shifted = next(schedule.iter_fires("30 2 * * *", "Europe/Berlin", z("2026-03-28T12:00Z")))
    assert "does not exist" in shifted.note


def test_results_are_aware_utc_and_strictly_after_the_given_instant():
    after = z("2026-06-01T10:00Z")
    fires = schedule.next_n("0 * * * *", "Europe/Berlin", after, 2)
    assert fires == [z("2026-06-01T11:00Z"), z("2026-06-01T12:00Z")]
    assert all(f.tzinfo is UTC for f in fires)
    with pytest.raises(ValueError):
        schedule.next_n("0 * * * *", "UTC", datetime(2026, 1, 1), 1)
