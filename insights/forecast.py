"""Capacity forecast (issue 21, item 1): every active schedule of a tenant expanded over the next
days through the one firing module (``jobs.firing.upcoming``: calendars, holidays, maintenance and
allowed windows, DST), each fire given the job's expected duration, summed into expected
concurrency per 15-minute bucket per pool, environment and team.

Durations come from the job's finished runs of the last HISTORY_DAYS: p50 and p90 of
``finished_at - started_at``. When the runs span at least SEASONAL_MIN_DAYS (8 weeks), a seasonal
profile scales each fire's duration: the median run on that day of the month (the month's last
day is its own key, ``L``) over the p50, times the median run on that weekday over what the day of
the month predicts. A job without runs is assumed to take NO_HISTORY_S.

A fire of duration d starting at s adds to each bucket the part of the bucket it covers
(overlap / 15 min): the expected number of runs active in that bucket. A pool's buckets whose
p50 concurrency exceeds its slots are grouped into overflow episodes, each listing the jobs active
at its peak bucket with their share. Everything is in UTC.

The expansion and the minute-of-day start counts feed the thundering-herd analysis
(``insights.herds``) in the same pass.
"""

from __future__ import annotations

import calendar
import json
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from operator import add
from statistics import median
from typing import Any

from django.db import transaction
from django.utils import timezone

from governance.models import Tenant
from jobs import firing, schedule
from jobs.models import HolidayCalendar, Job, JobStatus, MaintenanceWindow, Pool, Run, RunStatus

from . import herds as herd_module
from .common import quantile, store
from .models import ForecastSeries, InsightCache

BUCKET_S = 900
BUCKETS_PER_DAY = 86400 // BUCKET_S
HORIZONS = (30, 90)
MAX_HORIZON_DAYS = 366
HISTORY_DAYS = 120
SEASONAL_MIN_DAYS = 56
NO_HISTORY_S = 60.0
MAX_EPISODES = 300
MAX_EPISODE_JOBS = 50
KIND = "capacity"
JOB_FIELDS = (
    "id",
    "tenant_id",
    "team_id",
    "environment_id",
    "name",
    "cron",
    "timezone",
    "gap",
    "overlap",
    "windows",
    "window_policy",
    "holiday_calendar",
    "pool",
    "sunset_on",
)


def day_key(day: date) -> str:
    """The seasonal key of a day: its day of the month, or ``L`` for the month's last day."""
    return "L" if day.day == calendar.monthrange(day.year, day.month)[1] else str(day.day)


@dataclass
class Profile:
    """A job's expected duration: p50 and p90 seconds, and the seasonal factors when learnt."""

    p50: float = NO_HISTORY_S
    p90: float = NO_HISTORY_S
    runs: int = 0
    seasonal: bool = False
    by_day: dict[str, float] = field(default_factory=dict)
    by_weekday: dict[int, float] = field(default_factory=dict)

    def factor(self, day: date) -> float:
        if not self.seasonal:
            return 1.0
        return self.by_day.get(day_key(day), 1.0) * self.by_weekday.get(day.weekday(), 1.0)

    def summary(self) -> dict:
        return {
            "p50_s": round(self.p50, 1),
            "p90_s": round(self.p90, 1),
            "runs": self.runs,
            "seasonal": self.seasonal,
            "by_day": {k: round(v, 2) for k, v in sorted(self.by_day.items())},
            "by_weekday": {str(k): round(v, 2) for k, v in sorted(self.by_weekday.items())},
        }


def learn(samples: list[tuple[datetime, float]]) -> Profile:
    """A profile from (started_at, seconds) samples of one job."""
    if not samples:
        return Profile()
    durations = sorted(seconds for _, seconds in samples)
    profile = Profile(p50=max(quantile(durations, 0.5), 1.0), p90=max(quantile(durations, 0.9), 1.0))
    profile.runs = len(samples)
    first = min(at for at, _ in samples)
    last = max(at for at, _ in samples)
    if (last - first).days < SEASONAL_MIN_DAYS:
        return profile
    profile.seasonal = True
    per_day: dict[str, list[float]] = defaultdict(list)
    for at, seconds in samples:
        per_day[day_key(at.date())].append(seconds)
    profile.by_day = {
        key: median(values) / profile.p50
        for key, values in per_day.items()
        if len(values) >= 2 and abs(median(values) / profile.p50 - 1) >= 0.05
    }
    per_weekday: dict[int, list[float]] = defaultdict(list)
    for at, seconds in samples:
        expected = profile.p50 * profile.by_day.get(day_key(at.date()), 1.0)
        per_weekday[at.weekday()].append(seconds / expected)
    profile.by_weekday = {
        day: median(values)
        for day, values in per_weekday.items()
        if len(values) >= 2 and abs(median(values) - 1) >= 0.05
    }
    return profile


