"""What the run-path benches share (``bench.execution`` on SQLite, ``bench.production`` on
PostgreSQL + Redis): the raw django-q2 tasks Governor is compared with, no-op job fixtures, the
worker cluster and scheduler processes, the alternating measuring rounds and start lateness.

A driver runs in a child process with its own database (``DATABASE_URL``) and broker (the ORM
broker, or Redis when ``REDIS_URL`` is set), so it never touches the development data.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from bench.report import percentile

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
WORKERS = "2"
POLL_S = 0.02
# The Redis key the counted raw task increments: a Redis broker shows no trace of a task once popped.
DONE_KEY = "governor-bench:raw-done"


def raw_true() -> None:
    """The raw django-q2 task: spawn /bin/true, nothing else."""
    subprocess.run(["/bin/true"], check=False)


def sandboxed_true() -> None:
    """The sandboxed raw task: /bin/true through the same sandbox a command job runs in
    (leased uid, fresh run directory, setpriv + prlimit + bwrap), nothing of Governor's runs."""
    sandboxed_spawn()


_redis: dict[int, object] = {}


def sandboxed_true_counted() -> None:
    """``sandboxed_true``, then one Redis ``INCR`` so the driver sees it done (a Redis broker keeps
    nothing of a task once a worker popped it); the INCR is one loopback round trip (~0.1 ms)."""
    sandboxed_spawn()
    client = _redis.get(os.getpid())
    if client is None:
        import redis
        from django.conf import settings

        client = _redis[os.getpid()] = redis.Redis.from_url(settings.REDIS_URL)
    client.incr(DONE_KEY)  # type: ignore[attr-defined]


