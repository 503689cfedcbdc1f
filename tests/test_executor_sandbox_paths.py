"""Every way of starting a job confines it the same: Governor's one-exec helper
(jobs/native/governor-sandbox.c, compiled here from source), util-linux setpriv + prlimit,
and the preexec_fn fallback all apply the run-as user, the limits and the parent-death signal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from jobs import executor
from jobs.executor import execute_run
from jobs.models import Run, RunStatus

PY = "/usr/bin/python3"
ROOT_WORKER = os.geteuid() == 0


_BUILDS: dict[str, str] = {}


def _build(kind: str, tmp_path_factory) -> str:
    """The helper built by the Makefile's own rule: without a C library (x86-64, arm64), or with one."""
    if kind in _BUILDS:
        return _BUILDS[kind]
    if shutil.which("cc") is None or shutil.which("make") is None:
        pytest.skip("no C compiler or make to build governor-sandbox")
    binary = tmp_path_factory.mktemp(f"sandbox-{kind}") / "governor-sandbox"
    forced = ["SANDBOX_LIBC=1"] if kind == "libc" else []
    subprocess.run(
        ["make", "-s", "-C", str(django_settings.BASE_DIR), f"SANDBOX={binary}", *forced, str(binary)], check=True
    )
    if kind == "nolibc" and os.uname().machine in ("x86_64", "aarch64"):
        assert binary.stat().st_size < 100_000, "built against libc, not without it"
    _BUILDS[kind] = str(binary)
    return _BUILDS[kind]


@pytest.fixture(scope="session", params=["nolibc", "libc"])
def helper(request, tmp_path_factory) -> str:
    return _build(request.param, tmp_path_factory)


@pytest.fixture(scope="session")
def default_helper(tmp_path_factory) -> str:
    return _build("nolibc", tmp_path_factory)


@pytest.fixture(params=["helper", "util-linux", "preexec"])
def start_path(request, settings, monkeypatch):
    if request.param == "helper":
        settings.GOVERNOR_SANDBOX_HELPER = request.getfixturevalue("default_helper")
    else:
        settings.GOVERNOR_SANDBOX_HELPER = ""
    if request.param == "preexec":
        monkeypatch.setattr(executor, "SETPRIV", "/nonexistent/setpriv")
    return request.param


def run_now(cast, **overrides) -> Run:
    run = cast.queued_run(cast.make_job(cast.dev, **overrides))
    execute_run(run.pk)
    run.refresh_from_db()
    return run


def test_the_start_path_in_use_is_the_one_under_test(cast, start_path):
    prefix = executor.sandbox_prefix(django_settings.GOVERNOR_DEFAULT_LIMITS, executor.run_as_identity())
    expected = {"helper": "governor-sandbox", "util-linux": "setpriv", "preexec": None}[start_path]
    assert (prefix and Path(prefix[0]).name) == expected


@pytest.mark.skipif(not ROOT_WORKER, reason="the user switch happens only when the worker is root")
def test_a_root_worker_runs_the_job_as_the_run_as_user_without_groups(cast, start_path):
    run = run_now(cast, command=["/usr/bin/id"])
    assert run.status == RunStatus.SUCCEEDED, run.reason + run.output
    assert run.output.startswith("uid=65534(nobody) gid=65534(")
    assert "groups=65534(" in run.output and "root" not in run.output


def test_limits_apply_soft_and_hard(cast, start_path):
    script = (
        "import resource as r\n"
        "for name in ('RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_NPROC', 'RLIMIT_CORE'):\n"
        "    print(name, *r.getrlimit(getattr(r, name)))\n"
    )
    limits = {"cpu_seconds": 7, "memory_mb": 512, "file_size_mb": 3, "processes": 50}
    run = run_now(cast, command=[PY, "-c", script], limits=limits)
    assert run.status == RunStatus.SUCCEEDED, run.reason + run.output
    mb = 1024 * 1024
    assert run.output.splitlines() == [
        "RLIMIT_CPU 7 12",
        f"RLIMIT_AS {512 * mb} {512 * mb}",
        f"RLIMIT_FSIZE {3 * mb} {3 * mb}",
        "RLIMIT_NPROC 50 50",
        "RLIMIT_CORE 0 0",
    ]


