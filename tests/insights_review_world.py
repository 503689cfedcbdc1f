"""A tenant's worth of jobs and a month of run history for the Insights review pages (right-sizing,
zombie jobs, overhead), with planted cases the pages must find, and nothing else they may find.

Healthy jobs are sized to their use (memory 512 MB for at most 300 MB resident, 180 s of CPU for at
most 60 s, a 600 s timeout for runs of at most 280 s), succeed (a rare failure, never among the last
runs), belong to teams with members, and either write no output or have someone reading it.

Planted in acme (the job name says which):
- payments.plant.oversized (prod): memory limit 4096 MB, runs use at most 300 MB -> 512 MB.
- payments.plant.slow-timeout (dev): timeout 3600 s, runs take 100-140 s -> 300 s (12 x).
- payments.plant.broken (staging): every run fails (two attempts each): always failing; top failure cost.
- payments.plant.never (prod): enabled since long ago, no run at all.
- legacy.plant.orphan (dev): owned by team legacy, which has no members.
- payments.plant.sunset (staging): sunset ten days ago, still enabled.
- payments.plant.silent (prod): expects heartbeat pings (grace 600 s), never sent one.
- payments.plant.unread (dev): writes output nobody depends on, watches or opens.
- payments.plant.hog (prod): the longest runs (about 3000 s each): top by total runtime.
Planted in globex: ops.plant.oversized (memory 4096 MB for 250 MB) and ops.plant.broken.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import F
from django.utils import timezone

from governance.actors import SYSTEM
from governance.models import Role, Team
from governance.services import grant_role
from jobs.models import Attempt, Job, Run, RunStatus

DAYS = 30
HEALTHY_LIMITS = {"memory_mb": 512, "cpu_seconds": 180}
# Seconds between a slot and the creation of its run (the scheduler's lag) in the history.
LAG_SECONDS = 2


@dataclass
class World:
    cast: object
    now: datetime
    jobs: dict[str, Job] = field(default_factory=dict)
    healthy: int = 0

    def job(self, name: str) -> Job:
        return self.jobs[name]


def _runs_for(job: Job, now: datetime, rng: random.Random, **shape) -> tuple[list[Run], list[tuple[int, dict]]]:
    """A run per day for DAYS days (the newest an hour ago), shaped by ``shape``: rss (lo, hi) MB,
    cpu (lo, hi) s, duration (lo, hi) s, failing (every run fails), fail_every (the n-th run of
    the oldest fails), output (bytes written), heartbeat (pinged)."""
    runs = []
    attempts: list[tuple[int, dict]] = []
    rss, cpu, duration = shape.get("rss", (180, 300)), shape.get("cpu", (20, 60)), shape.get("duration", (150, 280))
    for day in range(DAYS):
        scheduled = now - timedelta(days=day, hours=1)
        seconds = rng.uniform(*duration) if not shape.get("failing") else 60.0
        failed = shape.get("failing") or (shape.get("fail_every") and day >= 10 and day % shape["fail_every"] == 0)
        status = RunStatus.FAILED if failed else RunStatus.SUCCEEDED
        started = scheduled + timedelta(seconds=1)
        finished = started + timedelta(seconds=seconds)
        runs.append(
            Run(
                job=job,
                tenant_id=job.tenant_id,
                scheduled_for=scheduled,
                status=status,
                attempt=2 if shape.get("failing") else 1,
                job_version=job.version,
                definition=job.definition(),
                queued_at=scheduled,
                started_at=started,
                finished_at=finished,
                exit_code=1 if failed else 0,
                cpu_user_s=rng.uniform(*cpu) * 0.8,
                cpu_sys_s=rng.uniform(*cpu) * 0.2,
                max_rss_kb=int(rng.uniform(*rss) * 1024),
                queue_wait_ms=rng.uniform(20, 80) * (3 if job.environment.slug == "prod" else 1),
                startup_ms=rng.uniform(100, 200),
                execution_ms=seconds * 1000,
                recording_ms=rng.uniform(5, 15),
                output_bytes=shape.get("output", 0),
                output="x" * min(shape.get("output", 0), 100),
                heartbeat_at=finished if shape.get("heartbeat") else None,
            )
        )
        if failed:
            for number in (1, 2) if shape.get("failing") else (1,):
                attempts.append(
                    (
                        len(runs) - 1,
                        {
                            "number": number,
                            "status": RunStatus.FAILED,
                            "started_at": started,
                            "finished_at": finished,
                            "exit_code": 1,
                        },
                    )
                )
    return runs, attempts


def build(cast, *, healthy: int = 240, seed: int = 21) -> World:
    """acme with ``healthy`` healthy jobs over its three environments and two teams, the planted acme
    cases, and globex's few jobs; a month of daily runs each (the job with no runs aside)."""
    rng = random.Random(seed)
    now = timezone.now()
    world = World(cast, now, healthy=healthy)
    legacy = Team.objects.create(tenant=cast.acme, slug="legacy", name="Legacy")
    # Team members: a role narrowed to the team (tenant-wide roles make nobody a member).
    from django.contrib.auth import get_user_model

    User = get_user_model()
    for team in (cast.payments, cast.data, cast.ops):
        member = User.objects.create_user(f"{team.slug}-member", password="x")
        grant_role(member, Role.VIEWER, tenant=team.tenant, team=team, actor=SYSTEM)

    def job(name: str, team, env, **fields) -> Job:
        return _job(world, name, team, env, **fields)

    shapes = _healthy(world, job, 0, healthy)
    p = cast.payments
    shapes += [
        (
            job("payments.plant.oversized", p, cast.prod, limits={"memory_mb": 4096, "cpu_seconds": 180}),
            {"rss": (280, 300)},
        ),
        (job("payments.plant.slow-timeout", p, cast.dev, timeout_seconds=3600), {"duration": (100, 140)}),
        (job("payments.plant.broken", p, cast.staging), {"failing": True}),
        (job("legacy.plant.orphan", legacy, cast.dev), {}),
        (job("payments.plant.sunset", p, cast.staging, sunset_on=(now - timedelta(days=10)).date()), {}),
        (job("payments.plant.silent", p, cast.prod, heartbeat={"grace_seconds": 600}), {}),
        (job("payments.plant.unread", p, cast.dev), {"output": 4096}),
        (job("payments.plant.hog", p, cast.prod, timeout_seconds=7200), {"duration": (2900, 3100)}),
        (
            job("ops.plant.oversized", cast.ops, cast.globex_prod, limits={"memory_mb": 4096, "cpu_seconds": 180}),
            {"rss": (230, 250)},
        ),
        (job("ops.plant.broken", cast.ops, cast.globex_prod), {"failing": True}),
        (job("ops.fleet.steady", cast.ops, cast.globex_prod), {}),
    ]
    job("payments.plant.never", p, cast.prod)
    _history(world, shapes, rng)
    return world


