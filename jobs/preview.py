"""Schedule previews for people deciding: the CLI, the API, the job page and change-request diffs.

Each entry gives the instant in UTC (ISO 8601 with Z), the same instant on the
job's local wall clock, a note when daylight saving shaped it or the UTC
offset changed since the entry before, and what the scheduler will do with it
(``decision``: fire / defer / skip, ``reason``, ``deferred_to``), decided by
jobs.firing exactly as the scheduler decides it: holidays, maintenance windows
(overlapping ones chained), allowed run windows. Concurrency depends on the runs
live at that time, so it is a note (``concurrency``), not a decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING, Any

from django.db import models
from django.utils import timezone

from . import firing, schedule

if TYPE_CHECKING:
    from .models import Job

MAX_COUNT = 1000
DEFAULT_COUNT = 10


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant that says its offset (Z or +hh:mm); a bare local time would be ambiguous."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise schedule.ScheduleError(
            f"Must be an ISO 8601 instant such as 2026-03-29T00:00:00Z, not {text!r}.", "after"
        ) from None
    if value.tzinfo is None:
        raise schedule.ScheduleError("Must include Z or a UTC offset, e.g. 2026-03-29T00:00:00Z.", "after")
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise schedule.ScheduleError(
            "Must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z in UTC.", "after"
        ) from None
    return value


def _offset(delta: timedelta | None) -> str:
    minutes = int((delta or timedelta()).total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def preview(
    cron: str,
    tz_name: str,
    *,
    after: datetime | None = None,
    count: int = DEFAULT_COUNT,
    gap: str = "shift",
    overlap: str = "once",
    seed: str | None = None,
    rules: firing.Rules | None = None,
    concurrency: str = "",
) -> list[dict[str, Any]]:
    """The next ``count`` fires as dicts: utc, local, offset, dst (a note or ""), decision, reason,
    deferred_to (UTC or None) and concurrency (a note). ``rules``: the job's calendars and windows
    (jobs.firing.load_rules); without them every fire is decided ``fire``. Raises ScheduleError."""
    if not 1 <= count <= MAX_COUNT:
        raise schedule.ScheduleError(f"count must be between 1 and {MAX_COUNT}.", "count")
    after = after or timezone.now()
    tz = schedule.validate_zone(tz_name)
    # What people preview is what they would write: refused as a definition would be (never fires, L/2).
    schedule.validate_cron(cron, seed=seed)
    try:
        previous = after.astimezone(tz).utcoffset()
    except OverflowError:  # within hours of either end of the calendar
        previous = None
    rules = rules or firing.Rules(timezone=tz_name)
    entries = []
    fires = schedule.iter_fires(cron, tz_name, after, gap=gap, overlap=overlap, seed=seed)
    for fire in islice(fires, count):
        decision = firing.decide(rules, fire.at)
        local = fire.at.astimezone(tz)
        offset = local.utcoffset()
        notes = [fire.note] if fire.note else []
        if previous is not None and offset != previous:
            notes.append(f"UTC offset changed from {_offset(previous)} to {_offset(offset)}")
        previous = offset
        entries.append(
            {
                "utc": schedule.isoz(fire.at),
                "local": local.replace(tzinfo=None).isoformat(sep=" ", timespec="minutes"),
                "zone": local.tzname() or tz_name,
                "offset": _offset(offset),
                "dst": "; ".join(notes),
                "decision": decision.action,
                "reason": decision.reason,
                "deferred_to": schedule.isoz(decision.deferred_to) if decision.deferred_to else None,
                "concurrency": concurrency,
                "cause": decision.cause,
                "windows": list(decision.windows),
            }
        )
    return entries


@dataclass
class ScheduleQuery:
    """What the CLI and the API preview: a cron and zone as asked, or filled in from a job."""

    cron: str | None
    tz: str | None
    gap: str | None
    overlap: str | None
    seed: str | None = None
    rules: firing.Rules | None = None
    concurrency: str = ""

    @classmethod
    def of(cls, job: Job | None, *, cron: str | None, tz: str | None, gap: str | None, overlap: str | None):
        """With ``job``, its schedule fills in what is not given, H is hashed from it, and its holiday
        calendar, allowed windows and maintenance windows decide each fire, as the scheduler does."""
        if job is None:
            return cls(cron, tz, gap, overlap)
        tz = tz or job.timezone
        definition = job.definition()
        rules = firing.load_rules(definition, tenant_id=job.tenant_id, environment_id=job.environment_id)
        rules.timezone = tz
        return cls(
            cron or job.cron,
            tz,
            gap or job.gap,
            overlap or job.overlap,
            seed=job.schedule_seed,
            rules=rules,
            concurrency=firing.concurrency_note(definition),
        )

    def preview(self, *, after: datetime | None, count: int) -> list[dict[str, Any]]:
        """The entries of ``preview``; raises ScheduleError. Callers check first that cron and tz are given."""
        return preview(
            self.cron or "",
            self.tz or "",
            after=after,
            count=count,
            gap=self.gap or "shift",
            overlap=self.overlap or "once",
            seed=self.seed,
            rules=self.rules,
            concurrency=self.concurrency,
        )


def preview_definition(
    definition: dict,
    *,
    tenant_id: Any,
    environment_id: Any,
    after: datetime | None = None,
    count: int = 5,
    windows: list | None = None,
    calendars: dict | None = None,
) -> list[dict[str, Any]]:
    """Preview a (possibly proposed) job definition in its tenant and environment, with the
    decisions the scheduler would take (its calendar, allowed windows, the maintenance windows);
    [] when it has no valid schedule. ``windows``: the tenant's maintenance windows, already loaded."""
    if not definition or not definition.get("cron"):
        return []
    rules = firing.load_rules(
        definition, tenant_id=tenant_id, environment_id=environment_id, windows=windows, calendars=calendars
    )
    try:
        return preview(
            definition["cron"],
            definition.get("timezone") or "UTC",
            after=after,
            count=count,
            gap=definition.get("gap") or "shift",
            overlap=definition.get("overlap") or "once",
            seed=schedule.job_seed(tenant_id, environment_id, definition.get("name", "")),
            rules=rules,
            concurrency=firing.concurrency_note(definition),
        )
    except schedule.ScheduleError:
        return []


