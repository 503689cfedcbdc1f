"""Schedule math: the only module that talks to the cron evaluator.

Everything outside this module passes and receives aware UTC datetimes; a
job's own IANA time zone is used only here, to evaluate its cron expression on
the local wall clock.

The evaluator is cronsim (the one behind healthchecks): it follows Debian cron
and is several times faster than croniter, which fires fixed-time schedules
twice in the autumn overlap. cronsim is used for field matching only; the
daylight-saving rules are ours, so the ``gap`` and ``overlap`` policies can be
honoured:

* a schedule whose minute or hour field starts with ``*`` follows elapsed
  time: every real instant whose local wall clock matches fires (both passes
  of a repeated hour, nothing in a skipped one), which is the placement of
  ``gap=skip, overlap=twice``: both kinds walk the local wall clock with
  cronsim and place each match on the time line here, whatever the size of
  the offset change (Lord Howe's 30 minutes);
* any other schedule follows the wall clock: a local time that does not exist
  fires at the end of the gap (``gap=shift``, several such matches once) or
  not at all (``gap=skip``); a local time that exists twice fires at its first
  occurrence (``overlap=once``) or at both (``overlap=twice``).

Validation (``validate_cron``, ``validate_zone``) refuses what cannot be meant
(a step after ``L``, an expression that never fires, a zone that means the
server's); evaluation stays lenient to schedules stored before those refusals.

``H`` (as in Jenkins) is replaced by a value hashed from a stable per-job seed
so that thousands of ``H 2 * * *`` jobs do not all start in the same second.
"""

from __future__ import annotations

import calendar
import hashlib
import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError
from cronsim.cronsim import Field

# Re-exported: jobs format instants as ``schedule.isoz``.
from governance.utc import isoz as isoz

GAP_POLICIES = ("shift", "skip")
OVERLAP_POLICIES = ("once", "twice")

# The longest cron expression accepted anywhere (the model's column holds 120 characters).
MAX_CRON_LENGTH = 120

FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
_CRONSIM_FIELDS = (Field.MINUTE, Field.HOUR, Field.DAY, Field.MONTH, Field.DOW)
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_HINTS = (
    "0-59, e.g. 30, 0-29, */15 or 0,30",
    "0-23, e.g. 2, 9-17, */6 or 8,20",
    "1-31, L (last day), LW (last weekday) or N-L (the Nth to the last day), e.g. 1, 1-15, */2 or 29-L",
    "1-12 or JAN-DEC, e.g. 1, JAN-MAR or */3",
    "0-7 or SUN-SAT (0 and 7 are Sunday), 5L or L5 (last Friday), FRI#2 (second Friday), e.g. MON-FRI or SAT-SUN",
)
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# The range H draws from per field; day-of-month stops at 28 so every month has the day.
_H_RANGES = ((0, 59), (0, 23), (1, 28), (1, 12), (0, 6))
_H_TOKEN = re.compile(r"^H(?:\(([0-9]{1,4})-([0-9]{1,4})\))?(?:/([0-9]{1,4}))?$")
# Zone names in the tz database whose meaning is the server's, not an IANA zone's.
_HOST_ZONES = frozenset({"localtime", "posixrules", "Factory"})
_MINUTE = timedelta(minutes=1)
_ZERO = timedelta(0)
# Longer than any daylight-saving shift in the tz database; _FAR covers the
# day-long changes (Pacific/Apia in 2011).
_NEAR = timedelta(hours=3)
_FAR = timedelta(hours=26)
# The last time the tz database sets clocks back by more than _NEAR at once is 1994.
_WIDE_UNTIL = datetime(1995, 1, 1, tzinfo=UTC)
# cronsim walks naive local wall-clock times; these are two of them.
_LOCAL_EPOCH = datetime(2000, 1, 1, tzinfo=UTC).replace(tzinfo=None)
_LOCAL_MIN = datetime.min.replace(tzinfo=UTC).replace(tzinfo=None)


class ScheduleError(ValueError):
    """A cron expression, time zone or policy that cannot be used; ``field`` names which."""

    def __init__(self, message: str, field: str = "cron") -> None:
        super().__init__(message)
        self.field = field


def _unknown_zone(name: object) -> ScheduleError:
    shown = name if not isinstance(name, str) or len(name) <= 64 else name[:64] + "..."
    return ScheduleError(f"Unknown time zone {shown!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'.", "timezone")


