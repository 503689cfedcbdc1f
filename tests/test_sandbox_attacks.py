"""A hostile job in the sandbox (issue 13, holes 1 and 2): it sees nothing of the control plane
(database, logs, code, loopback services, processes, the host's /tmp) and cannot read a
concurrent run's secrets; each run is a uid of its own, checked from outside."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.db import connection

from jobs import sandbox
from jobs.executor import _prepare_run_root, execute_run
from jobs.models import Alert, AlertKind, Run, RunStatus
from tests.vault import put_secret

PY = "/usr/bin/python3"
ROOT = Path(django_settings.BASE_DIR)


PROBE = r"""
import json, os, socket, sys
targets = json.loads(sys.argv[1])
found = {"uid": os.getuid(), "cwd": os.getcwd()}

def attempt(name, action):
    try:
        found[name] = action()
    except Exception as exc:
        found[name] = "refused: %s" % exc.__class__.__name__

def read(path):
    with open(path, "rb") as handle:
        return handle.read().decode("latin-1")

def summary(path):
    data = read(path)
    return "read %d bytes%s" % (len(data), ", with " + targets["needle"] if targets["needle"] in data else "")

attempt("database", lambda: summary(targets["database"]))  # "" on PostgreSQL: nothing to find
attempt("log", lambda: summary(targets["log"]))
attempt("code", lambda: summary(targets["code"]))
attempt("var", lambda: os.listdir(targets["var"]))

def connect():
    with socket.create_connection(("127.0.0.1", targets["port"]), timeout=2) as conn:
        return conn.recv(100).decode()

attempt("loopback", connect)

def host_tmp():
    with open(targets["tmp_file"], "w") as handle:
        handle.write("left by a job")
    return "written"

attempt("host_tmp", host_tmp)

def elsewhere():
    written = []
    for path in ("/x", "/dev/x", "/usr/x", "/etc/x", "/proc/x"):
        try:
            open(path, "w").close()
            written.append(path)
        except OSError:
            pass
    return written

attempt("elsewhere", elsewhere)

def processes():
    seen = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                seen.append(read("/proc/%s/cmdline" % pid).replace("\0", " ")[:100])
            except OSError:
                pass
    return seen

attempt("processes", processes)

def environs():
    values = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and pid != str(os.getpid()):
            try:
                values += [item for item in read("/proc/%s/environ" % pid).split("\0") if "PASSWORD" in item]
            except OSError:
                pass
    return values

attempt("environ", environs)

def own_dirs():
    for path in (".", "/tmp"):
        with open(os.path.join(path, "probe.txt"), "w") as handle:
            handle.write("mine")
    return sorted(os.listdir("."))

attempt("own_dirs", own_dirs)
print(json.dumps(found))
"""


def probe_job(cast, targets: dict):
    return cast.make_job(cast.dev, command=[PY, "-c", PROBE, json.dumps(targets)], name="payments.ledger.probe")


def execute(run: Run) -> Run:
    execute_run(run.pk)
    run.refresh_from_db()
    return run


def findings(run: Run) -> dict:
    assert run.status == RunStatus.SUCCEEDED, run.reason + run.output
    return json.loads(run.output.strip().splitlines()[-1])


@pytest.fixture
def listener():
    """A TCP service on the host's loopback, standing for the web server and OpenBao."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"control-plane-banner")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


@pytest.fixture
def control_plane_files():
    """What a worker host holds: the database (the test's own, when SQLite), a log under var/log
    and Governor's code; the log is world-readable, as main left them."""
    log_dir = ROOT / "var" / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"probe-{uuid.uuid4().hex}.log"
    log.write_text("worker log: VAULT_SECRET_ID=s.log-canary\n")
    log.chmod(0o644)
    database = connection.settings_dict["NAME"] if connection.vendor == "sqlite" else ""
    yield {"database": str(database), "log": str(log), "code": str(ROOT / "governance" / "settings.py")}
    log.unlink()


