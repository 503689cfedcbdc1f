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

from jobs.executor import KILL_GRACE_SECONDS, run_as_identity, run_process

pytestmark = pytest.mark.django_db


@pytest.fixture
def tmp_path():
    """A working directory the run-as user (nobody, under a root worker) may use, like a run's own."""
    path = Path(tempfile.mkdtemp(prefix="governor-wait-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(argv, tmp_path, **kwargs):
    kwargs.setdefault("timeout", 30)
    # As the executor starts every job: never as root.
    return run_process(argv, env={"PATH": "/usr/bin:/bin"}, cwd=str(tmp_path), identity=run_as_identity(), **kwargs)


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for whichever process adopted it to reap it."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.05)  # SIGKILL is delivered asynchronously
    return True


def test_output_larger_than_the_pipe_is_read_while_the_job_runs_and_kept_head_and_tail(tmp_path, settings):
    settings.GOVERNOR_OUTPUT_HEAD_BYTES = 1000
    settings.GOVERNOR_OUTPUT_TAIL_BYTES = 1000
    # 2 MB is far more than a pipe holds: a job blocked on a full pipe would time out instead.
    result = run(["/bin/sh", "-c", "echo FIRST; head -c 2000000 /dev/zero | tr '\\0' x; echo; echo LAST"], tmp_path)
    assert result.exit_code == 0 and not result.timed_out
    assert result.output.startswith("FIRST\n")
    assert result.output.endswith("LAST\n")
    assert "bytes omitted" in result.output
    assert result.output_bytes == len("FIRST\n") + 2_000_000 + len("\nLAST\n")


def test_exit_code_and_rusage_come_from_wait4(tmp_path):
    result = run(["/bin/sh", "-c", "exit 7"], tmp_path)
    assert result.exit_code == 7
    assert result.cpu_user_s is not None and result.max_rss_kb > 0
    assert result.exited_at >= result.spawned_at


def test_timeout_kills_the_whole_group_including_background_children(tmp_path):
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    result = run(["/bin/sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], tmp_path, timeout=1)
    assert result.timed_out
    assert time.monotonic() - started < 1 + KILL_GRACE_SECONDS + 2
    assert not alive(int(pidfile.read_text()))


def test_a_job_ignoring_sigterm_is_killed_after_the_grace(tmp_path):
    started = time.monotonic()
    result = run(["/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"], tmp_path, timeout=0.5)
    elapsed = time.monotonic() - started
    assert result.timed_out and result.output == "ready\n"
    assert KILL_GRACE_SECONDS <= elapsed < KILL_GRACE_SECONDS + 3


def test_cancel_is_noticed_while_running_and_kills_the_group(tmp_path):
    started = time.monotonic()
    asked = []

    def should_cancel():
        asked.append(time.monotonic())
        return len(asked) >= 2

    result = run(["/bin/sleep", "60"], tmp_path, should_cancel=should_cancel)
    assert result.cancelled and not result.timed_out
    assert time.monotonic() - started < 5


def test_a_background_child_left_behind_is_killed_when_the_leader_exits(tmp_path):
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    result = run(["/bin/sh", "-c", f"sleep 60 & echo $! > {pidfile}; echo done"], tmp_path)
    assert result.exit_code == 0 and result.output == "done\n"
    assert time.monotonic() - started < 5
    assert not alive(int(pidfile.read_text()))


def test_a_process_escaping_the_group_cannot_hold_the_worker_on_its_output(tmp_path, monkeypatch):
    monkeypatch.setattr("jobs.executor.OUTPUT_DRAIN_SECONDS", 0.5)
    pidfile = tmp_path / "escaped.pid"
    started = time.monotonic()
    result = run(["/bin/sh", "-c", f"setsid sleep 30 & echo $! > {pidfile}; echo out"], tmp_path)
    try:
        assert result.exit_code == 0 and result.output == "out\n"
        assert time.monotonic() - started < 3
    finally:
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), 9)
            except ProcessLookupError:
                pass
