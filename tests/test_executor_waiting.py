"""The executor waits for a job in its own thread (epoll over the output pipe and a pidfd):
output is read while the job runs, the whole process group dies on timeout or cancel, and
nothing a job leaves behind can hold the worker."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from jobs.executor import KILL_GRACE_SECONDS, _prepare_run_root, run_process

pytestmark = pytest.mark.django_db


@pytest.fixture
def run_dir():
    """A fresh root-only run directory under the run root, as the executor makes for each run."""
    _prepare_run_root(django_settings.GOVERNOR_RUN_ROOT)
    path = Path(tempfile.mkdtemp(prefix="wait-", dir=django_settings.GOVERNOR_RUN_ROOT))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(argv, run_dir, **kwargs):
    kwargs.setdefault("timeout", 30)
    return run_process(argv, env={"PATH": "/usr/bin:/bin"}, run_dir=str(run_dir), **kwargs)


def processes_of(uid: int) -> list[int]:
    """Host pids running as ``uid`` (the run's own), zombies aside."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) == uid and fields["State"].split()[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def none_left(uid: int) -> bool:
    """Nothing of the run's uid still running (SIGKILL is delivered asynchronously)."""
    deadline = time.monotonic() + 2
    while processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not processes_of(uid)


def test_output_larger_than_the_pipe_is_read_while_the_job_runs_and_kept_head_and_tail(run_dir, settings):
    settings.GOVERNOR_OUTPUT_HEAD_BYTES = 1000
    settings.GOVERNOR_OUTPUT_TAIL_BYTES = 1000
    # 2 MB is far more than a pipe holds: a job blocked on a full pipe would time out instead.
    result = run(["/bin/sh", "-c", "echo FIRST; head -c 2000000 /dev/zero | tr '\\0' x; echo; echo LAST"], run_dir)
    assert result.exit_code == 0 and not result.timed_out
    assert result.output.startswith("FIRST\n")
    assert result.output.endswith("LAST\n")
    assert "bytes omitted" in result.output
    assert result.output_bytes == len("FIRST\n") + 2_000_000 + len("\nLAST\n")


def test_exit_code_and_rusage_come_from_wait4(run_dir):
    result = run(["/bin/sh", "-c", "exit 7"], run_dir)
    assert result.exit_code == 7
    assert result.cpu_user_s is not None and result.max_rss_kb > 0
    assert result.exited_at >= result.spawned_at


def test_timeout_kills_the_whole_group_including_background_children(run_dir):
    started = time.monotonic()
    result = run(["/bin/sh", "-c", "sleep 60 & wait"], run_dir, timeout=1)
    assert result.timed_out
    assert time.monotonic() - started < 1 + KILL_GRACE_SECONDS + 2
    assert none_left(result.uid)


def test_on_timeout_the_job_gets_sigterm_and_the_grace_to_clean_up(run_dir):
    script = "trap 'echo cleaning up; exit 3' TERM; echo ready; while :; do sleep 0.1; done"
    started = time.monotonic()
    result = run(["/bin/sh", "-c", script], run_dir, timeout=0.5)
    assert result.timed_out and result.exit_code == 3, result
    assert result.output.startswith("ready\n") and result.output.endswith("cleaning up\n"), result.output
    assert time.monotonic() - started < KILL_GRACE_SECONDS
    assert none_left(result.uid)


def test_a_job_ignoring_sigterm_is_killed_after_the_grace(run_dir):
    started = time.monotonic()
    result = run(["/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"], run_dir, timeout=0.5)
    elapsed = time.monotonic() - started
    assert result.timed_out and result.output == "ready\n"
    assert KILL_GRACE_SECONDS <= elapsed < KILL_GRACE_SECONDS + 3


def test_cancel_is_noticed_while_running_and_kills_the_group(run_dir):
    started = time.monotonic()
    asked = []

    def should_cancel():
        asked.append(time.monotonic())
        return len(asked) >= 2

    result = run(["/bin/sleep", "60"], run_dir, should_cancel=should_cancel)
    assert result.cancelled and not result.timed_out
    assert time.monotonic() - started < 5
    assert none_left(result.uid)


def test_a_background_child_left_behind_is_killed_when_the_leader_exits(run_dir):
    started = time.monotonic()
    result = run(["/bin/sh", "-c", "sleep 60 & echo done"], run_dir)
    assert result.exit_code == 0 and result.output == "done\n"
    assert time.monotonic() - started < 5
    assert none_left(result.uid)


def test_a_process_escaping_the_group_cannot_outlive_the_job(run_dir, monkeypatch):
    monkeypatch.setattr("jobs.executor.OUTPUT_DRAIN_SECONDS", 0.5)
    started = time.monotonic()
    result = run(["/bin/sh", "-c", "setsid sleep 30 & echo out"], run_dir)
    assert result.exit_code == 0 and result.output == "out\n"
    assert time.monotonic() - started < 3
    # It left the process group, not the sandbox's pid namespace, which dies with the job.
    assert none_left(result.uid)