# What changes when or whether a run happens (a preview's instants and decisions).
SCHEDULE_FIELDS = ("cron", "timezone", "gap", "overlap", "name", "windows", "window_policy", "holiday_calendar")


def compare_definitions(
    before: dict | None,
    after: dict | None,
    *,
    tenant_id: Any,
    environment_id: Any,
    now: datetime | None = None,
    count: int = 5,
) -> dict[str, Any] | None:
    """Next runs before vs after a change, row by row; None when the change does not touch the schedule."""
    before = before or {}
    after = after or {}
    if all(before.get(f) == after.get(f) for f in SCHEDULE_FIELDS):
        return None
    now = now or timezone.now()
    where = {"tenant_id": tenant_id, "environment_id": environment_id, "after": now, "count": count}
    windows = _windows(tenant_id, environment_id)
    old = preview_definition(before, windows=windows, **where)
    new = preview_definition(after, windows=windows, **where)
    rows = []
    for i in range(max(len(old), len(new))):
        left = old[i] if i < len(old) else None
        right = new[i] if i < len(new) else None
        same = bool(left and right and all(left[k] == right[k] for k in ("utc", "decision", "reason")))
        rows.append({"before": left, "after": right, "same": same})
    return {"rows": rows, "before_count": len(old), "after_count": len(new)}


def window_warnings(
    definition: dict | None,
    *,
    tenant_id: Any,
    environment_id: Any,
    now: datetime | None = None,
    count: int = 20,
    windows: list | None = None,
    calendars: dict | None = None,
) -> list[str]:
    """Warnings for reviewers: upcoming runs of a proposed schedule that fall in a maintenance window.

    ``windows``: the tenant's maintenance windows, already loaded (lists of many requests load
    them once); those of other environments are ignored. ``calendars``: {(tenant id, name): dates},
    already loaded; otherwise the holiday calendar the definition names is read."""
    if not definition or not definition.get("cron"):
        return []
    if windows is None:
        windows = _windows(tenant_id, environment_id)
    if not firing.applicable(windows, tenant_id, environment_id):
        return []
    entries = preview_definition(
        definition,
        tenant_id=tenant_id,
        environment_id=environment_id,
        after=now,
        count=count,
        windows=windows,
        calendars=calendars,
    )
    warnings = []
    for entry in entries:
        if entry["cause"] != firing.MAINTENANCE:
            continue
        names = ", ".join(f"'{name}'" for name in entry["windows"])
        plural = "s" if len(entry["windows"]) > 1 else ""
        outcome = "skipped" if entry["decision"] == firing.SKIP else f"deferred to {entry['deferred_to']}"
        warnings.append(
            f"The run at {entry['utc']} ({entry['local']} {entry['zone']}) falls in maintenance window{plural} "
            f"{names} and will be {outcome}."
        )
    return warnings


def _windows(tenant_id: Any, environment_id: Any) -> list:
    from .models import MaintenanceWindow

    return list(
        MaintenanceWindow.objects.filter(tenant_id=tenant_id).filter(
            models.Q(environment__isnull=True) | models.Q(environment_id=environment_id)
        )
    )
