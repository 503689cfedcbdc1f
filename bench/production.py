"""Production path: sandboxed no-op jobs on PostgreSQL + the Redis broker, 2 worker processes,
beside raw django-q2 tasks spawning the same sandboxed command on the same servers, in the same run.

The section starts its own PostgreSQL and Redis on loopback (free ports, temporary directories;
``tests.servers``, as the HA tests do) and removes them afterwards. Figures (``pg_`` keys):

- ``pg_e2e_runs_per_s``: no-op command jobs (``/bin/true`` in the sandbox) made due at once; the
  scheduler's tick creates their runs and enqueues them (``jobs.queue``), qcluster workers claim,
  execute and record them (``jobs.executor``) with their attempt;
- ``pg_raw_q2_runs_per_s``: django-q2 alone running tasks that spawn the same ``/bin/true`` in the
  same sandbox chain as the executor's (leased uid, fresh run directory, setpriv + prlimit + GNU
  time + bwrap; ``_runpath.sandboxed_spawn``); each ends with one
  Redis ``INCR`` so the driver can tell it finished;
- ``pg_e2e_vs_raw_q2`` (target >= 0.7), measured in alternating rounds (per round beside it);
- ``pg_e2e_cluster_cpu_ms_per_run`` / ``pg_raw_q2_cluster_cpu_ms_per_task``: CPU of the worker
  cluster's processes (and the jobs they reaped) per run, which the machine's load does not skew;
  ``pg_e2e_db_cpu_ms_per_run`` / ``pg_raw_q2_db_cpu_ms_per_task``: the PostgreSQL server's CPU
  per run in the same rounds (every backend, the driver's polling included);
- ``pg_start_lateness_p50_ms`` / ``p99`` (target p99 < 300 ms): runs due 0.1 s apart, below
  capacity, with a real ``run_scheduler`` process; the overhead parts beside;
- ``pg_10k_instant_all_started_s`` / ``pg_10k_instant_all_finished_s``: 10,000 jobs due at one
  instant with the real scheduler and the cluster: from that instant until the last run started,
  and until the last one finished (``..._all_enqueued_s``: until the last was queued).

``python -m bench production`` runs it alone (or ``python -m bench.production``).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench import _runpath as rp

TITLE = "Production path: PostgreSQL + Redis, sandboxed jobs, 2 workers"
E2E_RUNS = int(os.environ.get("BENCH_PG_E2E_RUNS", "3000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "6"))
LATENESS_RUNS = int(os.environ.get("BENCH_LATENESS_RUNS", "100"))
LATENESS_SPACING_S = 0.1  # 10 runs/s: well below capacity
INSTANT_JOBS = int(os.environ.get("BENCH_INSTANT_JOBS", "10000"))
UNITS = {
    "pg_e2e_runs_per_s": ("runs/s", ">= 0.7 x pg_raw_q2_runs_per_s"),
    "pg_raw_q2_runs_per_s": ("tasks/s", ""),
    "pg_e2e_vs_raw_q2": ("ratio", ">= 0.7"),
    "pg_e2e_cluster_cpu_ms_per_run": ("ms", ""),
    "pg_raw_q2_cluster_cpu_ms_per_task": ("ms", ""),
    "pg_start_lateness_p50_ms": ("ms", ""),
    "pg_start_lateness_p99_ms": ("ms", "< 300"),
    "pg_10k_instant_all_started_s": ("s", ""),
    "pg_10k_instant_all_finished_s": ("s", ""),
    "pg_10k_instant_all_enqueued_s": ("s", ""),
}


def measure() -> dict:
    """Start PostgreSQL and Redis, run the driver against them in a child process, stop them."""
    from tests.servers import RedisServer, start_primary

    postgres = start_primary()
    try:
        with tempfile.TemporaryDirectory(prefix="governor-bench-redis-") as redis_dir:
            redis = RedisServer(Path(redis_dir))
            try:
                postmaster = (postgres.data / "postmaster.pid").read_text().split()[0]
                env = dict(
                    os.environ,
                    DATABASE_URL=postgres.url,
                    REDIS_URL=redis.url,
                    GOVERNOR_Q_BROKER="redis",
                    BENCH_POSTMASTER_PID=postmaster,
                )
                return rp.run_driver("bench.production", env)
            finally:
                redis.stop()
    finally:
        postgres.stop()


def run(report) -> None:
    """The ``python -m bench`` section."""
    rp.report_figures(report, measure(), UNITS)


# --- the driver (child process, on the servers measure() started) ---


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process, its live children and the children it reaped (the postmaster:
    every backend, ended ones included)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid:
            total += sum(int(value) for value in fields[11:15])
        elif int(fields[1]) == pid:  # ppid
            total += sum(int(value) for value in fields[11:13])
    return total / tick


def _instant(env: dict, ids: list[int]) -> dict:
    """``ids`` all due at one instant, with a real scheduler and the running cluster."""
    from django.db.models import Max
    from django.utils import timezone

    from jobs.models import TERMINAL_STATUSES, Job, Run

    scheduler = rp.start_scheduler(env)
    try:
        due = (timezone.now() + timedelta(seconds=3)).replace(microsecond=0)
        Job.objects.filter(pk__in=ids).update(next_fire_at=due)
        mine = Run.objects.filter(job_id__gte=ids[0], job_id__lte=ids[-1])
        rp.wait(lambda: mine.filter(status__in=TERMINAL_STATUSES).count() >= len(ids), 3600)
    finally:
        rp.stop(scheduler)
    last = mine.aggregate(queued=Max("queued_at"), started=Max("started_at"), finished=Max("finished_at"))
    key = f"pg_{len(ids) // 1000}k_instant" if len(ids) >= 1000 else f"pg_{len(ids)}_instant"
    return {
        f"{key}_all_enqueued_s": round((last["queued"] - due).total_seconds(), 2),
        f"{key}_all_started_s": round((last["started"] - due).total_seconds(), 2),
        f"{key}_all_finished_s": round((last["finished"] - due).total_seconds(), 2),
        f"{key}_succeeded": mine.filter(status="succeeded").count(),
    }


def _driver() -> dict:
    import django

    django.setup()
    from django.core.management import call_command

    from jobs.models import Run

    call_command("migrate", verbosity=0)
    job_ids = rp.make_noop_jobs(E2E_RUNS + LATENESS_RUNS)
    e2e_ids, late_ids = job_ids[:E2E_RUNS], job_ids[E2E_RUNS:]
    instant_ids = rp.make_noop_jobs(INSTANT_JOBS, slug="bench-instant") if INSTANT_JOBS else []
    postmaster = int(os.environ["BENCH_POSTMASTER_PID"])
    broker = rp.Broker()
    child_env = dict(os.environ)
    figures: dict = {"pg_bench_load_1m_start": round(os.getloadavg()[0], 2)}
    rp.sandboxed_spawn()  # the driver's first sandbox: its one-time check
    cluster = rp.start_cluster(child_env)
    try:
        broker.raw_round(2, "bench._runpath.sandboxed_true")  # warm up: both workers answer
        db_cpu: dict[str, float] = {"raw": 0.0, "e2e": 0.0}

        def with_db_cpu(name, fn):
            def measured(ids):
                before = _tree_cpu_s(postmaster)
                seconds = fn(ids)
                db_cpu[name] += _tree_cpu_s(postmaster) - before
                return seconds

            return measured

        kinds = {
            "raw": with_db_cpu("raw", lambda ids: broker.raw_round(len(ids), "bench._runpath.sandboxed_true")),
            "e2e": with_db_cpu("e2e", lambda ids: rp.e2e_round(ids, broker)),
        }
        measured = rp.alternating_rounds(cluster.pid, e2e_ids, ROUNDS, kinds)
        seconds, cpu = measured["seconds"], measured["cpu"]
        pair_ratios = [r["raw"] / r["e2e"] for r in measured["rounds"]]
        figures["pg_e2e_runs_per_s"] = round(E2E_RUNS / seconds["e2e"], 1)
        figures["pg_raw_q2_runs_per_s"] = round(E2E_RUNS / seconds["raw"], 1)
        figures["pg_e2e_vs_raw_q2"] = round(seconds["raw"] / seconds["e2e"], 3)
        figures["pg_e2e_vs_raw_q2_round_min"] = round(min(pair_ratios), 3)
        figures["pg_e2e_vs_raw_q2_round_median"] = round(statistics.median(pair_ratios), 3)
        figures["pg_e2e_vs_raw_q2_round_max"] = round(max(pair_ratios), 3)
        figures["pg_e2e_cluster_cpu_ms_per_run"] = round(cpu["e2e"] / E2E_RUNS * 1000, 2)
        figures["pg_raw_q2_cluster_cpu_ms_per_task"] = round(cpu["raw"] / E2E_RUNS * 1000, 2)
        figures["pg_e2e_db_cpu_ms_per_run"] = round(db_cpu["e2e"] / E2E_RUNS * 1000, 2)
        figures["pg_raw_q2_db_cpu_ms_per_task"] = round(db_cpu["raw"] / E2E_RUNS * 1000, 2)
        figures["pg_e2e_succeeded"] = Run.objects.filter(job_id__in=e2e_ids, status="succeeded").count()
        late = rp.start_lateness(child_env, late_ids, LATENESS_SPACING_S)
        figures.update({f"pg_{key}": value for key, value in late.items()})
        if instant_ids:
            started = time.monotonic()
            figures.update(_instant(child_env, instant_ids))
            figures["pg_instant_phase_s"] = round(time.monotonic() - started, 1)
    finally:
        rp.stop(cluster)
    figures["pg_bench_workers"] = int(rp.WORKERS)
    figures["pg_bench_load_1m_end"] = round(os.getloadavg()[0], 2)
    return figures


if __name__ == "__main__":
    if "--driver" in sys.argv:
        print(json.dumps(_driver()))
    else:
        print(json.dumps(rp.merge_results(measure()), indent=2, sort_keys=True))
