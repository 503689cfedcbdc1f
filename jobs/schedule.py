"""Schedule math: the only module that talks to the cron evaluator.

Everything outside this module passes and receives aware UTC datetimes; a
job's own IANA time zone is used only here, to evaluate its cron expression on
the local wall clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError


class ScheduleError(ValueError):
    """A cron expression or time zone that cannot be used."""


def zone(name: str) -> ZoneInfo:
    if not name or name not in _zone_names():
        raise ScheduleError(f"Unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"Unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'.") from None


_ZONES: set[str] | None = None


def _zone_names() -> set[str]:
    global _ZONES
    if _ZONES is None:
        _ZONES = available_timezones()
    return _ZONES


def validate_cron(expr: str) -> str:
    """Return the normalised expression or raise ScheduleError with the reason."""
    normalised = " ".join((expr or "").split())
    if len(normalised.split(" ")) != 5:
        raise ScheduleError(
            f"Cron expression {expr!r} must have 5 fields (minute hour day-of-month month day-of-week)."
        )
    try:
        CronSim(normalised, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ScheduleError(f"Invalid cron expression {expr!r}: {exc}") from None
    return normalised


def next_after(expr: str, tz_name: str, after: datetime) -> datetime:
    """The first fire instant strictly after ``after`` (aware), in UTC."""
    return next_n(expr, tz_name, after, 1)[0]


def next_n(expr: str, tz_name: str, after: datetime, count: int) -> list[datetime]:
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    tz = zone(tz_name)
    start = after.astimezone(tz).replace(second=0, microsecond=0)
    iterator = CronSim(validate_cron(expr), start)
    result: list[datetime] = []
    for local in iterator:
        instant = local.astimezone(UTC)
        if instant <= after:
            continue
        result.append(instant)
        if len(result) >= count:
            break
    return result


def isoz(instant: datetime) -> str:
    """UTC ISO 8601 with a Z, the one format used in APIs, logs and exports."""
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")
