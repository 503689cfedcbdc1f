"""A worker cluster started by ``run_workers`` stops as one (issue 19): its leader killed with SIGKILL
takes the sentinel and the workers with it (django-q2's own ``qcluster`` leaves them running headless,
reparented to PID 1), and ``cluster_status`` reports a cluster whose leader is gone."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from jobs import cluster
from tests import procs

pytestmark = pytest.mark.slow


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for p in cluster._processes(cluster.Path("/proc")).values():
        children.setdefault(p.ppid, []).append(p.pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    procs_now = cluster._processes(cluster.Path("/proc"))  # zombies excluded
    return {pid for pid in pids if pid in procs_now}


@pytest.fixture
def workers(tcast, tmp_path):
    env = procs.django_env(GOVERNOR_WORKERS="2")
    leader = procs.manage("workers", "run_workers", env=env, log_dir=tmp_path)
    nodes: set[int] = set()
    try:
        leader.wait_for("running.", timeout=30)
        # Sentinel, two workers, pusher, monitor.
        nodes = procs.wait_until(lambda: (d := descendants(leader.proc.pid)) and len(d) >= 5 and d, 10, "the cluster")
        yield leader, nodes
    finally:
        for pid in alive(nodes):
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        leader.stop()


def test_the_leader_killed_alone_takes_its_sentinel_and_workers_with_it(workers):
    leader, nodes = workers
    status = cluster.cluster_status()
    assert set(status.leaders[leader.proc.pid]) == {leader.proc.pid, *nodes}
    os.kill(leader.proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    procs.wait_until(lambda: not alive(nodes), 10, f"the headless processes {alive(nodes)} to stop")
    print(f"cluster of {len(nodes)} processes gone {time.monotonic() - killed:.2f} s after its leader")


# A subreaper (as systemd or a container's init is) in a process group of its own: the cluster's orphans
# become its children, and their process group, which it is not in, is not orphaned (the kernel would
# send SIGHUP and SIGCONT to an orphaned group holding a stopped process).
SUBREAPER = """
import ctypes, os, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
leader = subprocess.Popen([sys.executable, "manage.py", "run_workers"], process_group=0)
print("leader", leader.pid, flush=True)
while True:
    time.sleep(0.2)
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        pass
"""


def test_cluster_status_reports_a_headless_cluster(tcast, tmp_path):
    env = procs.django_env(GOVERNOR_WORKERS="1")
    reaper = procs.Process("subreaper", [sys.executable, "-c", SUBREAPER], env=env, log_dir=tmp_path)
    nodes: set[int] = set()
    try:
        reaper.wait_for("running.", timeout=30)
        leader = int(reaper.output().split("leader ", 1)[1].split()[0])

        def named_cluster() -> set[int] | None:
            # Every process up and renamed (a process forked a moment ago still has its parent's
            # name, and a sentinel stopped before renaming itself is no cluster's: seen under load).
            found = descendants(leader)
            names = cluster._processes(cluster.Path("/proc"))
            if len(found) >= 4 and all(pid in names and names[pid].comm == cluster.NODE for pid in found):
                return found
            return None

        nodes = procs.wait_until(named_cluster, 10, "the cluster")
        sentinel = next(pid for pid in nodes if cluster._processes(cluster.Path("/proc"))[pid].ppid == leader)
        # A stopped sentinel holds its parent-death signal pending: headless until it is continued.
        os.kill(sentinel, signal.SIGSTOP)
        os.kill(leader, signal.SIGKILL)
        procs.wait_until(lambda: leader not in alive({leader}), 10, "the leader to go")
        status = cluster.cluster_status()
        assert set(status.headless[sentinel]) == nodes
        report = procs.run_manage("cluster_status", env=procs.django_env())
        assert report.returncode == 1, report.stdout + report.stderr
        assert f"HEADLESS cluster: {len(nodes)} processes (top pid {sentinel}) whose leader is gone" in report.stdout
        os.kill(sentinel, signal.SIGCONT)
        procs.wait_until(lambda: not alive(nodes), 10, "the headless cluster to stop once continued")
    finally:
        for pid in alive(nodes):
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        reaper.stop()