def test_a_job_sees_nothing_of_the_control_plane(cast, listener, control_plane_files):
    cast.make_job(cast.globex_prod, command=["/bin/true"], name="ops.payroll.secret-name")
    tmp_file = f"/tmp/governor-probe-{uuid.uuid4().hex}"
    targets = {
        **control_plane_files,
        "var": str(ROOT / "var"),
        "port": listener,
        "tmp_file": tmp_file,
        "needle": "ops.payroll.secret-name",
    }
    run = execute(cast.queued_run(probe_job(cast, targets)))
    seen = findings(run)

    # Hole 1: the database, the logs, the code and var/ are not there at all.
    for name in ("database", "log", "code", "var"):
        assert seen[name] == "refused: FileNotFoundError", (name, str(seen[name])[:200])
    # No route to the host's loopback services (the job's network namespace has its own lo).
    assert seen["loopback"].startswith("refused: "), seen["loopback"]
    # Nothing written to the host's /tmp.
    assert seen["host_tmp"] == "written" and not os.path.exists(tmp_file)
    # Nowhere else writable: the root, /dev, /usr, /etc, /proc.
    assert seen["elsewhere"] == []
    # Only the sandbox's own processes: bwrap's reaper and the probe, none of the control plane.
    assert len(seen["processes"]) <= 2, seen["processes"]
    assert not [cmd for cmd in seen["processes"] if "pytest" in cmd or "manage.py" in cmd]
    # The probe itself worked: exit 0, its own /work and /tmp writable.
    assert seen["cwd"] == "/work" and seen["own_dirs"] == ["probe.txt"]


