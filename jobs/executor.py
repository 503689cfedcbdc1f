"""Running a claimed run's argv as a child process: no shell, a fresh working
directory, a minimal environment, its own process group killed on timeout or
cancel, and output kept head and tail."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from . import schedule
from .models import Run, RunStatus

log = logging.getLogger(__name__)

# Variables a job may inherit from the worker's environment; everything else is dropped.
ENV_ALLOW_LIST = ("PATH", "LANG", "LC_ALL", "TZ")
CANCEL_CHECK_SECONDS = 1.0
KILL_GRACE_SECONDS = 2.0


class OutputBuffer:
    """Keeps the first ``head`` and last ``tail`` bytes of a stream and counts the rest."""

    def __init__(self, head: int, tail: int) -> None:
        self.head_limit = head
        self.tail_limit = tail
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_size = 0
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self.tail.append(chunk)
        self.tail_size += len(chunk)
        while self.tail and self.tail_size - len(self.tail[0]) >= self.tail_limit:
            self.tail_size -= len(self.tail.popleft())

    def text(self) -> str:
        tail = b"".join(self.tail)
        if len(tail) > self.tail_limit:
            tail = tail[-self.tail_limit :]
        omitted = self.total - len(self.head) - len(tail)
        head_text = self.head.decode("utf-8", errors="replace")
        tail_text = tail.decode("utf-8", errors="replace")
        if omitted > 0:
            return f"{head_text}\n[... {omitted} bytes omitted ...]\n{tail_text}"
        return head_text + tail_text


@dataclass
class ProcessResult:
    exit_code: int | None
    output: str
    output_bytes: int
    timed_out: bool = False
    cancelled: bool = False
    error: str = ""
    pid: int | None = None
    cpu_user_s: float | None = None
    cpu_sys_s: float | None = None
    max_rss_kb: int | None = None


def run_process(
    argv: list[str],
    *,
    timeout: float,
    env: dict[str, str],
    cwd: str,
    should_cancel=lambda: False,
) -> ProcessResult:
    """Run argv to completion or until timeout/cancel, killing its whole process group."""
    buffer = OutputBuffer(settings.GOVERNOR_OUTPUT_HEAD_BYTES, settings.GOVERNOR_OUTPUT_TAIL_BYTES)
    try:
        proc = subprocess.Popen(  # noqa: S603 - argv list, never a shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    except FileNotFoundError:
        return ProcessResult(None, "", 0, error=f"Executable not found: {argv[0]!r}.")
    except PermissionError:
        return ProcessResult(None, "", 0, error=f"Executable not permitted: {argv[0]!r}.")
    except OSError as exc:
        return ProcessResult(None, "", 0, error=f"Could not start {argv[0]!r}: {exc.strerror or exc}.")

    def pump() -> None:
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            buffer.feed(chunk)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    status_holder: dict = {}

    def reap() -> None:
        # wait4 gives the child's resource usage along with its status.
        _, status, usage = os.wait4(proc.pid, 0)
        status_holder["status"] = status
        status_holder["usage"] = usage

    waiter = threading.Thread(target=reap, daemon=True)
    waiter.start()
    deadline = time.monotonic() + timeout
    timed_out = cancelled = False
    while waiter.is_alive():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        waiter.join(min(remaining, CANCEL_CHECK_SECONDS))
        if waiter.is_alive() and should_cancel():
            cancelled = True
            break
    if timed_out or cancelled:
        _kill_group_pid(proc.pid)
        waiter.join(10)
    else:
        # The leader exited; kill anything it left behind in its group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    reader.join(5)
    if proc.stdout:
        proc.stdout.close()
    proc.returncode = 0  # reaped by wait4 above; keep Popen from waiting again
    status = status_holder.get("status")
    usage = status_holder.get("usage")
    exit_code = None
    if status is not None:
        exit_code = os.waitstatus_to_exitcode(status)
    return ProcessResult(
        exit_code=exit_code,
        output=buffer.text(),
        output_bytes=buffer.total,
        timed_out=timed_out,
        cancelled=cancelled,
        pid=proc.pid,
        cpu_user_s=usage.ru_utime if usage else None,
        cpu_sys_s=usage.ru_stime if usage else None,
        max_rss_kb=usage.ru_maxrss if usage else None,
    )


def _kill_group_pid(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _environment(run: Run, workdir: str) -> dict[str, str]:
    env = {name: os.environ[name] for name in ENV_ALLOW_LIST if name in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        HOME=workdir,
        GOVERNOR_RUN_ID=str(run.pk),
        GOVERNOR_RUN_KEY=run.key,
        GOVERNOR_ATTEMPT=str(run.attempt),
        GOVERNOR_SCHEDULED_FOR=schedule.isoz(run.scheduled_for),
        GOVERNOR_JOB_NAME=run.definition.get("name", ""),
    )
    return env


def execute_run(run_id: int) -> str:
    """Claim and execute one run; returns the final status. A run not in 'queued' is left alone,
    so a redelivered task can never execute a job twice."""
    now = timezone.now()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    claimed = Run.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING, started_at=now, worker=worker, attempt=1
    )
    if not claimed:
        log.info("run %s not claimed (already taken, cancelled or missing)", run_id)
        return "not-claimed"
    run = Run.objects.get(pk=run_id)
    os.makedirs(settings.GOVERNOR_RUN_ROOT, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix=f"run-{run.pk}-", dir=settings.GOVERNOR_RUN_ROOT)
    try:
        result = run_process(
            list(run.definition["command"]),
            timeout=run.definition.get("timeout_seconds") or 3600,
            env=_environment(run, workdir),
            cwd=workdir,
            should_cancel=lambda: Run.objects.filter(pk=run_id, status=RunStatus.CANCELLED).exists(),
        )
    except Exception as exc:  # record every failure on the run, never lose it
        log.exception("run %s crashed in the executor", run_id)
        result = ProcessResult(None, "", 0, error=f"Executor error: {exc.__class__.__name__}: {exc}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    if result.cancelled:
        status = RunStatus.CANCELLED
    elif result.timed_out:
        status = RunStatus.TIMED_OUT
    elif result.exit_code == 0 and not result.error:
        status = RunStatus.SUCCEEDED
    else:
        status = RunStatus.FAILED
    reason = result.error
    if result.timed_out:
        reason = f"Timed out after {run.definition.get('timeout_seconds')} s; process group killed."
    fields = {
        "finished_at": timezone.now(),
        "exit_code": result.exit_code,
        "output": result.output,
        "output_bytes": result.output_bytes,
        "pid": result.pid,
        "cpu_user_s": result.cpu_user_s,
        "cpu_sys_s": result.cpu_sys_s,
        "max_rss_kb": result.max_rss_kb,
    }
    if status == RunStatus.CANCELLED:
        # Keep the operator's reason; only add what the process left behind.
        Run.objects.filter(pk=run_id).update(**fields)
    else:
        Run.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(status=status, reason=reason, **fields)
    log.info("run %s finished: %s exit=%s", run_id, status, result.exit_code)
    return status
