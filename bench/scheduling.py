"""Scheduling: next-fire cost beside croniter and cronsim, tick cost vs idle jobs, enqueue lateness, bursts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.report import Report, median, percentile, timed

TITLE = "Scheduling (issue 3)"

SCHEDULES = 100_000
CRONITER_SHARE = 5
# A mix an operations team writes: fixed times, steps, weekdays, month ends, hashed starts.
MIX = [
    ("*/5 * * * *", "Europe/Berlin"),
    ("30 2 * * *", "Europe/Berlin"),
    ("0 9 * * MON-FRI", "America/New_York"),
    ("15 3 L * *", "Australia/Sydney"),
    ("0 */2 * * *", "Asia/Kolkata"),
    ("45 23 * * 5#2", "America/Santiago"),
    ("0 0 1 * *", "UTC"),
    ("10 4 * * *", "Australia/Lord_Howe"),
]


def run(report: Report) -> None:
    next_fire(report)
    env = fixtures()
    tick_cost(report, env)
    pool_cost(report, env)
    burst(report, env)
    lateness(report, env)


def next_fire(report: Report) -> None:
    from croniter import croniter
    from cronsim import CronSim

    from jobs import schedule

    after = datetime(2026, 3, 27, 10, 17, 23, tzinfo=UTC)
    work = [MIX[i % len(MIX)] for i in range(SCHEDULES)]
    seeds = [schedule.job_seed(1, 1, f"team.sys.job-{i}") for i in range(SCHEDULES)]

    def ours():
        for (expr, tz), seed in zip(work, seeds, strict=True):
            schedule.next_after(expr, tz, after, seed=seed)

    locals_ = {tz: after.astimezone(schedule.zone(tz)) for _, tz in MIX}

    def plain_cronsim():
        for expr, tz in work:
            next(CronSim(expr, locals_[tz]))

    def plain_croniter():
        # croniter is slow enough that a fifth of the schedules tells its cost.
        for expr, tz in work[: SCHEDULES // CRONITER_SHARE]:
            croniter(expr, locals_[tz]).get_next(datetime)

    ours_s, _ = timed(ours)
    cronsim_s, _ = timed(plain_cronsim)
    croniter_s, _ = timed(plain_croniter)
    croniter_s *= CRONITER_SHARE
    report.figure("next_fire_us", ours_s / SCHEDULES * 1e6, "us", note="jobs.schedule: cronsim + DST policies + H")
    report.figure("next_fire_us_cronsim", cronsim_s / SCHEDULES * 1e6, "us", note="plain cronsim, same mix")
    report.figure("next_fire_us_croniter", croniter_s / SCHEDULES * 1e6, "us", note="plain croniter 7, same mix")
    report.figure(
        "next_fire_ratio_cronsim", ours_s / cronsim_s, "x", target="<= 1.2", note="jobs.schedule / plain cronsim"
    )
    report.figure("next_fire_100k_s", ours_s, "s", note="100,000 active schedules")
    report.figure("next_fire_100k_s_cronsim", cronsim_s, "s")
    report.figure("next_fire_100k_s_croniter", croniter_s, "s", note=f"1/{CRONITER_SHARE} measured, scaled")


class Env:
    def __init__(self, tenant, team, environment):
        self.tenant, self.team, self.environment = tenant, team, environment
        self.counter = 0


def fixtures() -> Env:
    from governance.models import Environment, Team, Tenant

    tenant = Tenant.objects.create(slug="bench", name="Bench")
    team = Team.objects.create(tenant=tenant, slug="bench", name="Bench")
    environment = Environment.objects.create(tenant=tenant, slug="prod", name="Prod", order=2, required_approvals=0)
    return Env(tenant, team, environment)


def make_jobs(env: Env, count: int, next_fire_at, cron: str = "0 0 1 1 *", status: str = "enabled") -> list:
    """Jobs inserted directly (not through change control): the bench measures the scheduler only."""
    from jobs.models import Job

    jobs = []
    for _ in range(count):
        env.counter += 1
        at = next_fire_at(env.counter) if callable(next_fire_at) else next_fire_at
        jobs.append(
            Job(
                tenant=env.tenant,
                team=env.team,
                environment=env.environment,
                name=f"bench.sched.job-{env.counter}",
                command=["/bin/true"],
                cron=cron,
                timezone="UTC",
                status=status,
                next_fire_at=at,
            )
        )
    return Job.objects.bulk_create(jobs, batch_size=2000)


def clear(env: Env) -> None:
    from django_q.models import OrmQ

    from jobs.models import Job, Run

    Run.objects.all().delete()
    Job.objects.all().delete()
    OrmQ.objects.all().delete()


def _tick_ms(due_ids: list[int], expected: Callable[[Any], bool]) -> float:
    """The median of 7 ticks in ms, the jobs ``due_ids`` due at each; ``expected`` checks each tick's result."""
    from jobs import scheduler
    from jobs.models import Job, Run

    samples = []
    for rep in range(7):
        slot = datetime(2029, 1, 1, tzinfo=UTC) + timedelta(minutes=rep)
        Job.objects.filter(pk__in=due_ids).update(next_fire_at=slot)
        seconds, result = timed(scheduler.tick, now=slot + timedelta(seconds=1))
        assert expected(result), result
        samples.append(seconds)
        # Jobs forbid overlap by default: clear the runs so the next round is due again.
        Run.objects.all().delete()
    return median(samples) * 1000


