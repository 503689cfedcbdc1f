"""jobs/schedule.py against an independent minute-by-minute oracle, in the zones whose offsets move
by 30 or 45 minutes or off the hour, 2020-2030.

The oracle walks UTC minutes, reads each one on the zone's wall clock with zoneinfo and applies
the daylight-saving rules of docs/scheduling.md: a schedule whose minute or hour field starts with
``*`` fires at every real instant whose local clock matches; any other fires at a local time that
exists once, at the first (``overlap=once``) or both passes of one that exists twice, and for a
local time that does not exist at the end of the gap (``gap=shift``) or not at all (``gap=skip``).
Expressions are drawn with their meaning, so the oracle never parses cron.
"""

from __future__ import annotations

import calendar
import importlib.resources
import struct
import zoneinfo
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs import schedule

MINUTE = timedelta(minutes=1)
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
START, END = datetime(2020, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC)


def _tzif_transitions(name: str) -> list[tuple[int, int, int]]:
    """(UTC seconds, offset before, offset after) of each transition listed in the zone's TZif file."""
    for base in zoneinfo.TZPATH:
        path = Path(base) / name
        if path.is_file():
            data = path.read_bytes()
            break
    else:
        data = importlib.resources.files("tzdata.zoneinfo").joinpath(*name.split("/")).read_bytes()

    def counts(at: int) -> tuple[int, ...]:
        assert data[at : at + 4] == b"TZif", name
        return struct.unpack(">6l", data[at + 20 : at + 44])

    isutc, isstd, leap, timecnt, typecnt, charcnt = counts(0)
    at, size, fmt = 44, 4, "l"
    if data[4:5] >= b"2":  # skip the 32-bit block, read the 64-bit one
        at = 44 + timecnt * 5 + typecnt * 6 + charcnt + leap * 8 + isstd + isutc
        isutc, isstd, leap, timecnt, typecnt, charcnt = counts(at)
        at, size, fmt = at + 44, 8, "q"
    times = struct.unpack(f">{timecnt}{fmt}", data[at : at + timecnt * size])
    at += timecnt * size
    kinds = data[at : at + timecnt]
    at += timecnt
    offsets = [struct.unpack(">lBB", data[at + 6 * i : at + 6 * i + 6])[0] for i in range(typecnt)]
    found, before = [], offsets[0]
    for instant, kind in zip(times, kinds, strict=True):
        found.append((instant, before, offsets[kind]))
        before = offsets[kind]
    return found


def _odd_zones() -> list[str]:
    """Zones that, since 1970, changed offset by other than whole hours, or off the hour (UTC or local)."""
    odd = []
    for name in sorted(zoneinfo.available_timezones()):
        try:
            schedule.zone(name)
        except schedule.ScheduleError:
            continue  # localtime and the like: refused
        changes = [(t, a, b) for t, a, b in _tzif_transitions(name) if t >= 0 and a != b]
        if any((b - a) % 3600 or t % 3600 or (t + a) % 3600 for t, a, b in changes):
            odd.append(name)
    return odd


ZONES = _odd_zones()


def _transitions(name: str) -> list[datetime]:
    """Offset changes of the zone in 2020-2030, to the minute (day scan, then bisection)."""
    tz = zoneinfo.ZoneInfo(name)
    found = []
    day = START
    while day < END:
        nxt = day + timedelta(days=1)
        if day.astimezone(tz).utcoffset() != nxt.astimezone(tz).utcoffset():
            low, high = day, nxt  # offset(low) differs from offset(high)
            while high - low > MINUTE:
                mid = low + (high - low) // 2
                mid = mid.replace(second=0)
                if mid.astimezone(tz).utcoffset() == low.astimezone(tz).utcoffset():
                    low = mid
                else:
                    high = mid
            found.append(high)
        day = nxt
    return found


TRANSITIONS = {name: _transitions(name) for name in ZONES}


def _moves(name: str) -> set[str]:
    """How the zone's offset moves in 2020-2030: by half hours, or on the hour but off the local hour."""
    tz = zoneinfo.ZoneInfo(name)
    kinds = set()
    for at in TRANSITIONS[name]:
        before, after = (at - MINUTE).astimezone(tz), at.astimezone(tz)
        if (after.utcoffset() - before.utcoffset()) % timedelta(hours=1):
            kinds.add("partial")
        if after.minute or at.minute:
            kinds.add("off the hour")
    return kinds


# Zones drawn more often: where the issue's bugs live (Lord Howe's 30-minute shift, Chatham's 02:45).
PARTIAL = [name for name in ZONES if "partial" in _moves(name)]
OFF_HOUR = [name for name in ZONES if "off the hour" in _moves(name)]


