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
  of a repeated hour, nothing in a skipped one);
* any other schedule follows the wall clock: a local time that does not exist
  fires at the end of the gap (``gap=shift``, several such matches once) or
  not at all (``gap=skip``); a local time that exists twice fires at its first
  occurrence (``overlap=once``) or at both (``overlap=twice``).

``H`` (as in Jenkins) is replaced by a value hashed from a stable per-job seed
so that thousands of ``H 2 * * *`` jobs do not all start in the same second.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

GAP_POLICIES = ("shift", "skip")
OVERLAP_POLICIES = ("once", "twice")

FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
# The range H draws from per field; day-of-month stops at 28 so every month has the day.
_H_RANGES = ((0, 59), (0, 23), (1, 28), (1, 12), (0, 6))
_H_TOKEN = re.compile(r"^H(?:\((\d+)-(\d+)\))?(?:/(\d+))?$")
_MINUTE = timedelta(minutes=1)
# Longer than any daylight-saving shift in the tz database.
_NEAR = timedelta(hours=3)


class ScheduleError(ValueError):
    """A cron expression, time zone or policy that cannot be used; ``field`` names which."""

    def __init__(self, message: str, field: str = "cron") -> None:
        super().__init__(message)
        self.field = field


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name or name not in _zone_names():
        raise ScheduleError(
            f"Unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'.", "timezone"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"Unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'.", "timezone"
        ) from None


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def job_seed(tenant_id: object, environment_id: object, name: str) -> str:
    """The stable seed H hashes: a job keeps its stagger as long as it keeps its name and place."""
    return f"{tenant_id}/{environment_id}/{name}"