def validate_zone(name: str) -> ZoneInfo:
    """The zone for a name people write now: an IANA name, not one whose meaning is the server's."""
    if isinstance(name, str) and name in _HOST_ZONES:
        raise ScheduleError(
            f"Time zone {name!r} depends on the server's configuration: use an IANA name such as "
            "'Europe/Berlin' or 'UTC'.",
            "timezone",
        )
    return zone(name)


def zone(name: str) -> ZoneInfo:
    """The zone of a name, as stored (see validate_zone for what a definition may name)."""
    if not isinstance(name, str) or not name or name not in _zone_names():
        raise _unknown_zone(name)
    return _zone(name)


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _unknown_zone(name) from None


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def job_seed(tenant_id: object, environment_id: object, name: str) -> str:
    """The stable seed H hashes: a job keeps its stagger as long as it keeps its name and place."""
    return f"{tenant_id}/{environment_id}/{name}"


def _hash(seed: str, field_index: int) -> int:
    digest = hashlib.sha256(f"{seed}#{field_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


# --- parsing: Governor's spellings to cronsim's, with a specific refusal for each bad term ---


def _bad(expr: str, index: int, term: str, why: str) -> ScheduleError:
    return ScheduleError(f"Invalid cron expression {expr!r}: Bad {FIELD_NAMES[index]} {term!r}: {why}.")


def _value(index: int, token: str) -> int | None:
    """A single value of a field (a number, or a month or day name), or None."""
    if index == 3 and token in _MONTHS:
        return _MONTHS.index(token) + 1
    if index == 4 and token in _DAYS:
        return _DAYS.index(token)
    if token.isascii() and token.isdigit() and len(token) <= 4:
        return int(token)
    return None


def _token(index: int, value: int, named: bool) -> str:
    if named and index == 3:
        return _MONTHS[value - 1]
    if named and index == 4:
        return _DAYS[value % 7]
    return str(value)


def _split_wrap(expr: str, index: int, term: str, low: int, high: int, named: bool) -> ScheduleError:
    """A range that wraps around the end of its field (croniter's NOV-MAR): say how to write it."""
    top, bottom = _BOUNDS[index][1], _BOUNDS[index][0]
    if index == 4:
        top, bottom = 7, 1  # FRI-TUE is FRI-SUN,MON-TUE
    first = _token(index, low, named) if low == top else f"{_token(index, low, named)}-{_token(index, top, named)}"
    second = (
        _token(index, bottom, named)
        if high == bottom
        else f"{_token(index, bottom, named)}-{_token(index, high, named)}"
    )
    return _bad(expr, index, term, f"a range cannot wrap around; write {first},{second}")


def _h_term(expr: str, index: int, term: str, seed: str | None) -> str:
    match = _H_TOKEN.match(term)
    if not match:
        raise _bad(expr, index, term, "H is written H, H/step, H(low-high) or H(low-high)/step")
    if seed is None:
        raise ScheduleError(
            f"Cron expression {expr!r} uses H, which is hashed from the job's identity: "
            "preview it for a job (the job's id) to see its times."
        )
    low, high = _H_RANGES[index]
    if match.group(1) is not None:
        low, high = int(match.group(1)), int(match.group(2))
        full_low, full_high = _BOUNDS[index]
        if index == 4:
            full_high = 6
        if not (full_low <= low <= high <= full_high):
            raise ScheduleError(
                f"Invalid cron expression {expr!r}: H range {low}-{high} is outside the {FIELD_NAMES[index]} "
                f"range {full_low}-{full_high}."
            )
    value = _hash(seed, index)
    if match.group(3) is not None:
        step = int(match.group(3))
        if step < 1:
            raise ScheduleError(f"Invalid cron expression {expr!r}: the step of H must be at least 1.")
        offset = low + value % min(step, high - low + 1)
        return f"{offset}-{high}/{step}"
    return str(low + value % (high - low + 1))


def _translate(expr: str, index: int, original: str, seed: str | None, strict: bool) -> str:
    """One term (no commas) in cronsim's spelling; raises ScheduleError saying what to write instead."""
    term = original.upper()
    if term.startswith("H"):
        return _h_term(expr, index, term, seed)
    if term == "?":
        raise _bad(expr, index, original, "write * (any value)")
    base, slash, step = term.partition("/")
    if index == 2:
        if base in ("L", "LW") and slash:
            if not strict:
                return base  # stored before steps after L were refused: they were ignored, and still are
            raise _bad(expr, index, original, f"a step after {base} is not supported; write {base}, or 1-L/{step or 2}")
        if base.startswith("L-"):
            raise _bad(
                expr, index, original, "L-N (days before the last) is not supported; write L or a range such as 28-L"
            )
        if base.endswith("W") and base != "LW":
            raise _bad(expr, index, original, "the nearest weekday (W) is not supported; LW is the last weekday")
        if base.endswith("-L"):
            first = _value(index, base[:-2])
            if first is None:
                raise _bad(expr, index, original, "write N-L, the Nth to the last day of the month, e.g. 29-L")
            # Days past the month's end never match: N to the last day is N-31.
            return f"{first}-31{slash}{step}"
    if index == 4:
        if "#" in base:
            left, _, nth = base.partition("#")
            if "-" in left or left == "*":
                low, _, high = left.partition("-")
                lo, hi = (0, 6) if left == "*" else (_value(4, low), _value(4, high))
                if lo is not None and hi is not None and lo <= (7 if hi == 0 else hi):
                    named = left == "*" or not low.isdigit()
                    listed = ",".join(f"{_token(4, d, named)}#{nth}" for d in range(lo, (7 if hi == 0 else hi) + 1))
                    raise _bad(expr, index, original, f"# takes one day; write {listed}")
                raise _bad(expr, index, original, "# takes one day, e.g. FRI#2 for the second Friday")
            return term
        if base == "L":
            raise _bad(expr, index, original, "write 5L or L5 for the last Friday of the month (0-7 or SUN-SAT)")
        if not slash and len(base) > 1 and (base.startswith("L") or base.endswith("L")):
            day = _value(4, base[1:] if base.startswith("L") else base[:-1])
            if day is None:
                raise _bad(expr, index, original, "write 5L or L5 for the last Friday of the month (0-7 or SUN-SAT)")
            return f"{day}L"
    if "-" in base:
        low, _, high = base.partition("-")
        lo, hi = _value(index, low), _value(index, high)
        if lo is not None and hi is not None:
            if index == 4 and hi == 0 and lo > 0:
                return f"{lo}-7{slash}{step}"  # SAT-SUN, MON-SUN: Sunday ends the week (7)
            if hi < lo:
                raise _split_wrap(expr, index, original, lo, hi, not (low.isdigit() and high.isdigit()))
    return term


def _parse_field(expr: str, index: int, text: str, seed: str | None, strict: bool) -> tuple[str, set]:
    terms = []
    values: set = set()
    for original in text.split(","):
        term = _translate(expr, index, original, seed, strict)
        base, slash, _ = term.partition("/")
        low, dash, high = base.partition("-")
        if slash and dash and low == high:
            term = low  # cronsim would read 0-0/2 as 0/2, every other value from 0
        try:
            values |= _CRONSIM_FIELDS[index].parse(term)
        except (CronSimError, ValueError, IndexError, AssertionError):
            raise _bad(expr, index, original, f"the {FIELD_NAMES[index]} takes {_HINTS[index]}") from None
        terms.append(term)
    return ",".join(terms), values


def _sample_months() -> dict[int, list[tuple[int, int]]]:
    """Per month, one (year, month) for each first weekday and length: every calendar a month can have."""
    found: dict[int, dict[tuple[int, int], int]] = {m: {} for m in range(1, 13)}
    for year in range(2001, 2029):  # 28 years without a skipped leap year hold every kind of year
        for month in range(1, 13):
            first, length = calendar.monthrange(year, month)
            found[month].setdefault((first, length), year)
    return {m: sorted((year, m) for year in kinds.values()) for m, kinds in found.items()}


_SAMPLE_MONTHS = _sample_months()


def _some_day_matches(days: set, months: set, weekdays: set, day_and: bool) -> bool:
    probe = CronSim.__new__(CronSim)
    probe.days, probe.weekdays, probe.day_and = days, weekdays, day_and
    for month in sorted(months):
        for year, _ in _SAMPLE_MONTHS[month]:
            for day in range(1, calendar.monthrange(year, month)[1] + 1):
                if probe.match_day(date(year, month, day)):
                    return True
    return False


def _never_fires(expr: str, fields: list[str]) -> ScheduleError:
    dom, month, dow = fields[2], fields[3], fields[4]
    where = "" if month == "*" else f" in month {month!r}"
    if dom != "*" and dow != "*" and (dom.startswith("*") or dow.startswith("*")):
        either = f"day-of-month {'1-31' + dom[1:]!r}" if dom.startswith("*") else f"day-of-week {'0-7' + dow[1:]!r}"
        return ScheduleError(
            f"Cron expression {expr!r} never fires: no day is both day-of-month {dom!r} and day-of-week "
            f"{dow!r}{where} (a day field starting with * makes both day fields apply). Write {either} "
            "to fire on either, or choose days that meet."
        )
    if dow == "*":
        return ScheduleError(
            f"Cron expression {expr!r} never fires: day-of-month {dom!r} does not occur{where}. "
            "Write a day every chosen month has, or L for the last day of the month."
        )
    return ScheduleError(
        f"Cron expression {expr!r} never fires: no day matches day-of-month {dom!r} and day-of-week {dow!r}{where}."
    )


def _too_long(expr: str) -> ScheduleError:
    return ScheduleError(f"The cron expression has {len(expr)} characters; at most {MAX_CRON_LENGTH} are allowed.")


@dataclass(frozen=True)
class _Compiled:
    expanded: str  # cronsim's spelling, H replaced
    elapsed: bool  # minute or hour starts with *: follows elapsed time
    template: CronSim | None  # parsed once, each evaluation copies it; None: it never fires


def _compile_uncached(expr: str, seed: str | None, strict: bool) -> _Compiled:
    if not isinstance(expr, str):
        raise ScheduleError("The cron expression must be a string.")
    if len(expr) > MAX_CRON_LENGTH:
        raise _too_long(expr)
    fields = expr.split()
    if len(fields) != 5:
        shown = expr if len(expr) <= 60 else expr[:60] + "..."
        raise ScheduleError(
            f"Cron expression {shown!r} must have 5 fields (minute hour day-of-month month day-of-week), "
            f"not {len(fields)}."
        )
    parsed = [_parse_field(expr, i, field, seed, strict) for i, field in enumerate(fields)]
    expanded = " ".join(text for text, _ in parsed)
    translated = expanded.split()
    day_and = translated[2].startswith("*") or translated[4].startswith("*")
    if not _some_day_matches(parsed[2][1], parsed[3][1], parsed[4][1], day_and):
        if strict:
            raise _never_fires(expr, fields)
        return _Compiled(expanded, False, None)
    try:
        template = CronSim(expanded, _LOCAL_EPOCH)
    except (CronSimError, ValueError, IndexError, AssertionError) as exc:
        raise ScheduleError(f"Invalid cron expression {expr!r}: {exc}.") from None
    elapsed = fields[0].startswith("*") or fields[1].startswith("*")
    return _Compiled(expanded, elapsed, template)


@lru_cache(maxsize=4096)
def _compile_plain(expr: str, strict: bool) -> _Compiled | None:
    """The compiled expression, or None when it uses H (then the seed matters)."""
    if not isinstance(expr, str):
        raise ScheduleError("The cron expression must be a string.")
    if len(expr) > MAX_CRON_LENGTH:
        raise _too_long(expr)
    expr = _normalise(expr)
    if "H" in expr.upper().replace("THU", ""):
        return None
    return _compile_uncached(expr, None, strict)


@lru_cache(maxsize=65536)
def _compile_seeded(expr: str, seed: str | None, strict: bool) -> _Compiled:
    return _compile_uncached(_normalise(expr), seed, strict)


def _compile(expr: str, seed: str | None, *, strict: bool = False) -> _Compiled:
    """Raises ScheduleError. Without H, one cache entry serves every job that shares the expression.

    ``strict`` is validation, for what people write now; evaluation is lenient
    to what was stored before: a step after L is ignored (as it always was) and
    an expression that never fires has no fires instead of an error.
    """
    if not isinstance(expr, str):
        raise ScheduleError("The cron expression must be a string.")
    compiled = _compile_plain(expr, strict)
    return compiled if compiled is not None else _compile_seeded(expr, seed, strict)


def minutes_per_hour(expr: str, *, seed: str | None = None) -> int:
    """How many minutes of an hour the expression can fire in (0: it never fires). Raises
    ScheduleError. In UTC no hour holds more fires than this, so a caller counting fires per hour
    can stop here when this is small (the change-request list does, for 50 rows a page)."""
    template = _compile(expr, seed).template
    return len(template.minutes) if template is not None else 0


def _normalise(expr: str) -> str:
    return " ".join(expr.split()) if isinstance(expr, str) else expr


def validate_cron(expr: str, *, seed: str | None = "validation") -> str:
    """Return the normalised expression or raise ScheduleError with the reason.

    Validation of a definition passes a placeholder seed: H is fine in a job's
    definition; only evaluating H without a job is an error.
    """
    if not isinstance(expr, str):
        raise ScheduleError("The cron expression must be a string.")
    if len(expr) > MAX_CRON_LENGTH:
        raise _too_long(expr)
    normalised = _normalise(expr)
    _compile(normalised, seed, strict=True)
    return normalised


def validate_policy(gap: str, overlap: str) -> None:
    if gap not in GAP_POLICIES:
        raise ScheduleError(f"gap must be one of {', '.join(GAP_POLICIES)}, not {gap!r}.", "gap")
    if overlap not in OVERLAP_POLICIES:
        raise ScheduleError(f"overlap must be one of {', '.join(OVERLAP_POLICIES)}, not {overlap!r}.", "overlap")


@dataclass(frozen=True)
class Fire:
    """One fire instant (UTC) and, when daylight saving shaped it, why."""

    at: datetime
    note: str = ""


_NORMAL, _GAP, _OVERLAP = 0, 1, 2


def _offset(local: datetime) -> timedelta:
    """The UTC offset of a time in a zone (a ZoneInfo always has one)."""
    offset = local.utcoffset()
    assert offset is not None
    return offset


def _classify(naive: datetime, tz: ZoneInfo) -> int:
    """Whether a local time is normal, inside a gap (does not exist) or inside an overlap (exists twice)."""
    before = _offset(naive.replace(tzinfo=tz, fold=0))
    after = _offset(naive.replace(tzinfo=tz, fold=1))
    if before == after:
        return _NORMAL
    # Clocks moving forward leave a gap, moving back repeat an interval.
    return _GAP if before < after else _OVERLAP


def _gap_end(naive: datetime, tz: ZoneInfo) -> datetime:
    """The first real local minute after the gap ``naive`` falls into, as a UTC instant."""
    probe = naive.replace(second=0)
    while _classify(probe, tz) == _GAP:
        probe += _MINUTE
    return probe.replace(tzinfo=tz).astimezone(UTC)


def _hm(naive: datetime) -> str:
    return naive.strftime("%H:%M")


def _lookback(after: datetime, offset: timedelta, tz: ZoneInfo) -> timedelta:
    """How far before ``after`` (on the local clock) a match can still be placed after it.

    Only the second pass of a repeated interval can: around a transition that
    sets the clocks back by D, local times up to D before now's come again.
    ``offset`` is the zone's offset at ``after``.
    """
    near = (offset, _offset((after - _NEAR).astimezone(tz)), _offset((after + _NEAR).astimezone(tz)))
    back = max(near) - min(near)
    if after < _WIDE_UNTIL:
        # Clocks set back by more than _NEAR at once: Pacific/Kwajalein 1969, Antarctica/Vostok 1994.
        wide = (*near, _offset((after - _FAR).astimezone(tz)), _offset((after + _FAR).astimezone(tz)))
        back = max(back, max(wide) - min(wide))
    return back


def _placements(naive: datetime, tz: ZoneInfo, gap: str, overlap: str) -> list[tuple[datetime, str]]:
    """Where a local wall-clock match lands on the time line (UTC), earliest first, with its note."""
    first = _offset(naive.replace(tzinfo=tz, fold=0))
    second = _offset(naive.replace(tzinfo=tz, fold=1))
    if first == second:
        return [((naive - first).replace(tzinfo=UTC), "")]
    if first < second:  # a gap: the local time does not exist
        if gap == "skip":
            return []
        return [(_gap_end(naive, tz), f"shifted: {_hm(naive)} local does not exist (clocks jump forward)")]
    placed = [((naive - first).replace(tzinfo=UTC), f"repeated hour: first pass of {_hm(naive)} local")]
    if overlap == "twice":
        placed.append(((naive - second).replace(tzinfo=UTC), f"repeated hour: second pass of {_hm(naive)} local"))
    return placed


def _fires(compiled: _Compiled, tz: ZoneInfo, after: datetime, gap: str, overlap: str) -> Iterator[Fire]:
    """Local wall-clock matches placed on the time line, in order; they end where the calendar ends.

    Elapsed-time schedules place every real instant whose local clock matches
    (none in a gap, both passes of a repeated interval): the placement of
    ``gap=skip, overlap=twice``. Wall-clock schedules follow the job's policies.
    """
    if compiled.template is None:
        return
    if compiled.elapsed:
        gap, overlap = "skip", "twice"
    try:
        local = after.astimezone(tz)
        start = local.replace(tzinfo=None, second=0, microsecond=0)
    except OverflowError:
        if after.year > 1:
            return  # within hours of year 10000: nothing left to fire
        local, start = None, _LOCAL_MIN
    try:
        back = _lookback(after, _offset(local), tz) if local is not None else _FAR
    except OverflowError:
        back = _FAR  # within a day of either end of the calendar
    if back:
        start = start - back if start - _LOCAL_MIN > back else _LOCAL_MIN
    cron = CronSim.__new__(CronSim)
    cron.__dict__.update(compiled.template.__dict__)
    cron.dt = start
    pending: list[tuple[datetime, str]] = []
    last: datetime | None = None
    while True:
        try:
            naive = next(cron)
            candidates = _placements(naive, tz, gap, overlap)
        except StopIteration:
            break  # cronsim looks 50 years ahead
        except OverflowError:
            if cron.dt.year > 1:
                break  # past the end of the calendar
            continue  # before its start: not after ``after`` anyway
        if not candidates:
            continue
        floor = candidates[0][0]
        if not pending and len(candidates) == 1:
            # The common case: nothing waiting, one placement.
            if floor > after and (last is None or floor > last):
                last = floor
                yield Fire(*candidates[0])
            continue
        for candidate in candidates:
            heapq.heappush(pending, candidate)
        # Earliest placements never decrease along the local time line, so
        # everything up to this one is final and in order.
        while pending and pending[0][0] <= floor:
            instant, note = heapq.heappop(pending)
            # Several matches shifted to the same gap end fire once.
            if instant <= after or (last is not None and instant <= last):
                continue
            last = instant
            yield Fire(instant, note)
    while pending:
        instant, note = heapq.heappop(pending)
        if instant > after and (last is None or instant > last):
            last = instant
            yield Fire(instant, note)


def iter_fires(
    expr: str,
    tz_name: str,
    after: datetime,
    *,
    gap: str = "shift",
    overlap: str = "once",
    seed: str | None = None,
) -> Iterator[Fire]:
    """Every fire strictly after ``after`` (aware), in order, as UTC instants with DST notes.

    The fires end where the calendar ends (year 9999): an instant near it gives few or none.
    """
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    validate_policy(gap, overlap)
    tz = zone(tz_name)
    compiled = _compile(expr, seed)
    try:
        after = after.astimezone(UTC)
    except OverflowError:
        if after.year > 1:
            return
        after = _LOCAL_MIN.replace(tzinfo=UTC)
    yield from _fires(compiled, tz, after, gap, overlap)


def fire_identity(expr: str, seed: str | None = None) -> tuple[str, bool]:
    """What decides where an expression fires for a job (H resolved with its seed): two jobs whose
    identities, zones and policies are equal fire at the same instants (Insights expands them once)."""
    compiled = _compile(expr, seed)
    return compiled.expanded, compiled.elapsed


def next_n(
    expr: str,
    tz_name: str,
    after: datetime,
    count: int,
    *,
    gap: str = "shift",
    overlap: str = "once",
    seed: str | None = None,
) -> list[datetime]:
    result: list[datetime] = []
    if count <= 0:
        return result
    for fire in iter_fires(expr, tz_name, after, gap=gap, overlap=overlap, seed=seed):
        result.append(fire.at)
        if len(result) >= count:
            break
    return result


def next_after(
    expr: str,
    tz_name: str,
    after: datetime,
    *,
    gap: str = "shift",
    overlap: str = "once",
    seed: str | None = None,
) -> datetime | None:
    """The first fire instant strictly after ``after`` (aware), in UTC; None if it never fires again."""
    for fire in iter_fires(expr, tz_name, after, gap=gap, overlap=overlap, seed=seed):
        return fire.at
    return None


def transitions(tz_name: str, start: datetime, end: datetime) -> list[tuple[datetime, timedelta, timedelta]]:
    """UTC offset changes of a zone in [start, end): (instant, offset before, offset after)."""
    tz = zone(tz_name)
    found = []
    step = timedelta(hours=1)
    probe = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    before = _offset(probe.astimezone(tz))
    while probe < end:
        nxt = probe + step
        offset = _offset(nxt.astimezone(tz))
        if offset != before:
            # Narrow to the minute: some zones change on the half hour.
            low = probe
            while _offset(low.astimezone(tz)) == before:
                low += _MINUTE
            found.append((low, before, offset))
            before = offset
        probe = nxt
    return found