def test_the_oracle_covers_the_zones_the_issue_names():
    assert {"Australia/Lord_Howe", "Pacific/Chatham", "America/Caracas", "Asia/Pyongyang"} <= set(ZONES)
    assert {"Asia/Kathmandu", "America/St_Johns", "Asia/Tehran", "Australia/Adelaide"} <= set(ZONES)
    assert len(TRANSITIONS["Australia/Lord_Howe"]) == 22  # two a year, 2020-2030
    assert "Australia/Lord_Howe" in PARTIAL and {"Pacific/Chatham", "America/St_Johns"} <= set(OFF_HOUR)


# --- expressions drawn with their meaning: (text, predicate on a value) per field ---


def _numbers(low: int, high: int, likely: list[int]) -> st.SearchStrategy[tuple[str, frozenset[int]]]:
    value = st.one_of(st.sampled_from(likely), st.integers(low, high))
    every = st.just(("*", frozenset(range(low, high + 1))))
    step = st.integers(2, max(2, (high - low) // 2)).map(lambda k: (f"*/{k}", frozenset(range(low, high + 1, k))))
    single = value.map(lambda v: (str(v), frozenset({v})))
    ranged = st.tuples(value, value, st.integers(1, 5)).map(
        lambda t: (
            f"{min(t[0], t[1])}-{max(t[0], t[1])}" + (f"/{t[2]}" if t[2] > 1 else ""),
            frozenset(range(min(t[0], t[1]), max(t[0], t[1]) + 1, t[2])),
        )
    )
    listed = st.lists(value, min_size=2, max_size=4, unique=True).map(
        lambda vs: (",".join(map(str, vs)), frozenset(vs))
    )
    return st.one_of(every, every, step, single, single, ranged, listed)


MINUTES = _numbers(0, 59, [0, 15, 29, 30, 31, 44, 45, 46, 59])
HOURS = _numbers(0, 23, [0, 1, 2, 3, 4, 23])


def _last_day(d: date) -> int:
    return calendar.monthrange(d.year, d.month)[1]


def _last_weekday(d: date) -> int:
    last = date(d.year, d.month, _last_day(d))
    return last.day - max(0, last.weekday() - 4)


def _sunday0(d: date) -> int:
    return (d.weekday() + 1) % 7


ANY_DAY = st.just(("*", lambda d: True))
PLAIN_DOM = st.one_of(
    ANY_DAY,
    ANY_DAY,
    ANY_DAY,
    st.integers(1, 31).map(lambda n: (str(n), lambda d, n=n: d.day == n)),
    st.just(("L", lambda d: d.day == _last_day(d))),
    st.integers(2, 9).map(lambda k: (f"*/{k}", lambda d, k=k: (d.day - 1) % k == 0)),
    st.tuples(st.integers(1, 15), st.integers(15, 31)).map(
        lambda t: (f"{t[0]}-{t[1]}", lambda d, t=t: t[0] <= d.day <= t[1])
    ),
)
DOM = st.one_of(
    PLAIN_DOM,
    st.just(("LW", lambda d: d.day == _last_weekday(d))),
    st.integers(25, 31).map(lambda n: (f"{n}-L", lambda d, n=n: d.day >= n)),
)
MONTH = st.one_of(
    st.just(("*", frozenset(range(1, 13)))),
    st.just(("*", frozenset(range(1, 13)))),
    st.tuples(st.integers(1, 12), st.integers(1, 12)).map(
        lambda t: (
            f"{MONTHS[min(t) - 1]}-{MONTHS[max(t) - 1]}".lower(),
            frozenset(range(min(t), max(t) + 1)),
        )
    ),
)
PLAIN_DOW = st.one_of(
    ANY_DAY,
    ANY_DAY,
    ANY_DAY,
    st.sampled_from(range(7)).map(lambda w: (str(w), lambda d, w=w: _sunday0(d) == w)),
    st.just(("MON-FRI", lambda d: 1 <= _sunday0(d) <= 5)),
    st.tuples(st.integers(0, 6), st.integers(1, 5)).map(
        lambda t: (f"{t[0]}#{t[1]}", lambda d, t=t: _sunday0(d) == t[0] and (d.day - 1) // 7 + 1 == t[1])
    ),
)
DOW = st.one_of(
    PLAIN_DOW,
    st.sampled_from(range(7)).map(lambda w: (DAYS[w], lambda d, w=w: _sunday0(d) == w)),
    st.just(("Sat-Sun", lambda d: _sunday0(d) in (6, 0))),
    st.just(("mon-thu", lambda d: 1 <= _sunday0(d) <= 4)),
    st.just(("5-7", lambda d: _sunday0(d) in (5, 6, 0))),
    st.just(("sun-thu", lambda d: 0 <= _sunday0(d) <= 4)),
    st.tuples(st.integers(0, 7), st.integers(1, 5)).map(
        lambda t: (f"{t[0]}#{t[1]}", lambda d, t=t: _sunday0(d) == t[0] % 7 and (d.day - 1) // 7 + 1 == t[1])
    ),
    st.tuples(st.integers(0, 6), st.booleans()).map(
        lambda t: (
            f"L{t[0]}" if t[1] else f"{t[0]}L",
            lambda d, t=t: _sunday0(d) == t[0] and d.day + 7 > _last_day(d),
        )
    ),
)


@st.composite
def expressions(draw, dom_field=DOM, dow_field=DOW):
    minute, minutes = draw(MINUTES)
    hour, hours = draw(HOURS)
    dom, dom_ok = draw(dom_field)
    month, months = draw(MONTH)
    dow, dow_ok = draw(dow_field)
    both = dom.startswith("*") or dow.startswith("*")  # Vixie: a day field starting with * makes them AND

    def day_ok(d: date) -> bool:
        if d.month not in months:
            return False
        return (dom_ok(d) and dow_ok(d)) if both else (dom_ok(d) or dow_ok(d))

    def matches(local: datetime) -> bool:
        return local.minute in minutes and local.hour in hours and day_ok(local.date())

    elapsed = minute.startswith("*") or hour.startswith("*")
    return f"{minute} {hour} {dom} {month} {dow}", matches, day_ok, elapsed


def oracle(matches, elapsed: bool, tz, start: datetime, end: datetime, gap: str, overlap: str) -> list[datetime]:
    """Every UTC minute in (start, end] at which the schedule fires."""
    fires = []
    u = start + MINUTE
    before = start.astimezone(tz)
    while u <= end:
        local = u.astimezone(tz)
        wall = local.replace(tzinfo=None)
        fire = matches(wall) and (elapsed or local.fold == 0 or overlap == "twice")
        jump = local.utcoffset() - before.utcoffset()
        if not fire and not elapsed and gap == "shift" and jump > timedelta(0):
            # The local clock skipped (wall - jump, wall): a match there fires now, once.
            skipped = wall - jump
            while skipped < wall and not fire:
                fire = matches(skipped)
                skipped += MINUTE
        if fire:
            fires.append(u)
        before = local
        u += MINUTE
    return fires


@st.composite
def windows(draw):
    name = draw(st.one_of(st.sampled_from(PARTIAL), st.sampled_from(OFF_HOUR), st.sampled_from(ZONES)))
    changes = TRANSITIONS[name]
    if changes and draw(st.integers(0, 3)):
        center = draw(st.sampled_from(changes))
        start = center - timedelta(minutes=draw(st.integers(0, 30 * 60)))
    else:
        start = START + timedelta(minutes=draw(st.integers(0, (END - START) // MINUTE - 3 * 24 * 60)))
    return name, start.replace(second=0, microsecond=0), start + timedelta(hours=36)


SETTINGS = settings(
    max_examples=250,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check_against_oracle(expression, window, gap, overlap):
    text, matches, day_ok, elapsed = expression
    name, start, end = window
    tz = zoneinfo.ZoneInfo(name)
    try:
        got = []
        for fire in schedule.iter_fires(text, name, start, gap=gap, overlap=overlap):
            if fire.at > end:
                break
            got.append(fire.at)
    except schedule.ScheduleError as exc:
        # Refused as never firing: no day in a full 28-year calendar cycle matches.
        assert "never fires" in str(exc), exc
        day = date(2001, 1, 1)
        while day < date(2029, 1, 1):
            assert not day_ok(day), (text, day)
            day += timedelta(days=1)
        return
    assert got == oracle(matches, elapsed, tz, start, end, gap, overlap), (text, name, start.isoformat(), gap, overlap)


@SETTINGS
@given(
    expression=expressions(PLAIN_DOM, PLAIN_DOW),
    window=windows(),
    gap=st.sampled_from(schedule.GAP_POLICIES),
    overlap=st.sampled_from(schedule.OVERLAP_POLICIES),
)
def test_fires_match_the_oracle_where_offsets_move_off_the_hour(expression, window, gap, overlap):
    """Cron syntax Governor always accepted: the daylight-saving placement is what is under test."""
    check_against_oracle(expression, window, gap, overlap)


@SETTINGS
@given(
    expression=expressions(),
    window=windows(),
    gap=st.sampled_from(schedule.GAP_POLICIES),
    overlap=st.sampled_from(schedule.OVERLAP_POLICIES),
)
def test_fires_of_every_accepted_spelling_match_the_oracle(expression, window, gap, overlap):
    """THU, Sat-Sun, 5-7, L5, 29-L, LW: the spellings issue 14 added, read as cronie and croniter read them."""
    check_against_oracle(expression, window, gap, overlap)