def _hash(seed: str, field_index: int) -> int:
    digest = hashlib.sha256(f"{seed}#{field_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _expand_h(field: str, index: int, seed: str | None, expr: str) -> str:
    if "H" not in field.upper():
        return field
    terms = []
    for term in field.split(","):
        match = _H_TOKEN.match(term.upper())
        if not match:
            if "H" in term.upper():
                raise ScheduleError(
                    f"Invalid cron expression {expr!r}: bad {FIELD_NAMES[index]} {term!r} "
                    "(H is written H, H/step, H(low-high) or H(low-high)/step)."
                )
            terms.append(term)
            continue
        if seed is None:
            raise ScheduleError(
                f"Cron expression {expr!r} uses H, which is hashed from the job's identity: "
                "preview it for a job (the job's id) to see its times."
            )
        low, high = _H_RANGES[index]
        if match.group(1) is not None:
            low, high = int(match.group(1)), int(match.group(2))
            full_low, full_high = _H_RANGES[index]
            if index == 2:
                full_high = 31
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
            terms.append(f"{offset}-{high}/{step}")
        else:
            terms.append(str(low + value % (high - low + 1)))
    return ",".join(terms)


@lru_cache(maxsize=65536)
def _compile(expr: str, seed: str | None) -> tuple[str, bool]:
    """(expression with H expanded, follows elapsed time?). Raises ScheduleError."""
    if not isinstance(expr, str):
        raise ScheduleError("The cron expression must be a string.")
    fields = expr.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"Cron expression {expr!r} must have 5 fields (minute hour day-of-month month day-of-week), "
            f"not {len(fields)}."
        )
    expanded = " ".join(_expand_h(field, i, seed, expr) for i, field in enumerate(fields))
    try:
        CronSim(expanded, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ScheduleError(f"Invalid cron expression {expr!r}: {exc}.") from None
    except (ValueError, IndexError, AssertionError):
        raise ScheduleError(f"Invalid cron expression {expr!r}.") from None
    elapsed = fields[0].startswith("*") or fields[1].startswith("*")
    return expanded, elapsed


def validate_cron(expr: str, *, seed: str | None = "validation") -> str:
    """Return the normalised expression or raise ScheduleError with the reason.

    Validation of a definition passes a placeholder seed: H is fine in a job's
    definition; only evaluating H without a job is an error.
    """
    normalised = " ".join((expr or "").split()) if isinstance(expr, str) else expr
    _compile(normalised, seed)
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


def _classify(naive: datetime, tz: ZoneInfo) -> int:
    """Whether a local time is normal, inside a gap (does not exist) or inside an overlap (exists twice)."""
    before = naive.replace(tzinfo=tz, fold=0).utcoffset()
    after = naive.replace(tzinfo=tz, fold=1).utcoffset()
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


def _wall_clock(expanded: str, tz: ZoneInfo, after: datetime, gap: str, overlap: str) -> Iterator[Fire]:
    """Fixed-hour schedules: iterate local wall-clock matches, then place each on the time line."""
    local = after.astimezone(tz)
    start = local.replace(tzinfo=None, second=0, microsecond=0)
    if (after - _NEAR).astimezone(tz).utcoffset() != (after + _NEAR).astimezone(tz).utcoffset():
        # Near a transition a local time before ``after`` may be placed after
        # it (second pass, gap end), so start early and filter.
        start -= _NEAR
    pending: list[tuple[datetime, str]] = []
    last: datetime | None = None
    for naive in CronSim(expanded, start):
        kind = _classify(naive, tz)
        if kind == _GAP:
            if gap == "skip":
                continue
            candidates = [(_gap_end(naive, tz), f"shifted: {_hm(naive)} local does not exist (clocks jump forward)")]
        elif kind == _OVERLAP:
            first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
            candidates = [(first, f"repeated hour: first pass of {_hm(naive)} local")]
            if overlap == "twice":
                second = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
                candidates.append((second, f"repeated hour: second pass of {_hm(naive)} local"))
        else:
            candidates = [(naive.replace(tzinfo=tz).astimezone(UTC), "")]
        floor = candidates[0][0]
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


def _elapsed(expanded: str, tz: ZoneInfo, after: datetime) -> Iterator[Fire]:
    """Schedules with ``*`` in minute or hour: each real instant whose local clock matches."""
    start = after.astimezone(tz).replace(second=0, microsecond=0)
    last: datetime | None = None
    for local in CronSim(expanded, start):
        instant = local.astimezone(UTC)
        if instant <= after or (last is not None and instant <= last):
            continue
        last = instant
        note = ""
        naive = local.replace(tzinfo=None)
        if _classify(naive, tz) == _OVERLAP:
            which = "first" if instant == naive.replace(tzinfo=tz, fold=0).astimezone(UTC) else "second"
            note = f"repeated hour: {which} pass of {_hm(naive)} local"
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
    """Every fire strictly after ``after`` (aware), in order, as UTC instants with DST notes."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    validate_policy(gap, overlap)
    tz = zone(tz_name)
    expanded, elapsed = _compile(" ".join(expr.split()), seed)
    after = after.astimezone(UTC)
    if elapsed or tz_name == "UTC":
        yield from _elapsed(expanded, tz, after)
    else:
        yield from _wall_clock(expanded, tz, after, gap, overlap)


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
    found = next_n(expr, tz_name, after, 1, gap=gap, overlap=overlap, seed=seed)
    return found[0] if found else None


def transitions(tz_name: str, start: datetime, end: datetime) -> list[tuple[datetime, timedelta, timedelta]]:
    """UTC offset changes of a zone in [start, end): (instant, offset before, offset after)."""
    tz = zone(tz_name)
    found = []
    step = timedelta(hours=1)
    probe = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    before = probe.astimezone(tz).utcoffset()
    while probe < end:
        nxt = probe + step
        offset = nxt.astimezone(tz).utcoffset()
        if offset != before:
            # Narrow to the minute: some zones change on the half hour.
            low = probe
            while low.astimezone(tz).utcoffset() == before:
                low += _MINUTE
            found.append((low, before, offset))
            before = offset
        probe = nxt
    return found


def isoz(instant: datetime) -> str:
    """UTC ISO 8601 with a Z, the one format used in APIs, logs and exports."""
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")
