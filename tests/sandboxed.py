"""Watching jobs from outside their sandboxes: a job can no longer leave a file on the host, so
tests that count how often a job started look for its processes instead (as root, through
``/proc/<pid>/environ``, which carries the run's ``GOVERNOR_RUN_ID`` and ``GOVERNOR_ATTEMPT``)."""

from __future__ import annotations

import os
import threading
import time


def _environ(pid: str) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as handle:
        items = handle.read().decode(errors="replace").split("\0")
    return dict(item.split("=", 1) for item in items if "=" in item)


def _comm(pid: str) -> str:
    with open(f"/proc/{pid}/comm") as handle:
        return handle.read().strip()


def _descends_from(pid: str, ancestor: int) -> bool:
    """Whether ``ancestor`` started ``pid`` (through any chain of children). Run ids are only unique
    within one test database, and parallel test workers each have their own: a job of another
    test worker carries the same ``GOVERNOR_RUN_ID`` but is not this test process's descendant."""
    current = int(pid)
    while current > 1:
        if current == ancestor:
            return True
        try:
            with open(f"/proc/{current}/stat") as handle:
                # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
                current = int(handle.read().rsplit(")", 1)[1].split()[1])
        except OSError:  # a process of the chain is gone: no longer anyone's descendant to count
            return False
    return False


class Executions:
    """Every process named ``comm`` of run ``run_id`` started by this test process (directly or
    through the workers it started) seen while the watch runs, in order: [(pid, attempt), ...].
    Polls every 20 ms: give the watched job a second of life. ``job_name`` (GOVERNOR_JOB_NAME)
    narrows it further to one job."""

    def __init__(self, run_id: int, comm: str = "sleep", job_name: str | None = None) -> None:
        self.run_id = str(run_id)
        self.comm = comm
        self.ancestor = os.getpid()
        self.job_name = job_name
        self.seen: dict[int, str] = {}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or int(pid) in self.seen:
                    continue
                try:
                    if _comm(pid) != self.comm:
                        continue
                    env = _environ(pid)
                    if env.get("GOVERNOR_RUN_ID") != self.run_id or not _descends_from(pid, self.ancestor):
                        continue
                except OSError:
                    continue
                if self.job_name in (None, env.get("GOVERNOR_JOB_NAME")):
                    self.seen[int(pid)] = env.get("GOVERNOR_ATTEMPT", "")
            time.sleep(0.02)

    def attempts(self) -> list[str]:
        return list(self.seen.values())

    def stop(self) -> list[str]:
        self.stop_event.set()
        self.thread.join()
        return self.attempts()
