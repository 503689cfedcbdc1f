"""Thundering herds (issue 21, item 2): how many runs start at each minute of the day (UTC, the
average over the next HORIZON_DAYS days of the firing module's expansion), the minutes where more
than a threshold start, and for each job starting there an ``H`` rewrite of its minute field
(docs/scheduling.md: H is hashed from the job's identity, so jobs that all say ``0 2 * * *`` spread
over the hour once they say ``H 2 * * *``) with the curve the rewrites would give.

The rewritten schedules are expanded through the same firing module (windows, holidays and DST
still apply), once, when the forecast is computed: a page only adds and subtracts.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import datetime
from typing import Any

from governance.models import Tenant
from jobs import schedule
from jobs.models import Job

from .common import HERD_THRESHOLD, InsightScope, parse_param, scale_ticks, store
from .models import InsightCache

KIND = "herds"
# The page for a tenant-wide reader at the default threshold, worked out when the analysis is.
VIEW_KIND = "herds_view"
# The page at the threshold asked last, when it is not the default (one entry per tenant).
ASKED_VIEW_KIND = "herds_view_asked"
HORIZON_DAYS = 30
# The page lists the busiest hotspots and the first jobs of each (the CSV and the API all).
PAGE_HOTSPOTS = 12
PAGE_JOBS = 25
MINUTES = 1440
DEFAULT_THRESHOLD = HERD_THRESHOLD.default
# Minutes where at most this many runs start per day are never hotspots (a threshold is at least this).
MIN_THRESHOLD = HERD_THRESHOLD.low
_STEP = re.compile(r"^(?:\*|0|0-59)/([0-9]{1,2})$")


def suggest_h(cron: str) -> str | None:
    """The cron with its minute field hashed: a fixed minute becomes ``H``, ``*/N`` (or ``0/N``)
    becomes ``H/N``; None when the minute is already hashed or is a list or range to keep."""
    fields = cron.split()
    if len(fields) != 5 or "H" in fields[0].upper():
        return None
    minute = fields[0]
    if minute.isdigit() and 0 <= int(minute) <= 59:
        fields[0] = "H"
    elif (match := _STEP.match(minute)) and int(match.group(1)) > 1:
        fields[0] = f"H/{int(match.group(1))}"
    else:
        return None
    return " ".join(fields)


def minute_of(day_seconds: int, offset: int) -> int:
    return ((day_seconds + offset) % 86400) // 60


def compute(
    tenant: Tenant,
    jobs: list[Job],
    info: dict[int, dict],
    starts: dict[int, list[int]],
    expander: Any,
    *,
    now: datetime | None = None,
) -> InsightCache:
    """Cache the herd analysis of the tenant from the forecast's expansion (``starts``: each job's
    fire offsets from ``expander.start``). Only the first HORIZON_DAYS days are counted.

    Jobs that fire alike share a *pattern* (starts per minute of the day over the horizon); each job
    on a crowded minute (more than MIN_THRESHOLD starts a day) is stored with its pattern now and
    the pattern of its suggested rewrite."""
    began = time.perf_counter()
    start = expander.start
    day_seconds = start.hour * 3600 + start.minute * 60
    limit = HORIZON_DAYS * 86400
    patterns: list[dict[str, int]] = []
    pattern_of: dict[int, int] = {}  # id(offsets list) -> pattern index
    counters: list[Counter[int]] = []

    def pattern(offsets: list[int]) -> int:
        index = pattern_of.get(id(offsets))
        if index is None:
            counts = Counter(minute_of(day_seconds, o) for o in offsets if o < limit)
            index = pattern_of[id(offsets)] = len(patterns)
            patterns.append({str(m): c for m, c in sorted(counts.items())})
            counters.append(counts)
        return index

    total: Counter[int] = Counter()
    groups: dict[str, Counter[int]] = {}
    used: dict[int, int] = {}
    for job in jobs:
        offsets = starts.get(job.pk)
        if not offsets:
            continue
        index = used[job.pk] = pattern(offsets)
        total.update(counters[index])
        groups.setdefault(f"{job.environment_id}|{job.team_id}", Counter()).update(counters[index])
    crowded = {minute for minute, count in total.items() if count / HORIZON_DAYS > MIN_THRESHOLD}
    rows: dict[str, list] = {}
    for job in jobs:
        if job.pk not in used or not crowded.intersection(counters[used[job.pk]]):
            continue
        index = used[job.pk]
        suggested = suggest_h(job.cron)
        after = -1
        if suggested:
            try:
                after = pattern(expander.offsets(job, {**expander.definition(job), "cron": suggested}))
            except schedule.ScheduleError:
                suggested = None
        rows[str(job.pk)] = [info[job.pk]["name"], job.team_id, job.environment_id, job.cron, suggested, index, after]
    data = {
        "start": schedule.isoz(start),
        "days": HORIZON_DAYS,
        "groups": {key: {str(m): c for m, c in counts.items()} for key, counts in groups.items()},
        "patterns": patterns,
        # job id -> [name, team, environment, cron, suggested cron or None, pattern now, pattern after or -1]
        "jobs": rows,
    }
    entry = store(tenant, KIND, HORIZON_DAYS, params={"horizon_days": HORIZON_DAYS}, data=data, started=began)
    store_view(entry)
    return entry


VIEW_PARAMS = {"horizon_days": HORIZON_DAYS, "threshold": DEFAULT_THRESHOLD}


def store_view(entry: InsightCache) -> InsightCache:
    """Cache the page as a tenant-wide reader sees it at the default threshold (what most readers
    ask): the hotspots listed, the heatmap's paths and the curves, a few kilobytes, so the page
    neither reads the per-job analysis nor works it through."""
    began = time.perf_counter()
    view = page(entry, InsightScope(None, entry.tenant, True), DEFAULT_THRESHOLD)
    view["computed_at"] = schedule.isoz(entry.computed_at)
    return store(entry.tenant, VIEW_KIND, HORIZON_DAYS, params=VIEW_PARAMS, data=view, started=began)


def analysed_at(tenant) -> str:
    """When the tenant's analysis was computed ("" if never): one indexed read of one column, so a
    cached view can tell it was drawn from the current analysis without loading it."""
    at = (
        InsightCache.objects.filter(tenant=tenant, kind=KIND, horizon_days=HORIZON_DAYS)
        .values_list("computed_at", flat=True)
        .first()
    )
    return schedule.isoz(at) if at else ""


def asked_view_params(threshold: float, analysis: str) -> dict:
    return {**VIEW_PARAMS, "threshold": threshold, "analysis": analysis}


def store_asked_view(entry: InsightCache, threshold: float) -> InsightCache:
    """Cache the page at a threshold a reader asked for (the last one asked, per tenant): readers
    who keep a threshold of their own read it as cheaply as the default one."""
    began = time.perf_counter()
    view = page(entry, InsightScope(None, entry.tenant, True), threshold)
    view["computed_at"] = schedule.isoz(entry.computed_at)
    params = asked_view_params(threshold, schedule.isoz(entry.computed_at))
    return store(entry.tenant, ASKED_VIEW_KIND, HORIZON_DAYS, params=params, data=view, started=began)


def page(entry: InsightCache, scope: InsightScope, threshold: float) -> dict:
    """What the page shows: the busiest PAGE_HOTSPOTS hotspots with their first PAGE_JOBS jobs, the
    heatmap and the curves (not the curves' numbers: the API and the CSV have them)."""
    found = analyse(entry, scope, threshold, max_jobs=PAGE_JOBS, max_hotspots=PAGE_HOTSPOTS)
    busiest = sorted(found["hotspots"], key=lambda h: -h["starts"])[:PAGE_HOTSPOTS]
    found["shown_hotspots"] = sorted(busiest, key=lambda h: h["minute"])
    found["heat"] = heatmap(found["curve"], threshold)
    found["curves"] = curves(found["curve"], found.pop("flattened"), threshold)
    del found["curve"]
    return found


# --- reading the cache ---------------------------------------------------------------------


def parse_threshold(params: Any) -> float:
    """``?threshold=``: starts per day at one minute above which the minute is a hotspot."""
    return parse_param(params, HERD_THRESHOLD)


def label(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def analyse(
    entry: InsightCache,
    scope: InsightScope,
    threshold: float,
    *,
    max_jobs: int | None = None,
    max_hotspots: int | None = None,
) -> dict:
    """What the reader may see of the cached analysis: the curve (starts per day at each minute),
    the hotspots above ``threshold`` with each job's suggested rewrite, and the flattened curve
    (every job on a hotspot rewritten). ``max_jobs``: at most that many jobs listed per hotspot
    (``jobs_total`` counts them all); ``max_hotspots``: jobs listed for the busiest hotspots only."""
    data = entry.data
    days = data["days"] or 1
    curve = [0.0] * MINUTES
    for key, counts in data["groups"].items():
        env, team = key.split("|")
        if not scope.covers(int(team), int(env)):
            continue
        for minute, count in counts.items():
            curve[int(minute)] += count / days
    hot = {minute for minute, value in enumerate(curve) if value > threshold + 1e-9}
    patterns = data["patterns"]
    hits: dict[int, list[int]] = {}
    spots: dict[int, list[tuple]] = {minute: [] for minute in sorted(hot)}
    moved: Counter[tuple[int, int]] = Counter()
    listed = set(sorted(spots, key=lambda m: -curve[m])[:max_hotspots]) if max_hotspots is not None else set(spots)
    counted: Counter[int] = Counter()
    rewritable: Counter[int] = Counter()
    # Jobs that start alike are counted together; only the listed hotspots name their jobs.
    alike: Counter[tuple[int, bool, int]] = Counter()
    listed_hits: dict[int, list[int]] = {}
    for job_id, row in data["jobs"].items():
        name, team, env, _cron, suggested, now_index, after_index = row
        found = hits.get(now_index)
        if found is None:
            found = hits[now_index] = [int(m) for m in patterns[now_index] if int(m) in hot]
            listed_hits[now_index] = [m for m in found if m in listed]
        if not found or not scope.covers(team, env):
            continue
        alike[(now_index, bool(suggested), after_index)] += 1
        for minute in listed_hits[now_index]:
            spots[minute].append((-patterns[now_index][str(minute)], name, int(job_id), row))
    for (now_index, suggested, after_index), count in alike.items():
        for minute in hits[now_index]:
            counted[minute] += count
            if suggested:
                rewritable[minute] += count
        if suggested:
            moved[(now_index, after_index)] += count
    flattened = list(curve)
    for (now_index, after_index), count in moved.items():
        for minute, starts in patterns[now_index].items():
            flattened[int(minute)] -= count * starts / days
        for minute, starts in patterns[after_index].items():
            flattened[int(minute)] += count * starts / days
    flattened = [max(round(v, 6), 0.0) for v in flattened]
    new_minutes: dict[int, list[str]] = {}

    def listing(negative: int, name: str, job_id: int, row: list) -> dict:
        after_index = row[6]
        minutes = new_minutes.get(after_index)
        if minutes is None:
            found = sorted(patterns[after_index], key=int) if after_index >= 0 else []
            minutes = new_minutes[after_index] = [label(int(m)) for m in found[:4]] + [str(max(len(found) - 4, 0))]
        return {
            "job": job_id,
            "name": name,
            "cron": row[3],
            "suggested": row[4],
            "per_day": round(-negative / days, 2),
            "new_minutes": minutes[:-1],
            "more_minutes": int(minutes[-1]),
        }

    hotspots = []
    for minute, entries in spots.items():
        if minute in listed:
            entries.sort(key=lambda e: (e[0], e[1]))
        shown = entries if max_jobs is None else entries[:max_jobs]
        hotspots.append(
            {
                "minute": minute,
                "at": label(minute),
                "starts": round(curve[minute], 2),
                "after": round(flattened[minute], 2),
                "jobs_total": counted[minute],
                "rewritable": rewritable[minute],
                "jobs": [listing(*e) for e in shown] if minute in listed else [],
            }
        )
    return {
        "threshold": threshold,
        "days": days,
        "curve": [round(v, 4) for v in curve],
        "flattened": flattened,
        "hotspots": hotspots,
        "peak": round(max(curve), 2),
        "peak_after": round(max(flattened), 2),
        "computed_at": entry.computed_at,
        "start": data["start"],
    }


def jobs_at(entry: InsightCache, scope: InsightScope, minute: int) -> list[int]:
    """The jobs the reader may see that start at ``minute`` of the day, with a suggested rewrite."""
    patterns = entry.data["patterns"]
    key = str(minute)
    return [
        int(job_id)
        for job_id, (_name, team, env, _cron, suggested, now_index, _after) in entry.data["jobs"].items()
        if suggested and key in patterns[now_index] and scope.covers(team, env)
    ]


def hourly(values: list[float]) -> list[list[float]]:
    """24 rows of 60 minutes (the heatmap's grid)."""
    return [values[hour * 60 : hour * 60 + 60] for hour in range(24)]


# --- chart geometry ------------------------------------------------------------------------

CELL_W, CELL_H, HEAT_LEFT, HEAT_TOP = 14, 16, 44, 18
CURVE_W, CURVE_H, CURVE_LEFT, CURVE_TOP = 900, 160, 44, 12


def heatmap(curve: list[float], threshold: float) -> dict:
    """A 24 x 60 grid (hour x minute): each cell's shade grows with its starts (five levels);
    cells above the threshold are hatched and outlined, so they read without colour. Drawn as one
    path per row and shade (and one for the row's hotspots), not a node per cell: ~150 SVG nodes
    instead of 1,440+; the numbers are in the hourly table beside it (``hours``)."""
    top = max(max(curve, default=0.0), 1e-9)
    width, height = CELL_W - 1, CELL_H - 1
    parts = []
    hours = []
    for hour, values in enumerate(hourly(curve)):
        y = HEAT_TOP + hour * CELL_H
        shades: list[list[str]] = [[] for _ in range(5)]
        hot: list[str] = []
        for minute, value in enumerate(values):
            level = 0 if value <= 0 else min(4, 1 + int(value / top * 4))
            cell = f"M{HEAT_LEFT + minute * CELL_W},{y}h{width}v{height}h-{width}z"
            shades[level].append(cell)
            if value > threshold + 1e-9:
                hot.append(cell)
        parts.append(f'<text x="0" y="{y + 12}" class="tick">{hour:02d}:00</text>')
        parts.extend(f'<path d="{"".join(d)}" class="heat lvl-{level}"/>' for level, d in enumerate(shades) if d)
        if hot:
            parts.append(f'<path d="{"".join(hot)}" class="heat-hot" fill="url(#heat-hatch)"/>')
        busiest = max(range(60), key=lambda m: values[m])
        hours.append(
            {
                "hour": f"{hour:02d}:00",
                "starts": round(sum(values), 2),
                "busiest": label(hour * 60 + busiest) if values[busiest] > 0 else "",
                "busiest_starts": round(values[busiest], 2),
                "hot": sum(1 for v in values if v > threshold + 1e-9),
            }
        )
    return {
        "cells": "".join(parts),
        "hours": hours,
        "width": HEAT_LEFT + 60 * CELL_W + 8,
        "height": HEAT_TOP + 24 * CELL_H + 6,
        "minute_ticks": [{"x": HEAT_LEFT + m * CELL_W + CELL_W // 2, "label": f":{m:02d}"} for m in range(0, 60, 5)],
        "hot": sum(1 for v in curve if v > threshold + 1e-9),
    }


def curves(before: list[float], after: list[float], threshold: float) -> dict:
    """Starts per minute over the day, now (solid) and with the suggested rewrites (dashed), and
    the threshold (dotted)."""
    top = max(max(before, default=0.0), threshold, 1.0) * 1.1

    def x(minute: int) -> float:
        return round(CURVE_LEFT + minute / MINUTES * CURVE_W, 2)

    def y(value: float) -> float:
        return round(CURVE_TOP + CURVE_H - value / top * CURVE_H, 1)

    def path(values: list[float]) -> str:
        return "M" + " L".join(f"{x(m)},{y(v)}" for m, v in enumerate(values))

    return {
        "width": CURVE_LEFT + CURVE_W + 10,
        "height": CURVE_TOP + CURVE_H + 22,
        "before": path(before),
        "after": path(after),
        "threshold_y": y(threshold),
        "left": CURVE_LEFT,
        "right": CURVE_LEFT + CURVE_W,
        "base": CURVE_TOP + CURVE_H,
        "ticks": [{"x": x(h * 60), "label": f"{h:02d}:00"} for h in range(0, 24, 3)],
        "scale": [{"y": y(v), "label": f"{v:g}"} for v in scale_ticks(top)],
    }