def profiles(tenant_id: int, now: datetime) -> dict[int, Profile]:
    """Every job's profile from its finished runs of the last HISTORY_DAYS (one query)."""
    rows = (
        Run.objects.filter(
            tenant_id=tenant_id,
            scheduled_for__gte=now - timedelta(days=HISTORY_DAYS),
            status__in=(RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT),
            started_at__isnull=False,
            finished_at__isnull=False,
            partition="",
        )
        .values_list("job_id", "started_at", "finished_at")
        .order_by()
    )
    samples: dict[int, list[tuple[datetime, float]]] = defaultdict(list)
    for job_id, started, finished in rows.iterator(chunk_size=5000):
        assert started is not None and finished is not None
        samples[job_id].append((started, max((finished - started).total_seconds(), 0.0)))
    return {job_id: learn(found) for job_id, found in samples.items()}


# --- expansion -----------------------------------------------------------------------------


def definition_of(job: Job) -> dict:
    """The part of a job's definition that decides when it fires."""
    return {
        "cron": job.cron,
        "timezone": job.timezone,
        "gap": job.gap,
        "overlap": job.overlap,
        "windows": job.windows,
        "window_policy": job.window_policy,
        "holiday_calendar": job.holiday_calendar,
    }


def expand(fires: list[datetime], rules: firing.Rules, start: datetime, end: datetime) -> list[int]:
    """Start offsets (seconds after ``start``) of the fires in [start, end), as the firing module
    decides each (``firing.decide``: a deferred fire starts where it is deferred to, a skipped one
    not at all), sorted."""
    offsets: list[int] = []
    trivial = not (rules.holiday_calendar or rules.maintenance or rules.windows)
    for at in fires:
        if not trivial:
            decision = firing.decide(rules, at)
            if decision.action == firing.SKIP:
                continue
            if decision.action == firing.DEFER and decision.deferred_to:
                at = decision.deferred_to
        if at < end:
            offsets.append(int((at - start).total_seconds()))
    offsets.sort()
    return offsets


class Expander:
    """Expands the jobs of one tenant through the firing module, as ``firing.upcoming`` does (the
    schedule's fires from ``schedule.iter_fires``, each decided by ``firing.decide``), but once per
    distinct fire sequence: jobs whose expressions resolve to the same fires (``H`` resolved for
    each job: ``schedule.fire_identity``) in the same zone and policies share the walk of the
    cron evaluator, and those with the same rules (calendar, windows, environment's maintenance)
    share the decisions."""

    def __init__(self, tenant_id: int, start: datetime, end: datetime) -> None:
        self.tenant_id = tenant_id
        self.start, self.end = start, end
        self.windows = list(MaintenanceWindow.objects.filter(tenant_id=tenant_id))
        self.calendars = {
            (tenant_id, c.name): list(c.dates) for c in HolidayCalendar.objects.filter(tenant_id=tenant_id)
        }
        self._fires: dict[tuple, list[datetime]] = {}
        self._done: dict[tuple, list[int]] = {}

    @staticmethod
    def definition(job: Job) -> dict:
        return definition_of(job)

    def fires(self, definition: dict, seed: str) -> tuple[tuple, list[datetime]]:
        key = (
            schedule.fire_identity(definition["cron"], seed),
            definition["timezone"],
            definition["gap"],
            definition["overlap"],
        )
        found = self._fires.get(key)
        if found is None:
            found = []
            for fire in schedule.iter_fires(
                definition["cron"],
                definition["timezone"] or "UTC",
                self.start - timedelta(microseconds=1),
                gap=definition["gap"] or "shift",
                overlap=definition["overlap"] or "once",
                seed=seed,
            ):
                if fire.at >= self.end:
                    break
                found.append(fire.at)
            self._fires[key] = found
        return key, found

    def offsets(self, job: Job, definition: dict | None = None) -> list[int]:
        definition = definition or definition_of(job)
        seed = schedule.job_seed(job.tenant_id, job.environment_id, job.name)
        fires_key, fires = self.fires(definition, seed)
        rules_key = (
            fires_key,
            definition["holiday_calendar"],
            json.dumps(definition["windows"], sort_keys=True) if definition["windows"] else "",
            definition["window_policy"] if definition["windows"] else "",
            job.environment_id if self.windows else 0,
        )
        found = self._done.get(rules_key)
        if found is None:
            rules = firing.load_rules(
                definition,
                tenant_id=self.tenant_id,
                environment_id=job.environment_id,
                windows=self.windows,
                calendars=self.calendars,
            )
            found = self._done[rules_key] = expand(fires, rules, self.start, self.end)
        return found