def sandboxed_spawn() -> None:
    """The executor's sandbox chain for ``/bin/true``, exactly: setpriv + prlimit + GNU time (the
    job's own resource figures, read back after) + bwrap, in a fresh run directory. GNU time joined
    the executor's chain after this baseline was written; without it here the raw task spawned one
    exec less (1.55 ms of CPU a spawn, measured 200 spawns twice: 9.3-9.7 ms against 10.9-11.3 ms),
    which the comparison charged to Governor."""
    from django.conf import settings

    from jobs import executor, sandbox

    bwrap, run_root, uids, read_only = executor.ensure_sandbox()
    with sandbox.lease_uid(*sandbox.parse_uid_range(uids), os.path.join(run_root, executor.UID_LOCKS)) as lease:
        run_dir = tempfile.mkdtemp(prefix="bench-", dir=run_root)
        try:
            work, tmp = sandbox.prepare_run_dir(run_dir, lease.uid)
            report = os.path.join(run_dir, "usage")
            os.close(os.open(report, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.chown(report, lease.uid, lease.uid)
            argv, fds = sandbox.command(
                ["/bin/true"],
                uid=lease.uid,
                work=work,
                tmp=tmp,
                limits=settings.GOVERNOR_DEFAULT_LIMITS,
                bwrap=bwrap,
                read_only=read_only,
                usage_report=report,
            )
            try:
                subprocess.run(argv, check=False, pass_fds=fds, start_new_session=True, env={"PATH": "/usr/bin"})
            finally:
                for fd in fds:
                    os.close(fd)
            if sandbox.timed(report):
                sandbox.read_usage(report)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)


# --- the driver process ---


def run_driver(module: str, env: dict) -> dict:
    """Run ``python -m <module> --driver`` (its own database and workers, from ``env``) and return
    the figures it prints as its last line of JSON.

    DEBUG off, as on any real worker: with it on, Django keeps the text of every query (on SQLite
    quoting each parameter with an extra query), which taxes Governor's runs more than raw tasks."""
    env = dict(env, DJANGO_SETTINGS_MODULE="governor.settings", DEBUG="0")
    done = subprocess.run([sys.executable, "-m", module, "--driver"], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{module} bench failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report_figures(report, figures: dict, units: dict) -> None:
    """Each figure into the ``python -m bench`` report, with its unit and target from ``units``."""
    for key, value in figures.items():
        if value is None:
            continue
        unit, target = units.get(key, ("ms" if key.endswith("_ms") else "", ""))
        report.figure(key, value, unit, target=target)


def merge_results(figures: dict) -> dict:
    """A section run alone (``python -m bench.<section>``): merge its figures into bench/results.json."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update(figures)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return figures


# --- processes ---


def start_cluster(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=dict(env, GOVERNOR_WORKERS=WORKERS, LOG_LEVEL="WARNING"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def start_scheduler(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_scheduler"],
        cwd=ROOT,
        env=dict(env, LOG_LEVEL="WARNING"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def wait(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(POLL_S)
    raise RuntimeError("bench step did not finish in time")


def group_cpu_s(pgid: int) -> float:
    """CPU seconds used by the processes of a process group, with the children they reaped."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp; utime, stime, cutime, cstime follow at 11..14
            total += sum(int(value) for value in fields[11:15])
    return total / tick


def spawn_rate(spawn: Callable[[], object], seconds: float = 2) -> tuple[float, float]:
    """(spawns/s, CPU ms per spawn: this process and its children) of ``spawn`` in a loop."""
    count, started, before = 0, time.monotonic(), os.times()
    while time.monotonic() - started < seconds:
        spawn()
        count += 1
    elapsed, after = time.monotonic() - started, os.times()
    cpu = sum(after[:4]) - sum(before[:4])
    return round(count / elapsed, 1), round(cpu / count * 1000, 2)


# --- the broker, as the driver sees it ---


class Broker:
    """Enqueue raw tasks and tell when they are done, on the ORM broker or Redis."""

    def __init__(self) -> None:
        from django.conf import settings

        self.redis = None
        if settings.Q_CLUSTER.get("redis"):
            import redis

            self.redis = redis.Redis.from_url(settings.REDIS_URL)

    def drained(self) -> bool:
        """No task waiting or being executed (ORM: the row goes on acknowledgement; Redis: only
        waiting ones are visible, so the raw rounds count completions besides)."""
        if self.redis is None:
            from django_q.models import OrmQ

            return not OrmQ.objects.exists()
        from django_q.brokers import get_broker

        return get_broker().queue_size() == 0

    def raw_round(self, count: int, task: str) -> float:
        """Seconds for django-q2 alone to take and run ``count`` tasks ``task``."""
        from django_q.tasks import async_task

        if self.redis is not None:
            task = "bench._runpath.sandboxed_true_counted"
            self.redis.set(DONE_KEY, 0)
        started = time.monotonic()
        for _ in range(count):
            async_task(task, save=False)
        client = self.redis
        if client is None:
            wait(self.drained, 900)
        else:
            wait(lambda: int(client.get(DONE_KEY) or 0) >= count, 900)
        return time.monotonic() - started


# --- fixtures and rounds ---


def make_noop_jobs(count: int, slug: str = "bench") -> list[int]:
    """``count`` enabled no-op command jobs (``/bin/true``), straight into the table: change control
    is not what is measured here. Their ids, ascending."""
    from governance.models import Environment, Team, Tenant
    from jobs.models import Job

    tenant = Tenant.objects.create(slug=slug, name=slug.title())
    team = Team.objects.create(tenant=tenant, slug="bench", name="Bench")
    env = Environment.objects.create(tenant=tenant, slug="dev", name="Dev", required_approvals=0)
    Job.objects.bulk_create(
        [
            Job(
                tenant=tenant,
                team=team,
                environment=env,
                name=f"bench.noop.job-{i}",
                command=["/bin/true"],
                cron="0 0 1 1 *",
                timezone="UTC",
                timeout_seconds=60,
            )
            for i in range(count)
        ],
        batch_size=500,
    )
    return list(Job.objects.filter(tenant=tenant).order_by("id").values_list("id", flat=True))


def e2e_round(ids: list[int], broker: Broker) -> float:
    """Seconds from making the jobs ``ids`` due to every run recorded (and, on the ORM broker, every
    task acknowledged): the scheduler's tick creates the runs and enqueues them (jobs.queue)."""
    from django.db.models import Q
    from django.utils import timezone

    from jobs.models import TERMINAL_STATUSES, Job, Run
    from jobs.scheduler import tick

    now = timezone.now()
    Job.objects.filter(pk__in=ids).update(next_fire_at=now)
    started = time.monotonic()
    while tick(now=now).due:
        pass
    # Polled as cheaply as the raw queue (a range, not thousands of parameters): the driver shares the CPUs.
    done = Q(status__in=TERMINAL_STATUSES, job_id__gte=ids[0], job_id__lte=ids[-1])
    wait(lambda: Run.objects.filter(done).count() >= len(ids) and broker.drained(), 900)
    return time.monotonic() - started


def alternating_rounds(cluster_pid: int, ids: list[int], rounds: int, kinds: dict[str, Callable]) -> dict:
    """Measure each kind (name -> ``fn(ids_of_round)`` returning seconds) over ``ids`` in ``rounds``
    rounds, alternating their order so a load that comes and goes on this shared machine weighs on
    all alike. Per kind: total seconds and the cluster's CPU seconds (its processes and the jobs
    they reaped, which load does not skew); per round, the seconds of each kind."""
    size = max(1, len(ids) // rounds)
    chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
    seconds = dict.fromkeys(kinds, 0.0)
    cpu = dict.fromkeys(kinds, 0.0)
    per_round = []
    for index, chunk in enumerate(chunks):
        order = list(kinds) if index % 2 == 0 else list(reversed(kinds))
        this = {}
        for name in order:
            before = group_cpu_s(cluster_pid)
            took = kinds[name](chunk)
            cpu[name] += group_cpu_s(cluster_pid) - before
            seconds[name] += took
            this[name] = took
        per_round.append(this)
    return {"seconds": seconds, "cpu": cpu, "rounds": per_round}


def start_lateness(env: dict, ids: list[int], spacing_s: float) -> dict:
    """Runs due at spread instants (``spacing_s`` apart, below capacity), with a real
    ``run_scheduler`` process: start lateness (started_at - scheduled_for) and the per-run
    overhead parts (queue wait, start-up, execution, recording) in ms."""
    from django.db.models import Q
    from django.utils import timezone

    from jobs.models import TERMINAL_STATUSES, Job, Run

    scheduler = start_scheduler(env)
    try:
        first = timezone.now() + timedelta(seconds=3)
        for i, job_id in enumerate(ids):
            Job.objects.filter(pk=job_id).update(next_fire_at=first + timedelta(seconds=i * spacing_s))
        finished = Q(status__in=TERMINAL_STATUSES, job_id__in=ids)
        wait(lambda: Run.objects.filter(finished).count() >= len(ids), 300)
    finally:
        stop(scheduler)
    rows = list(
        Run.objects.filter(job_id__in=ids).values_list(
            "scheduled_for", "started_at", "queue_wait_ms", "startup_ms", "execution_ms", "recording_ms"
        )
    )
    late = [(started - due).total_seconds() * 1000 for due, started, *_ in rows if started is not None]
    parts = [row[2:] for row in rows]
    figures: dict[str, float | None] = {
        "start_lateness_p50_ms": round(percentile(late, 50), 1),
        "start_lateness_p99_ms": round(percentile(late, 99), 1),
    }
    overhead = [q + s + r for q, s, _, r in parts if q is not None and s is not None and r is not None]
    figures["overhead_p50_ms"] = round(percentile(overhead, 50), 2)
    figures["overhead_p99_ms"] = round(percentile(overhead, 99), 2)
    for index, name in enumerate(("queue_wait", "startup", "execution", "recording")):
        values = [value for row in parts if (value := row[index]) is not None]
        figures[f"{name}_p50_ms"] = round(percentile(values, 50), 2)
        figures[f"{name}_p99_ms"] = round(percentile(values, 99), 2)
    figures["mean_overhead_ms"] = round(sum(overhead) / len(overhead), 2) if overhead else None
    return figures