def processes_holding(value: str) -> list[int]:
    """Host pids whose environment holds ``value`` (read as root, from outside every sandbox)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if value.encode() in Path(f"/proc/{entry}/environ").read_bytes():
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def host_uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox switches uids: the worker runs as root")
def test_a_job_cannot_read_a_concurrent_runs_secret_and_each_run_has_its_own_uid(tcast, vault, settings):
    value = f"globex-db-{uuid.uuid4().hex}"
    put_secret(vault, "governor/globex/prod/db", {"password": value})
    holder = tcast.make_job(
        tcast.globex_prod,
        command=["/bin/sleep", "30"],
        secrets={"DB_PASSWORD": "vault:secret/governor/globex/prod/db#password"},
    )
    holder_run = tcast.queued_run(holder)

    def run_holder():
        try:
            execute_run(holder_run.pk)
        finally:
            connection.close()

    thread = threading.Thread(target=run_holder)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not processes_holding(value) and time.monotonic() < deadline:
            time.sleep(0.05)
        holders = processes_holding(value)
        assert holders, "the globex run never started"
        holder_uids = {host_uid(pid) for pid in holders}

        probe = execute(
            tcast.queued_run(
                probe_job(
                    tcast,
                    {
                        "database": "",
                        "log": "/x",
                        "code": "/x",
                        "var": "/x",
                        "port": 1,
                        "tmp_file": "/tmp/x",
                        "needle": "x",
                    },
                )
            )
        )
        seen = findings(probe)
        # Hole 2: the globex secret, alive in a concurrent run, is out of the acme job's reach.
        assert value not in "".join(seen["environ"]) and value not in probe.output
        assert not [cmd for cmd in seen["processes"] if "sleep" in cmd]
        # From outside: the holder runs as one uid of the range, the probe as another; never root.
        first, last = sandbox.parse_uid_range(settings.GOVERNOR_SANDBOX_UIDS)
        assert len(holder_uids) == 1
        (holder_uid,) = holder_uids
        assert first <= holder_uid <= last and first <= seen["uid"] <= last
        assert holder_uid != seen["uid"]
    finally:
        Run.objects.filter(pk=holder_run.pk).update(status=RunStatus.CANCELLED)
        thread.join(timeout=60)
    holder_run.refresh_from_db()
    assert holder_run.status == RunStatus.CANCELLED
    assert not processes_holding(value)


def test_a_worker_without_bwrap_refuses_the_run_with_an_alert(cast, settings):
    settings.GOVERNOR_BWRAP = "/nonexistent/bwrap"
    marker = f"/tmp/governor-unsandboxed-{uuid.uuid4().hex}"
    job = cast.make_job(cast.dev, command=["/usr/bin/touch", marker])
    run = execute(cast.queued_run(job))
    assert run.status == RunStatus.FAILED and run.pid is None
    assert run.reason.startswith("Sandbox unavailable: /nonexistent/bwrap is missing"), run.reason
    assert not os.path.exists(marker)  # never started without its sandbox
    alert = Alert.objects.get(run=run)
    assert alert.kind == AlertKind.SANDBOX_UNAVAILABLE and "bwrap is missing" in alert.message


def test_a_worker_whose_uid_range_is_exhausted_refuses_the_run(cast, settings):
    settings.GOVERNOR_SANDBOX_UIDS = "1879070000-1879070000"
    job = cast.make_job(cast.dev, command=["/usr/bin/id"])
    run = execute(cast.queued_run(job))  # the worker's first run also probes with the one uid
    assert run.status == RunStatus.SUCCEEDED, run.reason + run.output
    # Another worker process holds the only uid for a running job.
    with sandbox.lease_uid(1879070000, 1879070000, os.path.join(settings.GOVERNOR_RUN_ROOT, ".uids")):
        run = execute(cast.queued_run(job, scheduled_for=run.scheduled_for.replace(year=2030)))
    assert run.status == RunStatus.FAILED and run.pid is None
    assert "every uid of GOVERNOR_SANDBOX_UIDS (1879070000-1879070000) is held" in run.reason
    assert Alert.objects.get(run=run).kind == AlertKind.SANDBOX_UNAVAILABLE


def test_a_definition_asking_for_network_is_refused(cast):
    with pytest.raises(ValidationError) as info:
        cast.propose_job(environment=cast.dev, definition=cast.definition(network=True), justification="x")
    assert "no network" in " ".join(info.value.message_dict["network"])


def test_limits_apply_soft_and_hard_inside_the_sandbox(cast):
    script = (
        "import resource as r\n"
        "for name in ('RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_NPROC', 'RLIMIT_NOFILE', 'RLIMIT_CORE'):\n"
        "    print(name, *r.getrlimit(getattr(r, name)))\n"
    )
    limits = {"cpu_seconds": 7, "memory_mb": 512, "file_size_mb": 3, "processes": 50}
    run = execute(cast.queued_run(cast.make_job(cast.dev, command=[PY, "-c", script], limits=limits)))
    assert run.status == RunStatus.SUCCEEDED, run.reason + run.output
    mb = 1024 * 1024
    assert run.output.splitlines() == [
        "RLIMIT_CPU 7 12",
        f"RLIMIT_AS {512 * mb} {512 * mb}",
        f"RLIMIT_FSIZE {3 * mb} {3 * mb}",
        f"RLIMIT_NPROC {50 + sandbox.SANDBOX_PROCESSES} {50 + sandbox.SANDBOX_PROCESSES}",
        "RLIMIT_NOFILE 1024 1024",
        "RLIMIT_CORE 0 0",
    ]


def test_a_job_cannot_raise_its_own_hard_limit(cast):
    script = "import resource as r; r.setrlimit(r.RLIMIT_AS, (r.RLIM_INFINITY, r.RLIM_INFINITY))"
    run = execute(cast.queued_run(cast.make_job(cast.dev, command=[PY, "-c", script], limits={"memory_mb": 512})))
    assert run.status == RunStatus.FAILED
    assert "ValueError" in run.output or "PermissionError" in run.output


def uid_processes(uid: int) -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and _uid_of(entry) == uid]


def _uid_of(entry: str) -> int | None:
    try:
        status = Path(f"/proc/{entry}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields["State"].split()[0] in ("Z", "X"):
        return None
    return int(fields["Uid"].split()[0])


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox switches uids: the worker runs as root")
@pytest.mark.parametrize("timed", [False, True], ids=["bare", "with-gnu-time"])
def test_the_job_dies_with_a_worker_killed_by_sigkill(settings, timed):
    """A stand-in worker starts ``sleep`` in the sandbox exactly as the executor does (with GNU time
    measuring it, or without), then dies."""
    uid = 1879080000 + os.getpid() % 1000 + (1000 if timed else 0)
    _prepare_run_root(settings.GOVERNOR_RUN_ROOT)
    run_dir = tempfile.mkdtemp(prefix="orphan-", dir=settings.GOVERNOR_RUN_ROOT)
    usage = None
    if timed:
        usage = os.path.join(run_dir, "usage")
        Path(usage).touch(0o600)
        os.chown(usage, uid, uid)
    worker = (
        "import os, subprocess, sys, time\n"
        "from jobs import sandbox\n"
        f"work, tmp = sandbox.prepare_run_dir({run_dir!r}, {uid})\n"
        "limits = {'cpu_seconds': 60, 'memory_mb': 512, 'file_size_mb': 1, 'processes': 8, 'open_files': 64}\n"
        f"argv, fds = sandbox.command(['/usr/bin/sleep', '60'], uid={uid}, work=work, tmp=tmp, limits=limits,"
        f" bwrap={settings.GOVERNOR_BWRAP!r}, usage_report={usage!r})\n"
        "subprocess.Popen(argv, pass_fds=fds, start_new_session=True, env={'PATH': '/usr/bin'})\n"
        "time.sleep(1.5)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", worker], cwd=str(ROOT), check=False, timeout=30)
    deadline = time.monotonic() + 3
    while uid_processes(uid) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = uid_processes(uid)
    for pid in left:
        os.kill(pid, 9)
    shutil.rmtree(run_dir, ignore_errors=True)
    assert not left


def test_control_plane_files_are_created_private(tmp_path):
    """A real manage.py process creates its SQLite database (and WAL) 0600, its run root 0711
    (pass-through only) and run directories 0700."""
    database = tmp_path / "governor.sqlite3"
    script = (
        "import os\n"
        "from django.db import connection\n"
        "with connection.cursor() as cursor:\n"
        "    cursor.execute('create table t (x)'); cursor.execute('insert into t values (1)')\n"
        f"    print(oct(os.stat({str(database) + '-wal'!r}).st_mode & 0o777))\n"
        "from jobs.executor import make_workdir\n"
        "class Run: pk, attempt = 1, 1\n"
        "print(oct(os.stat(make_workdir(Run)).st_mode & 0o777))\n"
        "from django.conf import settings\n"
        "print(oct(os.stat(settings.GOVERNOR_RUN_ROOT).st_mode & 0o777))\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "governor.settings",
        "DATABASE_URL": f"sqlite:///{database}",
        "GOVERNOR_RUN_ROOT": str(tmp_path / "runs"),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v0", "-c", script],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0o600", "0o700", "0o711"]
    assert database.stat().st_mode & 0o777 == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="writes a program under /opt")
def test_a_program_outside_usr_runs_only_from_a_directory_made_readable(cast, settings):
    directory = Path(f"/opt/governor-test-{uuid.uuid4().hex}")
    directory.mkdir()
    directory.chmod(0o755)  # whatever this process's umask (Governor's own is 077)
    try:
        program = directory / "tool"
        shutil.copy("/usr/bin/true", program)
        program.chmod(0o755)
        job = cast.make_job(cast.dev, command=[str(program)])
        run = execute(cast.queued_run(job))
        assert run.status == RunStatus.FAILED and run.pid is None
        assert f"{str(program)!r} is not visible inside the sandbox" in run.reason

        settings.GOVERNOR_SANDBOX_READ_ONLY = [str(directory)]
        run = execute(cast.queued_run(job, scheduled_for=run.scheduled_for.replace(year=2030)))
        assert run.status == RunStatus.SUCCEEDED, run.reason + run.output
    finally:
        shutil.rmtree(directory)
