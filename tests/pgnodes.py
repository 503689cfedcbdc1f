"""Throwaway PostgreSQL servers on loopback for the HA tests (marker ``ha``): a primary, a streaming
replica made with ``pg_basebackup -R``, kill -9, promote, restart. As scripts/with-postgres.sh, the
servers run as ``postgres`` (runuser) when the tests run as root."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.vault import free_port

USER = "governor"
DB = "governor"


def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql")
    return Path(found[-1])


def _as_pg() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []


def _run(*argv: str, timeout: float = 60) -> str:
    done = subprocess.run([*_as_pg(), *argv], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="governor-ha-pg-"))
    path.chmod(0o755)
    if os.getuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    return path


class Node:
    """One PostgreSQL server (data directory + port)."""

    def __init__(self, base: Path, name: str) -> None:
        self.base = base
        self.name = name
        self.data = base / name
        self.port = free_port()
        self.log = base / f"{name}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self) -> str:
        return f"postgres://{USER}@{self.address}/{DB}"

    def initdb(self, archive: Path | None = None) -> Node:
        _run(str(pg_bin() / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        settings = [
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.base}'",
            "wal_level = replica",
            "max_wal_senders = 5",
            "hot_standby = on",
            "max_connections = 200",
            # Durable commits on the primary (what failover is about); fsync off only spares the disk.
            "fsync = off",
            "full_page_writes = on",
        ]
        if archive is not None:
            settings += ["archive_mode = on", f"archive_command = 'cp %p {archive}/%f'"]
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n".join(settings) + "\n")
        with open(self.data / "pg_hba.conf", "a") as hba:
            hba.write(f"host replication {USER} 127.0.0.1/32 trust\n")
        return self

    def start(self) -> Node:
        _run(
            str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-o", f"-p {self.port}", "start",
        )  # fmt: skip
        return self

    def createdb(self) -> Node:
        _run(str(pg_bin() / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DB)
        return self

    def replica(self, name: str) -> Node:
        """A streaming replica of this node (pg_basebackup -R), started."""
        other = Node(self.base, name)
        _run(
            str(pg_bin() / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
            "-D", str(other.data), "-R", "-X", "stream", "-c", "fast",
        )  # fmt: skip
        return other.start()

    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def kill9(self) -> None:
        """SIGKILL the postmaster and every backend: no shutdown checkpoint, no goodbye to clients."""
        pid = self.pid()
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        for each in [pid, *map(int, children)]:
            try:
                os.kill(each, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise AssertionError(f"postgres {pid} survived SIGKILL")

    def promote(self) -> None:
        _run(str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "promote")

    def restart_fast(self) -> None:
        _run(
            str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-m", "fast", "-o", f"-p {self.port}", "restart",
        )  # fmt: skip

    def psql(self, sql: str) -> str:
        return _run(
            str(pg_bin() / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", DB,
            "-At", "-v", "ON_ERROR_STOP=1", "-c", sql,
        ).strip()  # fmt: skip

    def stop(self) -> None:
        subprocess.run(
            [*_as_pg(), str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "-t", "10", "stop"],
            capture_output=True,
            check=False,
        )


def tool(name: str, *args: str, timeout: float = 300) -> str:
    """Run a client tool (pg_dump, pg_restore, psql) from the server's own bin directory."""
    return _run(str(pg_bin() / name), *args, timeout=timeout)


def copy_of(source: Node, base: Path, name: str, archive: Path | None = None) -> Node:
    """A new server whose data directory is a copy of the stopped ``source`` (a migrated and seeded
    database made once per test session: migrating is the slow part), on a port of its own."""
    node = Node(base, name)
    subprocess.run(["cp", "-a", str(source.data), str(node.data)], check=True)
    lines = ["archive_mode = off"]
    if archive is not None:
        lines = ["archive_mode = on", f"archive_command = 'cp %p {archive}/%f'"]
    with open(node.data / "postgresql.auto.conf", "a") as conf:
        conf.write("\n".join(lines) + "\n")
    return node


def seeded(base: Path) -> Node:
    """Initialise, migrate and seed (seed_demo) a server, then stop it: the source of copy_of()."""
    from tests import procs

    node = Node(base, "seeded").initdb().start().createdb()
    try:
        environ = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "GOVERNOR_Q_BROKER"}}
        environ.update(DJANGO_SETTINGS_MODULE="governor.settings", DATABASE_URL=node.url())
        for args in (("migrate", "--noinput", "-v0"), ("seed_demo",)):
            done = procs.run_manage(*args, env=environ, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    finally:
        _run(str(pg_bin() / "pg_ctl"), "-D", str(node.data), "-m", "fast", "-w", "-t", "60", "stop")
    return node
