"""Execution bench: how fast and how punctually no-op command jobs go through
scheduler -> django-q2 -> executor -> recorded, beside the raw rates of the parts.

All figures come from one run on one fresh SQLite database (ORM broker, two
workers), so they are comparable:
- ``raw_q2_runs_per_s``: django-q2 alone running tasks that spawn ``/bin/true``;
- ``e2e_runs_per_s``: no-op jobs made due at once, claimed by the scheduler's tick,
  executed by Governor's executor and recorded with their attempt;
- ``spawn_per_s``: ``subprocess.run(["/bin/true"])`` in a loop, one process;
  ``sandbox_spawn_per_s`` / ``sandbox_spawn_cpu_ms``: the same ``/bin/true`` through the job
  sandbox (``jobs.sandbox``: setpriv, prlimit, bwrap, a leased uid and a fresh run directory),
  and the CPU each spawn costs, against ``spawn_cpu_ms`` without;
- ``e2e_vs_raw_q2_sandboxed``: end to end against django-q2 tasks spawning the same ``/bin/true``
  in the same sandbox (target >= 0.7, per round beside it): what Governor costs on top of a
  queue and a sandbox; ``e2e_vs_raw_q2`` compares with unsandboxed raw tasks, for reference;
- ``raw_q2_sandboxed_runs_per_s`` / ``raw_q2_sandboxed_cluster_cpu_ms_per_task``: django-q2
  alone running tasks that spawn ``/bin/true`` in the sandbox, in the same rounds as the
  unsandboxed raw tasks, so ``sandbox_cost_cluster_cpu_ms_per_run`` (the difference in the
  workers' CPU per run) is the sandbox's price on this machine. The unsandboxed spawn exists
  only here, never in Governor;
- ``start_lateness_p50_ms``/``p99``: runs due at spread instants, below capacity,
  with a real ``run_scheduler`` process: started_at - scheduled_for;
- ``overhead_p50_ms``/``p99``: per run below capacity (the lateness runs), queue wait +
  start-up + recording (everything but the process's own execution), with the parts
  reported beside.

``make bench`` runs it as a section of ``python -m bench``; ``python -m bench.execution``
runs it alone. The driver runs in a child process with its own database and its own
django-q2 cluster, so it never touches the development data or another section's.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
DB_PATH = ROOT / "var" / "bench-execution.sqlite3"
# Rounds of 1,000: at 500 a round lasted about a second, and the ratio of neighbouring rounds
# moved by +-0.15 with whatever else the shared machine ran.
E2E_RUNS = int(os.environ.get("BENCH_E2E_RUNS", "6000"))
LATENESS_RUNS = int(os.environ.get("BENCH_LATENESS_RUNS", "100"))
LATENESS_SPACING_S = 0.1  # 10 runs/s: well below capacity
WORKERS = "2"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "6"))


def raw_true() -> None:
    """The raw django-q2 task: spawn /bin/true, nothing else."""
    subprocess.run(["/bin/true"], check=False)


def sandboxed_true() -> None:
    """The sandboxed raw task: /bin/true through the same sandbox a command job runs in
    (leased uid, fresh run directory, setpriv + prlimit + bwrap), nothing of Governor's runs."""
    _sandboxed_spawn()


def _sandboxed_spawn() -> None:
    import shutil
    import tempfile

    from django.conf import settings

    from jobs import executor, sandbox

    bwrap, run_root, uids, read_only = executor.ensure_sandbox()
    with sandbox.lease_uid(*sandbox.parse_uid_range(uids), os.path.join(run_root, executor.UID_LOCKS)) as lease:
        run_dir = tempfile.mkdtemp(prefix="bench-", dir=run_root)
        try:
            work, tmp = sandbox.prepare_run_dir(run_dir, lease.uid)
            argv, fds = sandbox.command(
                ["/bin/true"],
                uid=lease.uid,
                work=work,
                tmp=tmp,
                limits=settings.GOVERNOR_DEFAULT_LIMITS,
                bwrap=bwrap,
                read_only=read_only,
            )
            try:
                subprocess.run(argv, check=False, pass_fds=fds, start_new_session=True, env={"PATH": "/usr/bin"})
            finally:
                for fd in fds:
                    os.close(fd)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


