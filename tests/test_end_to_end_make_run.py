"""`make run`'s launcher (scripts/run-dev.sh) brings up OpenBao, the web server, the scheduler
and the workers, serves the app, and stops every one of them on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import httpx
import pytest
from django.db import connection

from tests import procs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False)
    return [int(line) for line in out.stdout.split()]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_launcher_serves_the_app_and_stops_every_process_on_sigterm(transactional_db, tmp_path):
    if connection.vendor != "sqlite":
        pytest.skip("the launcher does not depend on the database; proven once, on SQLite")
    port, vault_port = free_port(), free_port()
    env = procs.django_env(
        GOVERNOR_PORT=str(port),
        GOVERNOR_VAULT_PORT=str(vault_port),
        GOVERNOR_LOG_DIR=str(tmp_path / "logs"),
    )
    launcher = procs.Process("make-run", ["bash", "scripts/run-dev.sh"], env=env, log_dir=tmp_path)
    children: list[int] = []
    try:
        launcher.wait_for("Ctrl-C stops everything.", timeout=120)
        # The banner is printed by a short-lived `cat`: give the launcher a moment to reap it
        # so only the five long-lived parts (OpenBao, web, scheduler, workers, monitor) are counted.
        deadline = time.monotonic() + 10
        children = children_of(launcher.proc.pid)
        while len(children) != 5 and time.monotonic() < deadline:
            time.sleep(0.1)
            children = children_of(launcher.proc.pid)
        assert len(children) == 5, launcher.output()

        login = httpx.get(f"http://127.0.0.1:{port}/login/", timeout=10)
        assert login.status_code == 200 and 'name="password"' in login.text
        schema = httpx.get(f"http://127.0.0.1:{port}/api/schema/", timeout=10)
        assert schema.status_code == 200 and "openapi:" in schema.text
        # DEBUG is off: Governor's own 404 page, never Django's list of URL patterns; the static
        # files (the stylesheet, Swagger UI's bundle) are served all the same.
        missing = httpx.get(f"http://127.0.0.1:{port}/no-such-page/", timeout=10)
        assert missing.status_code == 404 and "<h1>Not found</h1>" in missing.text
        assert "URLconf" not in missing.text and "api/v1/" not in missing.text
        for asset in ("css/governor.css", "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"):
            assert httpx.get(f"http://127.0.0.1:{port}/static/{asset}", timeout=10).status_code == 200, asset
        vault = httpx.get(f"http://127.0.0.1:{vault_port}/v1/sys/health", timeout=10).json()
        assert vault["initialized"] and not vault["sealed"]
        output = launcher.output()
        assert (
            f"http://127.0.0.1:{port}/" in output
            and "acme-approver2" in output
            and "superuser: admin" in output
            and "logs" in output
        )
    finally:
        code = launcher.stop(grace=40)
        for pid in children:
            if alive(pid):  # never leave a server behind, even when the test failed
                os.killpg(pid, signal.SIGKILL)

    assert code == 0, launcher.output()
    assert "Stopped." in launcher.output()
    assert not [pid for pid in children if alive(pid)]
    # umask 077: the logs (which may name jobs and tenants) are Governor's alone.
    assert (tmp_path / "logs").stat().st_mode & 0o777 == 0o700
    assert {(tmp_path / "logs" / f"{name}.log").stat().st_mode & 0o777 for name in ("web", "worker")} == {0o600}
    logs = {name: (tmp_path / "logs" / f"{name}.log").read_text() for name in ("scheduler", "worker")}
    assert "scheduler stopped" in logs["scheduler"]
    assert "has stopped." in logs["worker"]
