"""A django-q2 worker cluster that stops as one, and the check that finds one that did not.

django-q2's ``qcluster`` is a leader process that forks a sentinel, which forks the workers,
the pusher and the monitor. Killed alone (SIGKILL, an OOM kill), the leader leaves the sentinel
and its workers running headless (reparented to PID 1), still taking tasks; a supervisor restart
then runs two clusters side by side. ``manage.py run_workers`` starts the same cluster with a
parent-death signal in every process it forks (Linux ``PR_SET_PDEATHSIG``): when a process's
parent dies, the process gets SIGTERM, so the leader's death takes the sentinel down, and the
sentinel's its workers, pusher and monitor. Every process of such a cluster is named
``governor-qlead`` (the leader) or ``governor-qnode`` (the others) in ``/proc/<pid>/comm``
(``ps -o comm``), which is how ``manage.py cluster_status`` tells a whole cluster from a headless one.

A job's own process is not one of these: the executor starts it in a session of its own, and it
is reached through its run (cancel, timeout, the lease sweep), not through this signal.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.util
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

LEADER = "governor-qlead"
NODE = "governor-qnode"
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
DEATH_SIGNAL = signal.SIGTERM


def _prctl(option: int, value) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _name(name: str) -> None:
    _prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]))


class _AfterFork:
    """Held for the life of the process: multiprocessing keeps its after-fork hooks in a weak registry."""

    def __call__(self, _obj) -> None:
        # In every process multiprocessing forks from here (and, inherited, from those): die with the parent.
        _prctl(PR_SET_PDEATHSIG, DEATH_SIGNAL)
        parent = multiprocessing.parent_process()
        if parent is not None and os.getppid() != parent.pid:
            os.kill(os.getpid(), DEATH_SIGNAL)  # the parent died before the signal was armed
        _name(NODE)


_HOOK = _AfterFork()


def become_leader() -> None:
    """Make this process the leader of a cluster whose forked processes die with their parent."""
    _name(LEADER)
    multiprocessing.util.register_after_fork(_HOOK, _HOOK)


# --- status -------------------------------------------------------------------------------------


@dataclass
class Proc:
    pid: int
    ppid: int
    comm: str


@dataclass
class ClusterStatus:
    leaders: dict[int, list[int]] = field(default_factory=dict)  # leader pid -> its processes
    headless: dict[int, list[int]] = field(default_factory=dict)  # top node pid -> its processes

    @property
    def healthy(self) -> bool:
        return bool(self.leaders) and not self.headless


def _processes(proc: Path) -> dict[int, Proc]:
    found: dict[int, Proc] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid ...: comm may hold spaces and parentheses; it ends at the last ')'.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if state in ("Z", "X"):
            continue  # dead, waiting to be reaped
        found[int(entry.name)] = Proc(int(entry.name), int(ppid), comm)
    return found


def cluster_status(proc: Path = Path("/proc")) -> ClusterStatus:
    """The clusters started by ``run_workers`` on this host (this PID namespace): each leader with
    its processes, and every group of ``governor-qnode`` processes whose leader is gone."""
    procs = _processes(proc)
    ours = {pid: p for pid, p in procs.items() if p.comm in (LEADER, NODE)}
    status = ClusterStatus()

    def top(pid: int) -> int:
        while ours[pid].comm == NODE and ours[pid].ppid in ours:
            pid = ours[pid].ppid
        return pid

    for pid in sorted(ours):
        root = top(pid)
        target = status.leaders if ours[root].comm == LEADER else status.headless
        target.setdefault(root, []).append(pid)
    return status
