"""Execution bench: how fast and how punctually no-op command jobs go through
scheduler -> django-q2 -> executor -> recorded, beside the raw rates of the parts.

All figures come from one run on one fresh SQLite database (ORM broker, two
workers), so they are comparable:
- ``raw_q2_runs_per_s``: django-q2 alone running tasks that spawn ``/bin/true``;
- ``e2e_runs_per_s``: no-op jobs made due at once, claimed by the scheduler's tick,
  executed by Governor's executor and recorded with their attempt;
- ``spawn_per_s``: ``subprocess.run(["/bin/true"])`` in a loop, one process;
  ``sandbox_spawn_per_s`` / ``sandbox_spawn_cpu_ms``: the same ``/bin/true`` through the job
  sandbox (``jobs.sandbox``: setpriv, prlimit, GNU time, bwrap, a leased uid and a fresh run directory),
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
import statistics
import subprocess
import sys
from pathlib import Path

from bench import _runpath as rp

DB_PATH = rp.ROOT / "var" / "bench-execution.sqlite3"
# Rounds of 1,000: at 500 a round lasted about a second, and the ratio of neighbouring rounds
# moved by +-0.15 with whatever else the shared machine ran.
E2E_RUNS = int(os.environ.get("BENCH_E2E_RUNS", "6000"))
LATENESS_RUNS = int(os.environ.get("BENCH_LATENESS_RUNS", "100"))
LATENESS_SPACING_S = 0.1  # 10 runs/s: well below capacity
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "6"))


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
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{DB_PATH}")
    env.pop("REDIS_URL", None)
    env.pop("GOVERNOR_Q_BROKER", None)
    return rp.run_driver("bench.execution", env)


def run(report) -> None:
    """The ``python -m bench`` section."""
    rp.report_figures(report, measure(), UNITS)


def run_alone() -> dict:
    """``python -m bench.execution``: measure and merge the figures into bench/results.json."""
    return rp.merge_results(measure())


# --- the driver (child process, own database) ---


def _driver() -> dict:
    import django

    django.setup()
    from django.core.management import call_command

    from jobs.models import Run

    call_command("migrate", verbosity=0)
    job_ids = rp.make_noop_jobs(E2E_RUNS + LATENESS_RUNS)
    e2e_ids, late_ids = job_ids[:E2E_RUNS], job_ids[E2E_RUNS:]
    broker = rp.Broker()
    child_env = dict(os.environ)
    # The machine is shared: the load at start and end says how much to trust the figures.
    figures: dict = {"execution_bench_load_1m_start": round(os.getloadavg()[0], 2)}

    # Raw spawn rate, without and with the sandbox.
    figures["spawn_per_s"], figures["spawn_cpu_ms"] = rp.spawn_rate(lambda: subprocess.run(["/bin/true"], check=False))
    rp.sandboxed_spawn()  # the worker's first sandbox: its one-time check
    figures["sandbox_spawn_per_s"], figures["sandbox_spawn_cpu_ms"] = rp.spawn_rate(rp.sandboxed_spawn)

    cluster = rp.start_cluster(child_env)
    try:
        # Warm up: the cluster is up once it has drained a first task.
        broker.raw_round(1, "bench._runpath.raw_true")
        kinds = {
            "raw": lambda ids: broker.raw_round(len(ids), "bench._runpath.raw_true"),
            "sandboxed": lambda ids: broker.raw_round(len(ids), "bench._runpath.sandboxed_true"),
            "e2e": lambda ids: rp.e2e_round(ids, broker),
        }
        measured = rp.alternating_rounds(cluster.pid, e2e_ids, ROUNDS, kinds)
        seconds, cpu = measured["seconds"], measured["cpu"]
        # Governor against django-q2 tasks spawning the same command in the same sandbox: what
        # Governor adds on top of a queue and a sandbox (the unsandboxed raw task is no option).
        pair_ratios = [r["sandboxed"] / r["e2e"] for r in measured["rounds"]]
        # How much the ratio moved between neighbouring rounds: the spread the shared machine adds.
        figures["e2e_vs_raw_q2_sandboxed_round_min"] = round(min(pair_ratios), 3)
        figures["e2e_vs_raw_q2_sandboxed_round_median"] = round(statistics.median(pair_ratios), 3)
        figures["e2e_vs_raw_q2_sandboxed_round_max"] = round(max(pair_ratios), 3)
        figures["raw_q2_runs_per_s"] = round(E2E_RUNS / seconds["raw"], 1)
        figures["e2e_runs_per_s"] = round(E2E_RUNS / seconds["e2e"], 1)
        figures["raw_q2_cluster_cpu_ms_per_task"] = round(cpu["raw"] / E2E_RUNS * 1000, 2)
        figures["raw_q2_sandboxed_runs_per_s"] = round(E2E_RUNS / seconds["sandboxed"], 1)
        figures["raw_q2_sandboxed_cluster_cpu_ms_per_task"] = round(cpu["sandboxed"] / E2E_RUNS * 1000, 2)
        figures["sandbox_cost_cluster_cpu_ms_per_run"] = round((cpu["sandboxed"] - cpu["raw"]) / E2E_RUNS * 1000, 2)
        figures["e2e_cluster_cpu_ms_per_run"] = round(cpu["e2e"] / E2E_RUNS * 1000, 2)
        figures["e2e_succeeded"] = Run.objects.filter(job_id__in=e2e_ids, status="succeeded").count()
        figures["e2e_vs_raw_q2"] = round(figures["e2e_runs_per_s"] / figures["raw_q2_runs_per_s"], 3)
        figures["e2e_vs_raw_q2_sandboxed"] = round(
            figures["e2e_runs_per_s"] / figures["raw_q2_sandboxed_runs_per_s"], 3
        )
        figures["e2e_vs_spawn"] = round(figures["e2e_runs_per_s"] / figures["spawn_per_s"], 3)
        burst_queue = [
            q for q in Run.objects.filter(job_id__in=e2e_ids).values_list("queue_wait_ms", flat=True) if q is not None
        ]
        # Start lateness and overhead below capacity (in the burst, queue wait is mostly the backlog).
        late = rp.start_lateness(child_env, late_ids, LATENESS_SPACING_S)
    finally:
        rp.stop(cluster)
    figures["execution_bench_mean_overhead_ms"] = late.pop("mean_overhead_ms")
    figures.update(late)
    figures["burst_queue_wait_p50_ms"] = round(rp.percentile(burst_queue, 50), 1)
    figures["execution_bench_workers"] = int(rp.WORKERS)
    figures["execution_bench_load_1m_end"] = round(os.getloadavg()[0], 2)
    return figures


if __name__ == "__main__":
    if "--driver" in sys.argv:
        print(json.dumps(_driver()))
    else:
        print(json.dumps(run_alone(), indent=2, sort_keys=True))