def bucket_start(now: datetime) -> datetime:
    now = now.astimezone(UTC)
    return now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)


def _spread(series: list[float], start: int, seconds: float, buckets: int) -> None:
    """Add a run of ``seconds`` starting ``start`` seconds in to the buckets it covers."""
    end = start + seconds
    index = start // BUCKET_S
    while index < buckets:
        low = index * BUCKET_S
        if low >= end:
            break
        high = low + BUCKET_S
        series[index] += (min(end, high) - max(start, low)) / BUCKET_S
        index += 1


def day_flags(first: date, days: int, holidays: dict[str, list[str]]) -> list[dict]:
    """Each day of the horizon with its peaks: month end, quarter end and the calendars that hold it."""
    found = []
    for index in range(days):
        day = first + timedelta(days=index)
        last = calendar.monthrange(day.year, day.month)[1] == day.day
        flags = []
        if last:
            flags.append("month_end")
        if last and day.month in (3, 6, 9, 12):
            flags.append("quarter_end")
        names = holidays.get(day.isoformat(), [])
        if names:
            flags.append("holiday")
        found.append({"date": day.isoformat(), "flags": flags, "holidays": names})
    return found


@dataclass
class _Run:
    job_id: int
    offsets: list[int]
    durations: list[float] | None  # p50 seconds per fire when seasonal
    p50: float

    def duration(self, position: int) -> float:
        return self.p50 if self.durations is None else self.durations[position]


def by_phase(offsets: list[int]) -> dict[int, list[int]]:
    """The buckets of the starts, by the second of its bucket each start falls on (sorted)."""
    found: dict[int, list[int]] = defaultdict(list)
    for offset in offsets:
        bucket, phase = divmod(offset, BUCKET_S)
        found[phase].append(bucket)
    return found


