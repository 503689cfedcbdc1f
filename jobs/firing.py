"""When does this job fire: the one place that turns a schedule plus its calendars, windows and
policies into decisions (fire at T / defer to T' with the reason / skip with the reason).

Pure functions, no writes: the scheduler (jobs.scheduler_constraints.apply_constraints) decides each due slot
here, and the previews (CLI, API, job page, change-request diff) and the change warnings decide
each upcoming slot here, so they give the same answers. What only the scheduler can know, the
runs that are live right now (concurrency, pools, catch-up turns), stays in the scheduler; a
preview carries it as an annotation (``concurrency_note``), not as a decision.

Order, as the scheduler has always applied it: a holiday of the job's calendar skips the slot;
else the maintenance windows covering it (back-to-back and overlapping ones chained, at most
MAX_WINDOW_CHAIN) defer it to their end, or skip it when any of them says ``skip``; else outside
the job's allowed run windows it is deferred to the next opening, or skipped (``window_policy``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import schedule

FIRE, DEFER, SKIP = "fire", "defer", "skip"
HOLIDAY, MAINTENANCE, ALLOWED_WINDOWS = "holiday", "maintenance", "allowed_windows"
# Back-to-back windows chain; past this many the run is skipped rather than deferred forever.
MAX_WINDOW_CHAIN = 20


@dataclass(frozen=True)
class Decision:
    """What happens to the slot at ``slot``: FIRE, DEFER (to ``deferred_to``) or SKIP, with why."""

    slot: datetime
    action: str
    reason: str = ""
    deferred_to: datetime | None = None
    # What decided it: HOLIDAY, MAINTENANCE (with the windows' names) or ALLOWED_WINDOWS; "" when it fires.
    cause: str = ""
    windows: tuple[str, ...] = ()


@dataclass
class Rules:
    """Everything besides the cron that decides a slot: the job's zone, holiday dates (ISO local
    dates of its calendar), allowed run windows and policy, and the maintenance windows that apply
    to its tenant and environment (objects with ``name``, ``policy`` and ``covering(instant)``)."""

    timezone: str = "UTC"
    holiday_calendar: str = ""
    holidays: frozenset[str] | set[str] = frozenset()
    windows: list[dict] = field(default_factory=list)
    window_policy: str = "defer"
    maintenance: list[Any] = field(default_factory=list)


def rules_for(definition: dict, *, maintenance: Iterable[Any] = (), holidays: Iterable[str] = ()) -> Rules:
    """The rules of a job definition (a live job's ``definition()`` or a proposed one)."""
    return Rules(
        timezone=definition.get("timezone") or "UTC",
        holiday_calendar=definition.get("holiday_calendar") or "",
        holidays=holidays if isinstance(holidays, (set, frozenset)) else frozenset(holidays),
        windows=list(definition.get("windows") or []),
        window_policy=definition.get("window_policy") or "defer",
        maintenance=list(maintenance),
    )


def applicable(windows: Iterable[Any], tenant_id: Any, environment_id: Any) -> list[Any]:
    """The maintenance windows that concern a job of this tenant and environment."""
    return [w for w in windows if w.tenant_id == tenant_id and w.environment_id in (None, environment_id)]


def load_rules(
    definition: dict,
    *,
    tenant_id: Any,
    environment_id: Any,
    windows: list | None = None,
    calendars: dict | None = None,
) -> Rules:
    """Rules for a preview, read from the database: the tenant's maintenance windows and the holiday
    calendar the definition names, unless given already loaded (``windows``: the tenant's windows;
    ``calendars``: {(tenant id, name): dates}). At most two queries."""
    from django.db.models import Q

    from .models import HolidayCalendar, MaintenanceWindow

    if windows is None:
        windows = list(
            MaintenanceWindow.objects.filter(tenant_id=tenant_id).filter(
                Q(environment__isnull=True) | Q(environment_id=environment_id)
            )
        )
    holidays: set[str] = set()
    name = definition.get("holiday_calendar")
    if name and calendars is not None:
        holidays = set(calendars.get((tenant_id, name), ()))
    elif name:
        calendar = HolidayCalendar.objects.filter(tenant_id=tenant_id, name=name).only("dates").first()
        holidays = set(calendar.dates) if calendar else set()
    return rules_for(definition, maintenance=applicable(windows, tenant_id, environment_id), holidays=holidays)


def maintenance_end(windows: list[Any], instant: datetime) -> tuple[datetime, list[Any]] | None:
    """The end of the maintenance windows covering ``instant`` (back-to-back and overlapping ones
    chained) and those windows, or None."""
    hit: list[Any] = []
    end = instant
    for _ in range(MAX_WINDOW_CHAIN):
        spans = [(w, w.covering(end)) for w in windows]
        spans = [(w, span) for w, span in spans if span]
        if not spans:
            break
        hit.extend(w for w, _ in spans if w not in hit)
        end = max(span[1] for _, span in spans)
    return (end, hit) if hit else None


def allowed_window(rules: Rules, instant: datetime) -> tuple[bool, datetime | None]:
    """(inside an allowed run window?, the next opening after ``instant`` if not)."""
    openings = []
    for window in rules.windows:
        length = timedelta(minutes=window["duration_minutes"])
        tz = window.get("timezone") or rules.timezone
        opened = schedule.next_after(window["cron"], tz, instant - length)
        if opened is not None and opened <= instant:
            return True, None
        following = schedule.next_after(window["cron"], tz, instant)
        if following is not None:
            openings.append(following)
    return False, min(openings) if openings else None


def decide(rules: Rules, slot: datetime, at: datetime | None = None) -> Decision:
    """The decision for the slot at ``slot`` when it is examined at ``at`` (default: on time).

    A late slot (the scheduler was down) is checked against the windows at ``at``, when it would
    start, and against the holidays of its own local date."""
    at = slot if at is None else max(slot, at)
    if rules.holiday_calendar:
        local_day = slot.astimezone(schedule.zone(rules.timezone)).date().isoformat()
        if local_day in rules.holidays:
            reason = f"Skipped: {local_day} is a holiday in calendar '{rules.holiday_calendar}'."
            return Decision(slot, SKIP, reason, cause=HOLIDAY)
    blocked = maintenance_end(rules.maintenance, at) if rules.maintenance else None
    if blocked:
        until, windows = blocked
        named = tuple(w.name for w in windows)
        names = ", ".join(f"'{name}'" for name in named)
        if any(w.policy == "skip" for w in windows):
            reason = f"Skipped: inside maintenance window {names} (until {schedule.isoz(until)})."
            return Decision(slot, SKIP, reason, cause=MAINTENANCE, windows=named)
        reason = f"Deferred to {schedule.isoz(until)}: maintenance window {names}."
        return Decision(slot, DEFER, reason, until, cause=MAINTENANCE, windows=named)
    if rules.windows:
        inside, opening = allowed_window(rules, at)
        if not inside:
            if rules.window_policy == "skip" or opening is None:
                return Decision(slot, SKIP, "Skipped: outside the job's allowed run windows.", cause=ALLOWED_WINDOWS)
            reason = f"Deferred to {schedule.isoz(opening)}: outside the job's allowed run windows."
            return Decision(slot, DEFER, reason, opening, cause=ALLOWED_WINDOWS)
    return Decision(slot, FIRE)


def load_calendars(pairs: Iterable[tuple[Any, str]]) -> dict[tuple[Any, str], list[str]]:
    """{(tenant id, name): dates} of the named holiday calendars, in one query (none when no names)."""
    from django.db.models import Q

    from .models import HolidayCalendar

    pairs = {(tenant_id, name) for tenant_id, name in pairs if name}
    if not pairs:
        return {}
    match = Q()
    for tenant_id, name in pairs:
        match |= Q(tenant_id=tenant_id, name=name)
    return {(c.tenant_id, c.name): list(c.dates) for c in HolidayCalendar.objects.filter(match)}


def concurrency_note(definition: dict) -> str:
    """What the concurrency policy will do, which a preview cannot decide (it depends on live runs)."""
    policy = definition.get("concurrency") or "forbid"
    limit = definition.get("max_active_runs") or 0
    if policy == "forbid":
        note = "concurrency=forbid: skipped if the previous run is still active"
    elif policy == "replace":
        note = "concurrency=replace: cancels the previous run if it is still active"
    else:
        note = "concurrency=allow: runs beside an active previous run"
    if limit and policy != "replace":
        note += f"; skipped while {limit} run(s) are active"
    return note


def upcoming(
    definition: dict, rules: Rules, *, after: datetime, seed: str | None = None
) -> Iterator[tuple[schedule.Fire, Decision]]:
    """Each upcoming fire of the definition's cron after ``after`` with its decision, in order."""
    for fire in schedule.iter_fires(
        definition["cron"],
        definition.get("timezone") or "UTC",
        after,
        gap=definition.get("gap") or "shift",
        overlap=definition.get("overlap") or "once",
        seed=seed,
    ):
        yield fire, decide(rules, fire.at)
