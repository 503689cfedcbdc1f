"""The one sandbox every command job runs in: bubblewrap, entered as a uid of the run's own.

A root worker starts ``setpriv`` (the run's uid and gid, no supplementary groups, SIGKILL
if the worker dies), which execs ``prlimit`` (the run's limits, hard and soft), which execs
``bwrap``: new user, pid, ipc, uts, mount, network and cgroup namespaces, the uid mapped to
itself (never root inside), a read-only view of ``/usr`` and a curated set of ``/etc``
files, the run's own ``/work`` and ``/tmp``, nothing of Governor. Three execs, no fork of
the worker (Python starts the chain with vfork), nothing of our own in C.

Each run leases a uid from ``GOVERNOR_SANDBOX_UIDS``: an ``flock`` on one file per uid
under ``GOVERNOR_RUN_ROOT/.uids``, held for the run's life and released by the kernel if
the worker dies, so no two concurrent runs on a host share a uid, whichever worker
process started them. Another run's processes are then neither visible (pid namespace)
nor readable (``/proc/<pid>/environ`` needs the same uid) nor signalable.

A worker that cannot build the sandbox refuses the run (``SandboxUnavailable``); there is
no unsandboxed fallback.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import subprocess
import threading
from dataclasses import dataclass

# Re-exported: the settings validate GOVERNOR_SANDBOX_UIDS with the same parser.
from governance.envparse import parse_uid_range as parse_uid_range

SETPRIV = "/usr/bin/setpriv"
PRLIMIT = "/usr/bin/prlimit"
# The sandbox's pid 1 (Debian tini): it forwards signals to the job, reaps orphans and exits
# with the job's status. bwrap's own pid 1 would answer bwrap before it is reaped itself, so
# the job's CPU and memory use would never reach the worker's wait4; bwrap --as-pid-1 starts
# tini directly, and the usage travels up tini -> bwrap -> worker.
TINI = "/usr/bin/tini"
# GNU time (Debian ``time``) between setpriv and prlimit: a fresh fork of a 2 MB process starts the
# sandbox, so the resource usage it reports is the job's own (bwrap, tini and the job). The worker's
# own wait4 would report the worker's ~100 MB too: Linux carries a process's peak RSS across exec,
# and the process the worker forks is a copy of the worker (docs/execution.md, "Resource figures").
TIME = "/usr/bin/time"
USAGE_FORMAT = "governor-usage %M %U %S %I %O"
# Processes of the sandbox itself under the run's uid: time, bwrap and tini.
SANDBOX_PROCESSES = 3
WORK = "/work"
TMP = "/tmp"  # noqa: S108 - the path inside the sandbox, a private bind of the run's own directory
# Read-only from the host's /etc (each only if present): what libc, the dynamic linker,
# name resolution, time zones, TLS and Debian's alternatives read. Never shadow, sudoers,
# ssh keys or anything of Governor. passwd and group are written per run (see _identity_files).
ETC_FILES = (
    "alternatives",
    "ca-certificates.conf",
    "debian_version",
    "gai.conf",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "magic",
    "magic.mime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "protocols",
    "resolv.conf",
    "services",
    "shells",
    "ssl/certs",
    "ssl/openssl.cnf",
    "timezone",
)
# The merged-/usr symlinks (on hosts where they are directories, they are bound instead).
USR_LINKS = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")


class SandboxUnavailable(Exception):
    """This worker cannot start a sandbox; the run is refused, never started without one."""


class UidLease:
    """A uid held by this run alone until ``release`` (or the worker's death)."""

    def __init__(self, uid: int, fd: int) -> None:
        self.uid = uid
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # drops the flock
            self.fd = None

    def __enter__(self) -> UidLease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lease_uid(first: int, last: int, lock_dir: str) -> UidLease:
    """The first free uid from a random point of the range, so a uid just released is rarely
    given again at once. One empty lock file per uid ever used stays in ``lock_dir``."""
    try:
        os.mkdir(lock_dir, 0o700)
    except FileExistsError:
        pass
    count = last - first + 1
    start = random.randrange(count)  # noqa: S311 - spreading, not secrecy
    for step in range(count):
        uid = first + (start + step) % count
        fd = os.open(os.path.join(lock_dir, str(uid)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                continue
            raise
        return UidLease(uid, fd)
    raise SandboxUnavailable(
        f"every uid of GOVERNOR_SANDBOX_UIDS ({first}-{last}) is held by a running job on this host."
    )


def prepare_run_dir(run_dir: str, uid: int) -> tuple[str, str]:
    """The run's ``work`` and ``tmp`` directories inside ``run_dir``, owned by ``uid``, 0700."""
    paths = []
    for name in ("work", "tmp"):
        path = os.path.join(run_dir, name)
        os.mkdir(path, 0o700)
        os.chown(path, uid, uid)
        paths.append(path)
    # bwrap runs as the run's uid and must reach them; nobody else may list them.
    os.chown(run_dir, uid, uid)
    os.chmod(run_dir, 0o700)
    return paths[0], paths[1]


def _identity_files(uid: int) -> tuple[bytes, bytes]:
    passwd = (
        "root:x:0:0:root:/:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        f"governor-run:x:{uid}:{uid}:Governor run:{WORK}:/usr/sbin/nologin\n"
    )
    group = f"root:x:0:\nnogroup:x:65534:\ngovernor-run:x:{uid}:\n"
    return passwd.encode(), group.encode()


def _data_fd(data: bytes) -> int:
    """A pipe already holding ``data`` (far below a pipe's capacity), for bwrap to copy."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
    finally:
        os.close(write_end)
    return read_end


_LAYOUT: dict[tuple[str, ...], list[str]] = {}
_LAYOUT_LOCK = threading.Lock()


def _layout(read_only: tuple[str, ...]) -> list[str]:
    """The read-only part of the bwrap argv, worked out once per worker process."""
    with _LAYOUT_LOCK:
        if read_only in _LAYOUT:
            return _LAYOUT[read_only]
        args = ["--ro-bind", "/usr", "/usr"]
        for name in USR_LINKS:
            host = f"/{name}"
            if os.path.islink(host):
                args += ["--symlink", os.readlink(host), host]
            elif os.path.isdir(host):
                args += ["--ro-bind", host, host]
        for name in ETC_FILES:
            if os.path.exists(f"/etc/{name}"):
                args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        for path in read_only:
            args += ["--ro-bind", path, path]
        args += ["--symlink", "../tmp", "/var/tmp"]  # noqa: S108 - inside the sandbox
        _LAYOUT[read_only] = args
        return args


def command(
    argv: list[str],
    *,
    uid: int,
    work: str,
    tmp: str,
    limits: dict,
    bwrap: str,
    read_only: tuple[str, ...] = (),
    usage_report: str | None = None,
) -> tuple[list[str], tuple[int, ...]]:
    """The argv that runs ``argv`` in the sandbox, and the fds to pass (closed by the caller
    after the start). The job's environment goes through the process environment: nothing
    secret is ever on this command line, which every user of the host can read. With
    ``usage_report`` (a file the run's uid may write) and GNU time installed, the job's resource
    usage is written there when the sandbox exits (``read_usage``)."""
    mb = 1024 * 1024
    cpu = int(limits["cpu_seconds"])
    passwd, group = _identity_files(uid)
    fds = (_data_fd(passwd), _data_fd(group))
    prefix = [
        SETPRIV,
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        # Set after the switch (which would clear it): the worker's death kills bwrap.
        "--pdeathsig=KILL",
        "--",
        *timed(usage_report),
        PRLIMIT,
        # Soft then hard: SIGXCPU first, SIGKILL a few seconds later if ignored.
        f"--cpu={cpu}:{cpu + 5}",
        f"--as={int(limits['memory_mb']) * mb}",
        f"--fsize={int(limits['file_size_mb']) * mb}",
        # The count is per uid, and the uid is the run's own: the job's processes plus bwrap's.
        f"--nproc={int(limits['processes']) + SANDBOX_PROCESSES}",
        f"--nofile={int(limits['open_files'])}",
        "--core=0",
        "--",
    ]
    sandbox = [
        bwrap,
        "--unshare-all",  # user, pid, ipc, uts, network (only its own loopback), cgroup
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--as-pid-1",
        "--hostname",
        "governor-run",
        *_layout(read_only),
        "--ro-bind-data",
        str(fds[0]),
        "/etc/passwd",
        "--ro-bind-data",
        str(fds[1]),
        "/etc/group",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--bind",
        work,
        WORK,
        "--bind",
        tmp,
        TMP,
        # POSIX shared memory on the run's disk, not in a tmpfs of the host's memory; /dev and
        # the root are tmpfs too, so read-only: the job writes only to /work and /tmp.
        "--bind",
        tmp,
        "/dev/shm",  # noqa: S108 - the path inside the sandbox
        "--remount-ro",
        "/dev",
        "--remount-ro",
        "/",
        "--chdir",
        WORK,
        "--",
        TINI,
        "-g",  # signals go to the job's whole process group
        "--",
    ]
    return prefix + sandbox + argv, fds


def timed(usage_report: str | None) -> list[str]:
    """GNU time's argv (it runs as the run's uid, killed with the worker by setpriv's pdeathsig,
    and bwrap's --die-with-parent then takes the sandbox), or nothing without a report or time."""
    if usage_report is None or not os.access(TIME, os.X_OK):
        return []
    return [TIME, "--quiet", "--output", usage_report, "--format", USAGE_FORMAT, "--"]


@dataclass(frozen=True)
class Usage:
    max_rss_kb: int
    cpu_user_s: float
    cpu_sys_s: float
    block_in: int
    block_out: int


def read_usage(usage_report: str) -> Usage | None:
    """The figures GNU time wrote when the sandbox exited, None if it did not (killed with the
    sandbox, or not installed). The job inherits time's open report file and may write to it
    too, but only before time writes: time reports after every process of the sandbox is gone,
    so its line is the last one."""
    try:
        with open(usage_report, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 4096))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    if not lines:
        return None
    fields = lines[-1].split()
    if len(fields) != 6 or fields[0] != "governor-usage":
        return None
    try:
        return Usage(int(fields[1]), float(fields[2]), float(fields[3]), int(fields[4]), int(fields[5]))
    except ValueError:
        return None


def visible(path: str, read_only: tuple[str, ...]) -> bool:
    """Whether a host path can be seen inside the sandbox (the job's executable must be)."""
    real = os.path.realpath(path)
    roots = ("/usr", *read_only)
    return any(real == root or real.startswith(root.rstrip("/") + "/") for root in roots)


def check_private(paths: dict[str, str], read_only: tuple[str, ...]) -> None:
    """Refuse a configuration that would show Governor's own files to jobs."""
    for label, path in paths.items():
        if path and visible(path, read_only):
            raise SandboxUnavailable(
                f"{label} ({path}) lies under a directory jobs can read ({', '.join(('/usr', *read_only))}); "
                "install Governor and its data outside them."
            )


def traversable(path: str) -> None:
    """bwrap runs as the run's uid and must reach the run directory: every parent needs o+x."""
    current = os.path.realpath(path)
    while True:
        mode = os.stat(current).st_mode
        if not mode & 0o001:
            raise SandboxUnavailable(
                f"{current} is not traversable by the run uids (mode {mode & 0o7777:o}; it needs o+x, "
                "e.g. 0711), so bwrap cannot reach GOVERNOR_RUN_ROOT."
            )
        if current == "/":
            return
        current = os.path.dirname(current)


def probe(*, bwrap: str, uid: int, run_dir: str, limits: dict, read_only: tuple[str, ...]) -> None:
    """Start ``/bin/true`` in a sandbox exactly as a run would; SandboxUnavailable with bwrap's
    own message if it cannot."""
    work, tmp = prepare_run_dir(run_dir, uid)
    argv, fds = command(["/usr/bin/true"], uid=uid, work=work, tmp=tmp, limits=limits, bwrap=bwrap, read_only=read_only)
    try:
        done = subprocess.run(  # noqa: S603 - argv list, never a shell
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env={"PATH": "/usr/bin:/bin"},
            pass_fds=fds,
            timeout=30,
            check=False,
            start_new_session=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise SandboxUnavailable(f"could not start {argv[0]}: {exc}") from None
    finally:
        for fd in fds:
            os.close(fd)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
        raise SandboxUnavailable(f"bwrap could not build the sandbox: {message}")
