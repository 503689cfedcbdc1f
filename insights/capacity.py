"""Reading a cached capacity forecast for one reader: the parameters (``horizon``, ``pool``,
``environment``), the pools and environments the reader may see with their series, daily peaks
and overflow episodes, and the SVG geometry of their charts."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.utils.dateparse import parse_datetime

from governance.models import Environment
from jobs.models import Pool

from . import forecast
from .common import HORIZON, InsightScope, ParamError, cached, parse_param, scale_ticks
from .models import ForecastSeries, InsightCache

DEFAULT_HORIZON = HORIZON.default
MAX_CHARTS = 4
CHART_POINTS = 480
CHART_W, CHART_H, CHART_LEFT, CHART_TOP = 900, 180, 44, 18


def parse_horizon(params: Any) -> int:
    """``?horizon=``: days ahead, 1-366."""
    return parse_param(params, HORIZON)


def parse_filters(scope: InsightScope, params: Any) -> tuple[str | None, Environment | None]:
    """``?pool=`` (a pool of the tenant; ``-`` for jobs without a pool) and ``?environment=`` (a slug)."""
    environment = None
    slug = (params.get("environment") or "").strip()
    if slug:
        environment = Environment.objects.filter(tenant=scope.tenant, slug=slug).first()
        if environment is None or not scope.covers(None, environment.pk):
            raise ParamError("environment", f"No environment {slug[:60]!r} in {scope.tenant.slug}.")
    pool = (params.get("pool") or "").strip() or None
    if pool and pool != "-":
        pools = Pool.objects.filter(tenant=scope.tenant, name=pool)
        if environment is not None:
            pools = pools.filter(environment=environment)
        if not any(scope.covers(None, p.environment_id) for p in pools):
            where = f" in {environment.slug}" if environment is not None else ""
            raise ParamError("pool", f"No pool {pool[:60]!r}{where} in {scope.tenant.slug}.")
    return pool, environment


def entry_for(scope: InsightScope, horizon: int, *, refresh: bool = False) -> InsightCache:
    return cached(
        scope.tenant,
        forecast.KIND,
        horizon,
        lambda: forecast.compute(scope.tenant, horizon)[forecast.KIND],
        refresh=refresh,
        params={"horizon_days": horizon},
    )


def _add(total: list[float], values: list[float]) -> None:
    for index, value in enumerate(values):
        if value:
            total[index] += value


def read(
    entry: InsightCache,
    scope: InsightScope,
    pool: str | None,
    environment: Environment | None,
    *,
    detail: int | None = None,
) -> dict:
    """The reader's part of the forecast, filtered: per pool and environment its peaks and overflow
    episodes, busiest first; the series and daily peaks of the first ``detail`` (None: all)."""
    data = entry.data
    rows = ForecastSeries.objects.filter(cache=entry)
    if pool is not None:
        rows = rows.filter(pool="" if pool == "-" else pool)
    if environment is not None:
        rows = rows.filter(environment=environment)
    rows = rows.filter(team__isnull=True) if scope.full else rows.filter(team__isnull=False)
    envs = {e.pk: e for e in Environment.objects.filter(tenant=scope.tenant)}
    slots = {(s["pool"], s["env"]): s["slots"] for s in data["slots"]}
    grouped: dict[tuple[str, int], list[ForecastSeries]] = defaultdict(list)
    for row in rows.order_by("pool", "environment_id", "team_id"):
        if scope.covers(row.team_id, row.environment_id):
            grouped[(row.pool, row.environment_id)].append(row)
    start = parse_datetime(data["start"])
    assert start is not None
    days = data["days"]
    episodes = []
    for episode in data["episodes"]:
        if pool is not None and episode["pool"] != ("" if pool == "-" else pool):
            continue
        if environment is not None and episode["env"] != environment.pk:
            continue
        jobs = [j for j in episode["jobs"] if scope.covers(j["team"], j["env"])]
        if not jobs:
            continue
        episodes.append(
            {
                **episode,
                "jobs": jobs,
                "environment": envs[episode["env"]].slug,
                "start_text": _text(episode["start"]),
                "end_text": _text(episode["end"]),
                "peak_text": _text(episode["peak_at"])[11:],
            }
        )
    overflowing: dict[tuple[str, int], int] = defaultdict(int)
    for episode in data["episodes"]:
        overflowing[(episode["pool"], episode["env"])] += 1
    groups: list[dict[str, Any]] = []
    for (pool_name, env_id), parts in grouped.items():
        group: dict[str, Any] = {
            "pool": pool_name,
            "environment": envs[env_id].slug,
            "environment_id": env_id,
            "slots": slots.get((pool_name, env_id)),
            "episodes": overflowing[(pool_name, env_id)],
            "parts": parts,
        }
        if len(parts) == 1:
            group["peak_p50"], group["peak_p90"] = parts[0].peak_p50, parts[0].peak_p90
        else:
            _detail(group, data["buckets"], start, days)
        groups.append(group)
    groups.sort(key=lambda g: (-g["episodes"], -g["peak_p50"], g["pool"], g["environment"]))
    for group in groups if detail is None else groups[:detail]:
        if "p50" not in group:
            _detail(group, data["buckets"], start, days)
    return {
        "start": start,
        "horizon_days": entry.horizon_days,
        "computed_at": entry.computed_at,
        "compute_ms": entry.compute_ms,
        "jobs": data["jobs"],
        "groups": groups,
        "episodes": episodes,
        "episodes_truncated": data["episodes_truncated"],
        "peak_days": [d for d in days if d["flags"]],
        "days_all": days,
    }


def _detail(group: dict, buckets: int, start: datetime, days: list[dict]) -> None:
    """Unpack a group's series (summing its teams' parts): peaks, overflowing buckets, daily peaks."""
    parts = group["parts"]
    if len(parts) == 1:
        p50, p90 = parts[0].unpack()
    else:
        p50 = [0.0] * buckets
        p90 = [0.0] * buckets
        for part in parts:
            low, high = part.unpack()
            _add(p50, low)
            _add(p90, high)
    limit = group["slots"]
    shift = (start.hour * 3600 + start.minute * 60) // forecast.BUCKET_S
    daily = []
    for day in range(len(days)):
        first = max(day * forecast.BUCKETS_PER_DAY - shift, 0)
        last = min((day + 1) * forecast.BUCKETS_PER_DAY - shift, len(p50))
        if last <= first:
            break
        peak = max(p50[first:last])
        daily.append(
            {
                **days[day],
                "peak_p50": round(peak, 2),
                "peak_p90": round(max(p90[first:last]), 2),
                "over": limit is not None and peak > limit + 1e-9,
                "marked": marked(days[day]),
            }
        )
    group.update(
        peak_p50=round(max(p50, default=0.0), 2),
        peak_p90=round(max(p90, default=0.0), 2),
        overflow_buckets=sum(1 for v in p50 if v > limit + 1e-9) if limit is not None else 0,
        p50=p50,
        p90=p90,
        days=daily,
    )


def _text(instant: str) -> str:
    return instant[:16].replace("T", " ")


def marked(day: dict) -> str:
    """A day's peaks in words: "month end, quarter end, holiday (calendar)"."""
    words = [flag.replace("_", " ") for flag in day["flags"] if flag != "holiday"]
    if day["holidays"]:
        words.append("holiday (" + ", ".join(day["holidays"]) + ")")
    return ", ".join(words)