def tick_cost(report: Report, env: Env) -> None:
    """Tick with 100 due jobs among 1,000 and among 100,000: the cost must follow the due jobs only."""
    far = datetime(2030, 1, 1, tzinfo=UTC)
    results = {}
    for total in (1_000, 100_000):
        clear(env)
        make_jobs(env, total - 100, far)
        due = make_jobs(env, 100, far)
        results[total] = _tick_ms([j.pk for j in due], lambda result: result.created == 100)
    report.figure("tick_ms_1k", results[1_000], "ms", note="1,000 jobs, 100 due (median of 7)")
    report.figure("tick_ms_100k", results[100_000], "ms", note="100,000 jobs, 100 due")
    report.figure("tick_ratio_100k_1k", results[100_000] / results[1_000], "x", target="near 1")


def pool_cost(report: Report, env: Env) -> None:
    """The tick of tick_ms_1k with every due job in one of 4 pools (10 slots each, so 60 of 100 wait),
    half of them low priority under a queue-depth bound; then the release sweep with 10,000 runs
    waiting for a full pool (what every tick pays while a pool stays full)."""
    from jobs import scheduler
    from jobs.models import Job, Pool, Run, RunStatus

    far = datetime(2030, 1, 1, tzinfo=UTC)
    clear(env)
    Pool.objects.filter(tenant=env.tenant).delete()
    for i in range(4):
        Pool.objects.create(tenant=env.tenant, environment=env.environment, name=f"pool-{i}", slots=10)
    make_jobs(env, 900, far)
    due = make_jobs(env, 100, far)
    for i, job in enumerate(due):
        Job.objects.filter(pk=job.pk).update(pool=f"pool-{i % 4}", priority=3 if i % 2 else 7)
    tick_ms = _tick_ms([j.pk for j in due], lambda result: (result.created, result.deferred) == (40, 60))
    report.figure("tick_ms_1k_pools", tick_ms, "ms", note="as tick_ms_1k, 100 due into 4 full pools")

    # 10,000 deferred runs of one pool, all its slots busy: the sweep reads its batch and keeps them waiting.
    Pool.objects.filter(name="pool-0").update(slots=0)
    holder = due[0]
    start = datetime(2029, 2, 1, tzinfo=UTC)
    Run.objects.bulk_create(
        [
            Run(
                job=holder,
                tenant=env.tenant,
                scheduled_for=start + timedelta(minutes=i),
                status=RunStatus.DEFERRED,
                deferred_until=start,
                reason="Deferred: pool prod/pool-0 full: 0 of 0 slots busy.",
                job_version=1,
                definition={},
            )
            for i in range(10_000)
        ],
        batch_size=2000,
    )
    sweeps = []
    for _ in range(7):
        seconds, promoted = timed(scheduler.promote_deferred, start + timedelta(hours=1))
        assert promoted == 0, promoted
        sweeps.append(seconds)
    report.figure(
        "release_sweep_ms_10k_waiting", median(sweeps) * 1000, "ms", note="10,000 runs waiting for a full pool"
    )
    Run.objects.all().delete()
    Pool.objects.filter(tenant=env.tenant).delete()


def burst(report: Report, env: Env) -> None:
    """10,000 runs due at one instant: create and enqueue them all."""
    from django_q.models import OrmQ

    from jobs import scheduler
    from jobs.models import Run

    clear(env)
    slot = timezone_now().replace(microsecond=0) - timedelta(seconds=1)
    make_jobs(env, 10_000, slot)
    start = time.perf_counter()
    created = 0
    while True:
        result = scheduler.tick(now=slot + timedelta(seconds=1))
        created += result.created
        if not result.due:
            break
    seconds = time.perf_counter() - start
    assert created == 10_000 == Run.objects.count() == OrmQ.objects.count(), (created, OrmQ.objects.count())
    report.figure("burst_10k_enqueue_s", seconds, "s", target="< 5 s", note="runs created and queued in django-q2")


def timezone_now():
    from django.utils import timezone

    return timezone.now()


def lateness(report: Report, env: Env) -> None:
    """10,000 jobs due within one minute, spread by H; the real scheduler loop runs them."""
    from jobs import schedule, scheduler_loop
    from jobs.models import Run

    clear(env)
    start = timezone_now() + timedelta(seconds=3)

    def spread(i: int):
        # H spreads these jobs over the minute: its hash picks each one's millisecond.
        ms = schedule._hash(schedule.job_seed(env.tenant.pk, env.environment.pk, f"bench.sched.job-{i}"), 0) % 60_000
        return start + timedelta(milliseconds=ms)

    make_jobs(env, 10_000, spread)
    stop = threading.Event()
    loop = threading.Thread(
        target=scheduler_loop.run_forever, args=(stop,), kwargs={"max_sleep": 1.0, "lease_seconds": 15}
    )
    loop.start()
    try:
        end = start + timedelta(seconds=62)
        while timezone_now() < end:
            time.sleep(0.5)
    finally:
        stop.set()
        loop.join(30)
    late = enqueue_lateness_ms(Run)
    assert len(late) == 10_000, len(late)
    report.figure("enqueue_lateness_p50_ms", percentile(late, 50), "ms")
    report.figure("enqueue_lateness_p99_ms", percentile(late, 99), "ms", target="< 1000 ms")
    report.figure("enqueue_lateness_max_ms", max(late), "ms")


def enqueue_lateness_ms(run_model) -> list[float]:
    """Enqueue instant (when django-q2 got the task) minus scheduled instant, per run."""
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    scheduled = dict(run_model.objects.values_list("pk", "scheduled_for"))
    late = []
    for payload, enqueued in OrmQ.objects.values_list("payload", "lock"):
        task = SignedPackage.loads(payload)
        run_id = task["args"][0] if task.get("args") else None
        if run_id in scheduled:
            late.append((enqueued - scheduled[run_id]).total_seconds() * 1000)
    return late