def test_a_job_cannot_raise_its_own_hard_limit(cast, start_path):
    script = "import resource as r; r.setrlimit(r.RLIMIT_AS, (r.RLIM_INFINITY, r.RLIM_INFINITY))"
    run = run_now(cast, command=[PY, "-c", script], limits={"memory_mb": 512})
    assert run.status == RunStatus.FAILED
    assert "ValueError" in run.output or "PermissionError" in run.output


def _orphan_check(prefix: list[str], tmp_path: Path) -> int:
    """A stand-in worker starts ``sleep`` through ``prefix`` and dies by SIGKILL; the sleep's pid."""
    pidfile = tmp_path / "job.pid"
    worker = (
        "import os, subprocess, sys\n"
        f"prefix = {prefix!r}\n"
        "prefix[1] = str(os.getpid())\n"
        "child = subprocess.Popen(prefix + ['/bin/sleep', '60'], start_new_session=True)\n"
        f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
        "import time; time.sleep(0.5)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", worker], check=False, timeout=30)
    return int(pidfile.read_text())


def _running(pid: int) -> bool:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.05)
    return True


def test_the_helper_kills_the_job_when_the_worker_is_killed(helper, tmp_path):
    identity = ["65534", "65534"] if ROOT_WORKER else ["-", "-"]
    prefix = [helper, "0", *identity, "60", str(512 * 1024 * 1024), str(1024 * 1024), "64", "--"]
    pid = _orphan_check(prefix, tmp_path)
    try:
        assert not _running(pid)
    finally:
        if _running(pid):
            os.kill(pid, 9)


@pytest.mark.parametrize(
    "args, message",
    [
        (["0", "0"], "never run as root"),
        (["-", "x"], "Invalid argument"),
        (["65534", "-1"], "Invalid argument"),
        (["65534", "99999999999999999999999"], "Invalid argument"),
    ],
)
def test_the_helper_refuses_root_and_malformed_arguments(helper, args, message):
    done = subprocess.run(
        [helper, str(os.getpid()), *args, "60", "1000000000", "1000000", "64", "--", "/usr/bin/id"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 126
    assert message in done.stderr and "uid=" not in done.stdout


@pytest.mark.skipif(not ROOT_WORKER, reason="only a root worker can be asked to keep root")
def test_the_helper_refuses_to_keep_a_root_identity(helper):
    done = subprocess.run(
        [helper, str(os.getpid()), "-", "-", "60", "1000000000", "1000000", "64", "--", "/usr/bin/id"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 126 and "run-as user" in done.stderr and not done.stdout


def _through_helper(helper, *program, path="/usr/bin:/bin"):
    identity = ["65534", "65534"] if ROOT_WORKER else ["-", "-"]
    return subprocess.run(
        [helper, str(os.getpid()), *identity, "60", "1000000000", "1000000", "64", "--", *program],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": path},
    )


def test_the_helper_looks_a_bare_name_up_in_the_jobs_path(helper, tmp_path):
    done = _through_helper(helper, "id", "-u", path=f"{tmp_path}:/usr/bin:/bin")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("65534" if ROOT_WORKER else str(os.getuid()))


@pytest.mark.parametrize(
    "program, message",
    [
        ("no-such-program", "no-such-program: No such file or directory"),
        ("/no/such/program", "/no/such/program: No such file or directory"),
        ("/etc/passwd", "/etc/passwd: Permission denied"),
    ],
)
def test_the_helper_names_a_program_it_cannot_start(helper, program, message):
    done = _through_helper(helper, program)
    assert done.returncode == 126
    assert done.stderr == f"governor-sandbox: {message}\n"
