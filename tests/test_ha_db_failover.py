"""Database failover (issue 20, item 3) with real servers on loopback: a PostgreSQL primary with a
synchronous streaming replica (``pg_basebackup -R``), Governor's scheduler, a worker cluster (Redis
broker) and a client loop of approvals and runs (tests/ha_client.py), all on one libpq multi-host
DATABASE_URL with ``target_session_attrs=read-write``. The primary is killed with SIGKILL mid-load
and the replica promoted; later the new primary is restarted (``pg_ctl restart -m fast``). No
process is restarted; every committed approval and run is there exactly once, every run ends
succeeded, and the audit chain verifies."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests import pgnodes, procs
from tests.test_ha_backup import env, manage
from tests.test_worker_loss_redis import redis_url  # noqa: F401 - fixture

pytestmark = pytest.mark.ha


def committed(path: Path) -> list[tuple[int, int, int, float]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        step, change, run, at = line.split()
        rows.append((int(step), int(change), int(run), float(at)))
    return rows


def wait_for_steps(path: Path, count: int, timeout: float, logs) -> None:
    procs.wait_until(lambda: len(committed(path)) >= count, timeout, f"{count} committed client steps:\n{logs()}")


def first_commit_after(path: Path, moment: float, timeout: float, logs) -> float:
    def found():
        return next((at for *_, at in committed(path) if at > moment), None)

    return procs.wait_until(found, timeout, f"a commit after the fault:\n{logs()}")


def test_killing_the_primary_and_promoting_the_replica_loses_and_doubles_nothing(tmp_path, request, seeded_postgres):
    base = pgnodes.workdir()
    nodes: list[pgnodes.Node] = []
    processes: list[procs.Process] = []
    try:
        primary = pgnodes.copy_of(seeded_postgres[1], base, "primary").start()  # migrated and seeded
        nodes.append(primary)
        replica = primary.replica("replica")
        nodes.append(replica)
        # Synchronous: a commit is acknowledged once the replica has it, so promoting it loses nothing.
        primary.psql("ALTER SYSTEM SET synchronous_standby_names = '*'")
        primary.psql("SELECT pg_reload_conf()")
        procs.wait_until(
            lambda: primary.psql("SELECT sync_state FROM pg_stat_replication") == "sync", 20, "a synchronous replica"
        )
        url = (
            f"postgresql://{pgnodes.USER}@{primary.address},{replica.address}/{pgnodes.DB}"
            "?target_session_attrs=read-write&connect_timeout=3"
        )
        environ = env(
            url,
            GOVERNOR_Q_BROKER="redis",
            REDIS_URL=request.getfixturevalue("redis_url"),
            GOVERNOR_WORKERS="2",
            GOVERNOR_TASK_TIMEOUT="60",
            GOVERNOR_SCHEDULER_MAX_SLEEP_MS="200",
            GOVERNOR_REQUEUE_AFTER_MS="5000",
            GOVERNOR_MISFIRE_GRACE_SECONDS="600",
        )
        for name, command in (("scheduler", "run_scheduler"), ("cluster", "run_workers")):
            processes.append(procs.manage(name, command, env=environ, log_dir=tmp_path))
        processes[0].wait_for("scheduler started")
        processes[1].wait_for("ready for work", timeout=60)
        out = tmp_path / "committed.txt"
        client = procs.Process(
            "client",
            [sys.executable, str(procs.ROOT / "tests" / "ha_client.py"), str(out)],
            env=environ,
            log_dir=tmp_path,
        )
        processes.append(client)

        def logs() -> str:
            return "\n".join(f"--- {p.name}\n{p.output()[-2500:]}" for p in processes)

        wait_for_steps(out, 5, 60, logs)

        # 1. SIGKILL the primary mid-load; promote the replica a second later.
        primary.kill9()
        killed = time.time()
        time.sleep(1)
        replica.promote()
        promoted = time.time()
        resumed = first_commit_after(out, promoted, 60, logs)
        steps_at_kill = len(committed(out))
        wait_for_steps(out, steps_at_kill + 5, 60, logs)

        # 2. A fast restart of the (new) primary, mid-load.
        restarted = time.time()
        replica.restart_fast()
        back = time.time()
        resumed_after_restart = first_commit_after(out, back, 60, logs)
        wait_for_steps(out, len(committed(out)) + 5, 60, logs)
        client.stop()
        rows = committed(out)

        # Every committed step is there exactly once: its change applied, its job, its run.
        new = replica
        changes = new.psql(
            "SELECT justification, count(*), min(status) FROM approvals_changerequest "
            "WHERE justification LIKE 'ha-client step %' GROUP BY justification"
        ).splitlines()
        by_tag = {line.split("|")[0]: (int(line.split("|")[1]), line.split("|")[2]) for line in changes}
        for step, _change_id, _run_id, _at in rows:
            assert by_tag.get(f"ha-client step {step}") == (1, "applied"), (step, by_tag.get(f"ha-client step {step}"))
        # At most the one step in hand when the client stopped got further than its record.
        assert len(by_tag) - len(rows) in (0, 1), (len(by_tag), len(rows))
        assert all(count == 1 for count, _ in by_tag.values()), "no change doubled"
        runs_per_job = new.psql(
            "SELECT j.name, count(r.id) FROM jobs_job j LEFT JOIN jobs_run r ON r.job_id = j.id "
            "WHERE j.name LIKE 'payments.failover.step-%' GROUP BY j.name"
        ).splitlines()
        assert len(runs_per_job) == len(by_tag)
        # One run per step's job; the step in hand at the stop may not have triggered its run yet.
        assert sorted(line.rsplit("|", 1)[1] for line in runs_per_job)[-1] == "1", runs_per_job
        assert sum(line.endswith("|1") for line in runs_per_job) >= len(rows), runs_per_job
        run_ids = ",".join(str(run_id) for *_, run_id, _ in rows)

        def all_succeeded():
            return new.psql(f"SELECT count(*) FROM jobs_run WHERE id IN ({run_ids}) AND status = 'succeeded'") == str(
                len(rows)
            )

        procs.wait_until(all_succeeded, 90, f"every committed run to succeed:\n{logs()}")
        attempts = new.psql(
            f"SELECT run_id, count(*) FROM jobs_attempt WHERE run_id IN ({run_ids}) GROUP BY run_id HAVING count(*) <> 1"
        )
        assert attempts == "", f"runs with other than one attempt: {attempts}"
        assert new.psql("SELECT count(*) FROM jobs_run WHERE status = 'running'") == "0"
        for process in processes:
            assert process.proc.poll() is None or process is client, f"{process.name} died:\n{process.output()}"
        verified = manage(url, "verify_audit", "--json", "--checkpoint-dir", str(tmp_path / "checkpoints"))
        assert json.loads(verified.stdout)["ok"]
        facts = json.loads(manage(url, "dbcheck", "--json").stdout)
        assert facts["node"] == replica.address and facts["timeline"] == 2
        print(
            f"db failover: {len(rows)} committed steps; first commit {resumed - killed:.2f} s after the kill "
            f"({resumed - promoted:.2f} s after promote); after a fast restart {resumed_after_restart - restarted:.2f} s "
            f"({resumed_after_restart - back:.2f} s after it was back); lost 0, doubled 0",
            file=sys.stderr,
        )
    finally:
        for process in reversed(processes):
            process.stop()
        for node in nodes:
            node.stop()
        shutil.rmtree(base, ignore_errors=True)