def chart(group: dict, start: datetime, days: list[dict]) -> dict:
    """SVG geometry of one pool's forecast: the hourly maximum of p50 (area) and p90 (line), the
    pool's slots (dashed line), month-end, quarter-end and holiday days as hatched, labelled bands."""
    p50, p90 = group["p50"], group["p90"]
    per_point = max(4, -(-len(p50) // CHART_POINTS))  # at least an hour a point, at most CHART_POINTS
    points50 = [max(p50[i : i + per_point]) for i in range(0, len(p50), per_point)]
    points90 = [max(p90[i : i + per_point]) for i in range(0, len(p90), per_point)]
    top = max(max(points90, default=0), group["slots"] or 0, 1.0) * 1.1
    count = max(len(points50), 1)
    hours = per_point / 4

    def x(index: float) -> float:
        return round(CHART_LEFT + index / count * CHART_W, 1)

    def y(value: float) -> float:
        return round(CHART_TOP + CHART_H - value / top * CHART_H, 1)

    base = CHART_TOP + CHART_H
    area = f"M{x(0)},{base} " + " ".join(f"L{x(i)},{y(v)} L{x(i + 1)},{y(v)}" for i, v in enumerate(points50))
    area += f" L{x(count)},{base} Z"
    line = "M" + " L".join(f"{x(i)},{y(v)} {x(i + 1)},{y(v)}" for i, v in enumerate(points90))
    bands = []
    ticks = []
    for day in days:
        at = datetime.fromisoformat(day["date"]).replace(tzinfo=start.tzinfo)
        hour = (at - start).total_seconds() / 3600 / hours  # in points
        if hour >= count:
            continue
        if day["flags"]:
            left = max(hour, 0)
            marks = []
            if "quarter_end" in day["flags"]:
                marks.append("QE")
            elif "month_end" in day["flags"]:
                marks.append("ME")
            if "holiday" in day["flags"]:
                marks.append("H")
            bands.append(
                {
                    "x": x(left),
                    "width": round(max(x(min(hour + 24 / hours, count)) - x(left), 1), 1),
                    "label": "+".join(marks),
                    "title": f"{day['date']}: " + ", ".join(f.replace("_", " ") for f in day["flags"]),
                    "kind": "quarter" if "quarter_end" in day["flags"] else day["flags"][0],
                }
            )
        if at.day in (1, 15) and hour >= 0:
            ticks.append({"x": x(hour), "label": at.strftime("%b %d")})
    scale = [{"y": y(v), "label": f"{v:g}"} for v in scale_ticks(top)]
    return {
        "width": CHART_LEFT + CHART_W + 10,
        "height": CHART_TOP + CHART_H + 24,
        "area": area,
        "line": line,
        "base": base,
        "slots_y": y(group["slots"]) if group["slots"] is not None else None,
        "bands": bands,
        "ticks": ticks,
        "scale": scale,
        "left": CHART_LEFT,
        "right": CHART_LEFT + CHART_W,
        "top": CHART_TOP,
        "band_h": CHART_H,
    }


def day_start(start: datetime, index: int) -> datetime:
    return start + timedelta(days=index)