TITLE = "Execution: scheduler -> django-q2 -> executor -> recorded"
UNITS = {
    "e2e_runs_per_s": ("runs/s", ">= 0.7 x raw_q2_sandboxed_runs_per_s"),
    "raw_q2_runs_per_s": ("tasks/s", ""),
    "spawn_per_s": ("spawns/s", ""),
    "sandbox_spawn_per_s": ("spawns/s", ""),
    "spawn_cpu_ms": ("ms", ""),
    "sandbox_spawn_cpu_ms": ("ms", ""),
    "raw_q2_sandboxed_runs_per_s": ("tasks/s", ""),
    "raw_q2_sandboxed_cluster_cpu_ms_per_task": ("ms", ""),
    "sandbox_cost_cluster_cpu_ms_per_run": ("ms", ""),
    "e2e_vs_raw_q2": ("ratio", ""),
    "e2e_vs_raw_q2_sandboxed": ("ratio", ">= 0.7"),
    "e2e_vs_spawn": ("ratio", ""),
    "start_lateness_p50_ms": ("ms", ""),
    "start_lateness_p99_ms": ("ms", "< 300"),
    "overhead_p50_ms": ("ms", ""),
    "overhead_p99_ms": ("ms", ""),
}


def measure() -> dict:
    """Run the driver in a child process (own database, own workers) and return its figures."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DB_PATH}{suffix}").unlink(missing_ok=True)
    # DEBUG off, as on any real worker: with it on, Django keeps the text of every query (on SQLite
    # quoting each parameter with an extra query), which taxes Governor's runs more than raw tasks.
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{DB_PATH}", DJANGO_SETTINGS_MODULE="governor.settings", DEBUG="0")
    env.pop("REDIS_URL", None)
    env.pop("GOVERNOR_Q_BROKER", None)
    done = subprocess.run(
        [sys.executable, "-m", "bench.execution", "--driver"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"execution bench failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(report) -> None:
    """The ``python -m bench`` section."""
    for key, value in measure().items():
        if value is None:
            continue
        unit, target = UNITS.get(key, ("ms" if key.endswith("_ms") else "", ""))
        report.figure(key, value, unit, target=target)


def run_alone() -> dict:
    """``python -m bench.execution``: measure and merge the figures into bench/results.json."""
    figures = measure()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update(figures)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return figures


# --- the driver (child process, own database) ---


def _cluster(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=dict(env, GOVERNOR_WORKERS=WORKERS, LOG_LEVEL="WARNING"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def _wait(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise RuntimeError("bench step did not finish in time")


def _group_cpu_s(pgid: int) -> float:
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


def _raw_round(ids: list[int], task: str = "bench.execution.raw_true") -> float:
    """Seconds for django-q2 alone to take and run ``len(ids)`` /bin/true tasks."""
    from django_q.models import OrmQ
    from django_q.tasks import async_task

    started = time.monotonic()
    for _ in ids:
        async_task(task, save=False)
    _wait(lambda: not OrmQ.objects.exists(), 900)
    return time.monotonic() - started


def _sandboxed_round(ids: list[int]) -> float:
    """Seconds for django-q2 alone to run ``len(ids)`` tasks spawning /bin/true in the sandbox."""
    return _raw_round(ids, "bench.execution.sandboxed_true")


def _spawn_rate(spawn, seconds: float = 2) -> tuple[float, float]:
    """(spawns/s, CPU ms per spawn: this process and its children) of ``spawn`` in a loop."""
    count, started, before = 0, time.monotonic(), os.times()
    while time.monotonic() - started < seconds:
        spawn()
        count += 1
    elapsed, after = time.monotonic() - started, os.times()
    cpu = sum(after[:4]) - sum(before[:4])
    return round(count / elapsed, 1), round(cpu / count * 1000, 2)


def _e2e_round(ids: list[int]) -> float:
    """Seconds from making the jobs ``ids`` due to every run recorded and every task acknowledged."""
    from django.db.models import Q
    from django.utils import timezone
    from django_q.models import OrmQ

    from jobs.models import TERMINAL_STATUSES, Job, Run
    from jobs.scheduler import tick

    now = timezone.now()
    Job.objects.filter(pk__in=ids).update(next_fire_at=now)
    started = time.monotonic()
    while tick(now=now).due:
        pass
    # Polled as cheaply as the raw queue (a range, not thousands of parameters): the driver shares the CPUs.
    done = Q(status__in=TERMINAL_STATUSES, job_id__gte=ids[0], job_id__lte=ids[-1])
    _wait(lambda: Run.objects.filter(done).count() >= len(ids) and not OrmQ.objects.exists(), 900)
    return time.monotonic() - started


def _driver() -> dict:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db.models import Q
    from django.utils import timezone
    from django_q.models import OrmQ
    from django_q.tasks import async_task

    from governance.models import Environment, Team, Tenant
    from jobs.models import TERMINAL_STATUSES, Job, Run

    call_command("migrate", verbosity=0)
    tenant = Tenant.objects.create(slug="bench", name="Bench")
    team = Team.objects.create(tenant=tenant, slug="bench", name="Bench")
    env = Environment.objects.create(tenant=tenant, slug="dev", name="Dev", required_approvals=0)
    # Bench fixtures go straight to the table: change control is not what is measured here.
    total = E2E_RUNS + LATENESS_RUNS
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
            for i in range(total)
        ],
        batch_size=500,
    )
    job_ids = list(Job.objects.order_by("id").values_list("id", flat=True))
    e2e_ids, late_ids = job_ids[:E2E_RUNS], job_ids[E2E_RUNS:]
    child_env = dict(os.environ)
    # The machine is shared: the load at start and end says how much to trust the figures.
    figures: dict = {"execution_bench_load_1m_start": round(os.getloadavg()[0], 2)}

    # Raw spawn rate, without and with the sandbox.
    figures["spawn_per_s"], figures["spawn_cpu_ms"] = _spawn_rate(lambda: subprocess.run(["/bin/true"], check=False))
    _sandboxed_spawn()  # the worker's first sandbox: its one-time check
    figures["sandbox_spawn_per_s"], figures["sandbox_spawn_cpu_ms"] = _spawn_rate(_sandboxed_spawn)

    cluster = _cluster(child_env)
    try:
        # Warm up: the cluster is up once it has drained a first task.
        async_task("bench.execution.raw_true", save=False)
        _wait(lambda: not OrmQ.objects.exists(), 60)

        # Raw django-q2 and end to end in alternating rounds of the same size, so a load that
        # comes and goes on this shared machine weighs on both alike. Beside wall time, the CPU
        # the cluster's processes (and the jobs they reaped) used per task, which load does not skew.
        raw_s = raw_cpu = e2e_s = e2e_cpu = sandboxed_s = sandboxed_cpu = 0.0
        size = max(1, E2E_RUNS // ROUNDS)
        rounds = [e2e_ids[i : i + size] for i in range(0, E2E_RUNS, size)]
        pair_ratios = []
        for index, ids in enumerate(rounds):
            order = (
                (_raw_round, _sandboxed_round, _e2e_round)
                if index % 2 == 0
                else (_e2e_round, _sandboxed_round, _raw_round)
            )
            pair = {}
            for measure_round in order:
                cpu_before = _group_cpu_s(cluster.pid)
                seconds = measure_round(ids)
                cpu = _group_cpu_s(cluster.pid) - cpu_before
                pair[measure_round] = seconds
                if measure_round is _raw_round:
                    raw_s, raw_cpu = raw_s + seconds, raw_cpu + cpu
                elif measure_round is _sandboxed_round:
                    sandboxed_s, sandboxed_cpu = sandboxed_s + seconds, sandboxed_cpu + cpu
                else:
                    e2e_s, e2e_cpu = e2e_s + seconds, e2e_cpu + cpu
            # Governor against django-q2 tasks spawning the same command in the same sandbox: what
            # Governor adds on top of a queue and a sandbox (the unsandboxed raw task is no option).
            pair_ratios.append(pair[_sandboxed_round] / pair[_e2e_round])
        # How much the ratio moved between neighbouring rounds: the spread the shared machine adds.
        figures["e2e_vs_raw_q2_sandboxed_round_min"] = round(min(pair_ratios), 3)
        figures["e2e_vs_raw_q2_sandboxed_round_median"] = round(statistics.median(pair_ratios), 3)
        figures["e2e_vs_raw_q2_sandboxed_round_max"] = round(max(pair_ratios), 3)
        figures["raw_q2_runs_per_s"] = round(E2E_RUNS / raw_s, 1)
        figures["e2e_runs_per_s"] = round(E2E_RUNS / e2e_s, 1)
        figures["raw_q2_cluster_cpu_ms_per_task"] = round(raw_cpu / E2E_RUNS * 1000, 2)
        figures["raw_q2_sandboxed_runs_per_s"] = round(E2E_RUNS / sandboxed_s, 1)
        figures["raw_q2_sandboxed_cluster_cpu_ms_per_task"] = round(sandboxed_cpu / E2E_RUNS * 1000, 2)
        figures["sandbox_cost_cluster_cpu_ms_per_run"] = round((sandboxed_cpu - raw_cpu) / E2E_RUNS * 1000, 2)
        figures["e2e_cluster_cpu_ms_per_run"] = round(e2e_cpu / E2E_RUNS * 1000, 2)
        figures["e2e_succeeded"] = Run.objects.filter(job_id__in=e2e_ids, status="succeeded").count()
        figures["e2e_vs_raw_q2"] = round(figures["e2e_runs_per_s"] / figures["raw_q2_runs_per_s"], 3)
        figures["e2e_vs_raw_q2_sandboxed"] = round(
            figures["e2e_runs_per_s"] / figures["raw_q2_sandboxed_runs_per_s"], 3
        )
        figures["e2e_vs_spawn"] = round(figures["e2e_runs_per_s"] / figures["spawn_per_s"], 3)
        finished = Q(status__in=TERMINAL_STATUSES)
        burst_queue = [
            q for q in Run.objects.filter(job_id__in=e2e_ids).values_list("queue_wait_ms", flat=True) if q is not None
        ]

        # Start lateness below capacity, with a real scheduler process.
        scheduler = subprocess.Popen(
            [sys.executable, "manage.py", "run_scheduler"],
            cwd=ROOT,
            env=dict(child_env, LOG_LEVEL="WARNING"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            first = timezone.now() + timedelta(seconds=3)
            for i, job_id in enumerate(late_ids):
                Job.objects.filter(pk=job_id).update(next_fire_at=first + timedelta(seconds=i * LATENESS_SPACING_S))
            _wait(lambda: Run.objects.filter(finished, job_id__in=late_ids).count() >= LATENESS_RUNS, 300)
        finally:
            _stop(scheduler)
        late = [
            (r.started_at - r.scheduled_for).total_seconds() * 1000
            for r in Run.objects.filter(job_id__in=late_ids).only("started_at", "scheduled_for")
            if r.started_at is not None
        ]
        figures["start_lateness_p50_ms"] = round(percentile(late, 50), 1)
        figures["start_lateness_p99_ms"] = round(percentile(late, 99), 1)
        # Overhead below capacity: in the burst, queue wait is mostly the backlog itself.
        parts = list(
            Run.objects.filter(job_id__in=late_ids).values_list(
                "queue_wait_ms", "startup_ms", "execution_ms", "recording_ms"
            )
        )
    finally:
        _stop(cluster)

    overhead = [q + s + r for q, s, _, r in parts if q is not None and s is not None and r is not None]
    figures["overhead_p50_ms"] = round(percentile(overhead, 50), 2)
    figures["overhead_p99_ms"] = round(percentile(overhead, 99), 2)
    for index, name in enumerate(("queue_wait", "startup", "execution", "recording")):
        values = [value for row in parts if (value := row[index]) is not None]
        figures[f"{name}_p50_ms"] = round(percentile(values, 50), 2)
        figures[f"{name}_p99_ms"] = round(percentile(values, 99), 2)
    figures["burst_queue_wait_p50_ms"] = round(percentile(burst_queue, 50), 1)
    figures["execution_bench_workers"] = int(WORKERS)
    figures["execution_bench_load_1m_end"] = round(os.getloadavg()[0], 2)
    figures["execution_bench_mean_overhead_ms"] = round(statistics.fmean(overhead), 2) if overhead else None
    return figures


if __name__ == "__main__":
    if "--driver" in sys.argv:
        print(json.dumps(_driver()))
    else:
        print(json.dumps(run_alone(), indent=2, sort_keys=True))
