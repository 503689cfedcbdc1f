"""Throwaway servers a test starts itself on loopback: PostgreSQL (a primary, and a streaming standby of it
made with ``pg_basebackup -R``) and Redis. Each is bounded in time and removed when stopped."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import redis

from tests.vault import free_port


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: [int(x) for x in p.split("/")[4].split(".")])
    return Path(found[-1]) if found and Path(found[-1], "initdb").exists() else None


def _as_postgres() -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []


class PostgresServer:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.url = f"postgres://governor@127.0.0.1:{port}/governor"

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def _ctl(self, *args: str, timeout: float = 40) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*_as_postgres(), str(pg_bin() / "pg_ctl"), "-D", str(self.data), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        result = self._ctl("-l", str(self.directory / "server.log"), "-w", "-t", "30", "-o", options, "start")
        if result.returncode != 0:
            log = (self.directory / "server.log").read_text(errors="replace")
            raise AssertionError(f"PostgreSQL did not start on {self.port}:\n{result.stderr}\n{log}")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "-w", "-t", "10", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)

    def in_recovery(self) -> bool:
        with psycopg.connect(self.url, connect_timeout=5) as conn:
            return conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]


def _directory() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="governor-pg-"))
    directory.chmod(0o755)
    if os.getuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    return directory


def start_primary() -> PostgresServer:
    directory = _directory()
    server = PostgresServer(directory, free_port())
    init = subprocess.run(
        [*_as_postgres(), str(pg_bin() / "initdb"), "-D", str(server.data), "-U", "governor", "--auth=trust"]
        + ["-E", "UTF8", "--no-sync"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    server.start()
    created = subprocess.run(
        [str(pg_bin() / "createdb"), "-h", "127.0.0.1", "-p", str(server.port), "-U", "governor", "governor"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    return server


def start_standby(primary: PostgresServer) -> PostgresServer:
    """A hot standby streaming from ``primary`` (``pg_basebackup -R``): it answers, but only reads."""
    directory = _directory()
    server = PostgresServer(directory, free_port())
    backup = subprocess.run(
        [*_as_postgres(), str(pg_bin() / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port)]
        + ["-U", "governor", "-D", str(server.data), "-R", "-X", "stream", "-c", "fast", "--no-sync"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert backup.returncode == 0, backup.stderr
    server.start()
    return server


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", str(directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise AssertionError("redis-server did not start") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