def _kernel(phase: int, durations: list[float]) -> list[tuple[int, float]]:
    """What runs of ``durations`` starting ``phase`` seconds into bucket 0 add to buckets 0, 1, ..."""
    work = [0.0] * (int((phase + max(durations)) // BUCKET_S) + 2)
    for seconds in durations:
        _spread(work, phase, seconds, len(work))
    return [(index, value) for index, value in enumerate(work) if value]


def _convolve(series: list[float], phases: dict[int, list[int]], durations: list[float], buckets: int) -> None:
    """Add runs of each of ``durations`` starting at each start (``phases``: ``by_phase``): the
    coverage of a start is the same for every start on the same second of its bucket, so it is
    worked out once per phase."""
    for phase, starts in phases.items():
        for index, value in _kernel(phase, durations):
            for bucket in starts[: bisect_left(starts, buckets - index)]:
                series[bucket + index] += value


def compute(tenant: Tenant, horizon_days: int, *, now: datetime | None = None, herds: bool | None = None) -> dict:
    """Compute and cache the tenant's capacity forecast over ``horizon_days`` (and, for the
    30-day horizon unless told otherwise, the thundering-herd analysis). Returns the cache entries
    by kind."""
    started = time.perf_counter()
    now = now or timezone.now()
    start = bucket_start(now)
    end = start + timedelta(days=horizon_days)
    buckets = horizon_days * BUCKETS_PER_DAY
    jobs = list(
        Job.objects.filter(tenant=tenant, status=JobStatus.ENABLED).only(*JOB_FIELDS).order_by("environment_id", "id")
    )
    learnt = profiles(tenant.pk, now)
    expander = Expander(tenant.pk, start, end)
    pools = {(p.environment_id, p.name): p.slots for p in Pool.objects.filter(tenant=tenant)}
    first_day = start.date()
    day_seconds = start.hour * 3600 + start.minute * 60

    p50: dict[tuple[str, int, int | None], list[float]] = {}
    p90: dict[tuple[str, int, int | None], list[float]] = {}
    pooled: dict[tuple[int, str], list[_Run]] = defaultdict(list)
    info: dict[int, dict] = {}
    unexpandable: list[dict] = []
    starts: dict[int, list[int]] = {}
    shared: dict[tuple[tuple[str, int, int | None], int], tuple[list[int], list[tuple[float, float]]]] = {}
    for job in jobs:
        try:
            offsets = expander.offsets(job)
        except schedule.ScheduleError as exc:
            unexpandable.append({"job": job.pk, "name": job.name, "error": str(exc)})
            continue
        if job.sunset_on:
            cut = int((datetime.combine(job.sunset_on, datetime.min.time(), UTC) - start).total_seconds())
            offsets = offsets[: bisect_left(offsets, cut)]
        profile = learnt.get(job.pk) or Profile()
        info[job.pk] = {
            "name": job.name,
            "team": job.team_id,
            "env": job.environment_id,
            "pool": job.pool,
            "cron": job.cron,
            "timezone": job.timezone,
            **profile.summary(),
        }
        starts[job.pk] = offsets
        if not offsets:
            continue
        key = (job.pool, job.environment_id, job.team_id)
        if key not in p50:
            p50[key] = [0.0] * buckets
            p90[key] = [0.0] * buckets
        pooled_job = (job.environment_id, job.pool) in pools
        if not profile.seasonal:
            # Jobs of one series that fire at the same instants are added together (below).
            shared.setdefault((key, id(offsets)), (offsets, []))[1].append((profile.p50, profile.p90))
            if pooled_job:
                pooled[(job.environment_id, job.pool)].append(_Run(job.pk, offsets, None, profile.p50))
            continue
        # Seasonal: one duration per day, so the fires of a day are added together.
        durations: list[float] = []
        by_day: dict[int, list[int]] = defaultdict(list)
        for offset in offsets:
            by_day[(day_seconds + offset) // 86400].append(offset)
        for day_index, fired in by_day.items():
            factor = profile.factor(first_day + timedelta(days=day_index))
            durations.extend([profile.p50 * factor] * len(fired))
            phases = by_phase(fired)
            _convolve(p50[key], phases, [profile.p50 * factor], buckets)
            _convolve(p90[key], phases, [profile.p90 * factor], buckets)
        if pooled_job:
            pooled[(job.environment_id, job.pool)].append(_Run(job.pk, offsets, durations, profile.p50))
    phase_cache: dict[int, dict[int, list[int]]] = {}
    for (series_key, list_id), (fired, pairs) in shared.items():
        found = phase_cache.get(list_id)
        if found is None:
            found = phase_cache[list_id] = by_phase(fired)
        _convolve(p50[series_key], found, [low for low, _ in pairs], buckets)
        _convolve(p90[series_key], found, [high for _, high in pairs], buckets)

    # Totals per pool and environment (team None), then the overflow episodes of real pools.
    totals50: dict[tuple[str, int], list[float]] = {}
    totals90: dict[tuple[str, int], list[float]] = {}
    for (pool, env, team), series in p50.items():
        if (pool, env) in totals50:
            totals50[(pool, env)] = list(map(add, totals50[(pool, env)], series))
            totals90[(pool, env)] = list(map(add, totals90[(pool, env)], p90[(pool, env, team)]))
        else:
            totals50[(pool, env)] = list(series)
            totals90[(pool, env)] = list(p90[(pool, env, team)])
    episodes = []
    for (pool, env), total in sorted(totals50.items()):
        slots = pools.get((env, pool))
        if slots is None:
            continue
        episodes.extend(_episodes(pool, env, slots, total, totals90[(pool, env)], pooled[(env, pool)], info, start))
    episodes.sort(key=lambda e: (e["start"], e["pool"], e["env"]))
    truncated = len(episodes) > MAX_EPISODES
    episodes = episodes[:MAX_EPISODES]

    holidays: dict[str, list[str]] = defaultdict(list)
    for (_tenant, name), dates in expander.calendars.items():
        for day in dates:
            holidays[str(day)].append(name)
    params = {"horizon_days": horizon_days}
    data = {
        "start": schedule.isoz(start),
        "bucket_s": BUCKET_S,
        "buckets": buckets,
        "jobs": len(jobs),
        "expansions": len(expander._fires),
        "slots": [{"pool": pool, "env": env, "slots": slots} for (env, pool), slots in sorted(pools.items())],
        "days": day_flags(first_day, horizon_days + 1, holidays),
        "episodes": episodes,
        "episodes_truncated": truncated,
        "unexpandable": unexpandable,
        "profiles": {
            str(job_id): {k: v for k, v in row.items() if k in ("name", "p50_s", "p90_s", "runs", "seasonal")}
            for job_id, row in info.items()
            if row["seasonal"]
        },
    }
    with transaction.atomic():
        entry = store(tenant, KIND, horizon_days, params=params, data=data, started=started)
        ForecastSeries.objects.filter(cache=entry).delete()
        rows = [
            ForecastSeries(
                cache=entry,
                pool=pool,
                environment_id=env,
                team_id=team,
                peak_p50=round(max(series), 3),
                peak_p90=round(max(p90[(pool, env, team)]), 3),
                values=ForecastSeries.pack(series, p90[(pool, env, team)]),
            )
            for (pool, env, team), series in p50.items()
        ]
        rows += [
            ForecastSeries(
                cache=entry,
                pool=pool,
                environment_id=env,
                team_id=None,
                peak_p50=round(max(series), 3),
                peak_p90=round(max(totals90[(pool, env)]), 3),
                values=ForecastSeries.pack(series, totals90[(pool, env)]),
            )
            for (pool, env), series in totals50.items()
        ]
        ForecastSeries.objects.bulk_create(rows, batch_size=200)
        entry.compute_ms = round((time.perf_counter() - started) * 1000, 1)
        entry.save(update_fields=["compute_ms"])
    result = {KIND: entry}
    if herds if herds is not None else horizon_days == herd_module.HORIZON_DAYS:
        result[herd_module.KIND] = herd_module.compute(tenant, jobs, info, starts, expander, now=now)
    return result


def _episodes(
    pool: str,
    env: int,
    slots: int,
    total: list[float],
    total90: list[float],
    runs: list[_Run],
    info: dict[int, dict],
    start: datetime,
) -> list[dict]:
    """Consecutive buckets where the pool's expected (p50) concurrency exceeds its slots, each
    with the jobs active at its peak bucket and their share of it."""
    found = []
    index = 0
    buckets = len(total)
    while index < buckets:
        if total[index] <= slots + 1e-9:
            index += 1
            continue
        first = index
        while index < buckets and total[index] > slots + 1e-9:
            index += 1
        peak = max(range(first, index), key=lambda i: total[i])
        low, high = peak * BUCKET_S, (peak + 1) * BUCKET_S
        shares: dict[int, float] = defaultdict(float)
        for run in runs:
            # Fires that may cover the peak bucket: started before its end, and not too long before.
            upto = bisect_left(run.offsets, high)
            for position in range(upto - 1, -1, -1):
                offset, seconds = run.offsets[position], run.duration(position)
                if offset + seconds <= low:
                    if low - offset > 86400 * 2:
                        break
                    continue
                shares[run.job_id] += (min(offset + seconds, high) - max(offset, low)) / BUCKET_S
        jobs = [
            {
                "job": job_id,
                "name": info[job_id]["name"],
                "team": info[job_id]["team"],
                "env": env,
                "share": round(share, 3),
                "p50_s": info[job_id]["p50_s"],
            }
            for job_id, share in sorted(shares.items(), key=lambda item: (-item[1], item[0]))[:MAX_EPISODE_JOBS]
        ]
        found.append(
            {
                "pool": pool,
                "env": env,
                "slots": slots,
                "start": schedule.isoz(start + timedelta(seconds=first * BUCKET_S)),
                "end": schedule.isoz(start + timedelta(seconds=index * BUCKET_S)),
                "peak_at": schedule.isoz(start + timedelta(seconds=low)),
                "peak_p50": round(total[peak], 2),
                "peak_p90": round(total90[peak], 2),
                "jobs": jobs,
            }
        )
    return found


def refresh(tenants: Iterable[Tenant] | None = None, *, now: datetime | None = None) -> list[InsightCache]:
    """Recompute every horizon of every tenant (the nightly schedule, ``manage.py refresh_insights``)."""
    done: list[InsightCache] = []
    for tenant in tenants if tenants is not None else Tenant.objects.order_by("pk"):
        for horizon in HORIZONS:
            done.extend(compute(tenant, horizon, now=now).values())
    return done


def series_rows(entry: InsightCache) -> Any:
    return ForecastSeries.objects.filter(cache=entry)