def _job(world: World, name: str, team, env, **fields) -> Job:
    values = {
        **world.cast.definition(),
        "name": name,
        "cron": "0 3 * * *",
        "timezone": "UTC",
        "timeout_seconds": 600,
        "limits": dict(HEALTHY_LIMITS),
        **fields,
    }
    created = Job.objects.create(tenant=team.tenant, team=team, environment=env, **values)
    world.jobs[name] = created
    return created


def _healthy(world: World, job, start: int, count: int) -> list[tuple[Job, dict]]:
    """Healthy jobs number ``start`` to ``start + count - 1``: every 17th expects (and gets) pings,
    every 13th failed three times long ago, every 11th writes output another job consumes, the one
    after it output a person opened two days ago."""
    cast, now = world.cast, world.now
    envs = [cast.dev, cast.staging, cast.prod]
    shapes: list[tuple[Job, dict]] = []
    consumers = []
    for i in range(start, start + count):
        team = cast.payments if i % 2 else cast.data
        env = envs[i % 3]
        fields: dict = {}
        shape: dict = {}
        if i % 17 == 0:
            fields["heartbeat"] = {"grace_seconds": 900}
            shape["heartbeat"] = True
        if i % 13 == 0:
            shape["fail_every"] = 7
        name = f"{team.slug}.fleet.job-{i:03d}"
        if i % 11 == 0:
            shape["output"] = 2048
            consumers.append((name, team, env))
        if i % 11 == 1:
            shape["output"] = 512
            fields["last_output_view_at"] = now - timedelta(days=2)
        shapes.append((job(name, team, env, **fields), shape))
    for upstream, team, env in consumers:
        consumer = job(
            upstream.replace(".job-", ".consumer-"),
            team,
            env,
            dependencies=[{"upstream": upstream, "condition": "success"}],
        )
        shapes.append((consumer, {}))
    return shapes


def add_healthy(world: World, start: int, count: int) -> None:
    """More healthy jobs with their month of history (for the query-count tests)."""
    shapes = _healthy(world, lambda *a, **k: _job(world, *a, **k), start, count)
    _history(world, shapes, random.Random(start))


def _history(world: World, shapes: list[tuple[Job, dict]], rng: random.Random) -> None:
    runs: list[Run] = []
    pending_attempts: list[tuple[int, dict]] = []
    for owner, shape in shapes:
        made, attempts = _runs_for(owner, world.now, rng, **shape)
        pending_attempts += [(len(runs) + index, values) for index, values in attempts]
        runs += made
    created = Run.objects.bulk_create(runs, batch_size=500)
    Attempt.objects.bulk_create(
        [
            Attempt(run_id=created[index].pk, tenant_id=created[index].tenant_id, **values)
            for index, values in pending_attempts
        ],
        batch_size=500,
    )
    # History, not today's inserts: runs created LAG_SECONDS after their slot, jobs four months old.
    ids = [run.pk for run in created]
    Run.objects.filter(pk__in=ids).update(created_at=F("scheduled_for") + timedelta(seconds=LAG_SECONDS))
    owners = [owner.pk for owner, _shape in shapes]
    Job.objects.filter(pk__in=[*owners, *(j.pk for j in world.jobs.values())]).update(
        created_at=world.now - timedelta(days=120)
    )
    for created_job in world.jobs.values():
        created_job.refresh_from_db(fields=["created_at"])


ACME_OVERSIZED = {
    ("payments.plant.oversized", "memory_mb", 4096, 512),
    ("payments.plant.slow-timeout", "timeout_seconds", 3600, 300),
}
ACME_ZOMBIES = {
    ("payments.plant.broken", "always_failing"),
    ("payments.plant.never", "no_runs"),
    ("legacy.plant.orphan", "team_without_members"),
    ("payments.plant.sunset", "past_sunset"),
    ("payments.plant.silent", "never_pinged"),
    ("payments.plant.unread", "unread_output"),
}
GLOBEX_OVERSIZED = {("ops.plant.oversized", "memory_mb", 4096, 384)}
GLOBEX_ZOMBIES = {("ops.plant.broken", "always_failing")}
