"""`make serve` (scripts/serve.sh), the production profile, on loopback against servers of its own: a
throwaway PostgreSQL (and a standby of it), a Redis and an OpenBao. It serves the app through gunicorn
with WhiteNoise's hashed, far-future-cached static files, runs N schedulers and N worker clusters, and
answers /healthz and /readyz; /readyz turns 503 naming the broker when Redis goes away. It refuses to
start, with one line naming the setting and nothing started, on a DATABASE_URL naming no writable node,
a Redis that refuses connections and a missing static build.

These start their own servers, so the database of the pass does not matter: they run once, in the
SQLite pass (the PostgreSQL pass exports a postgres:// DATABASE_URL)."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests import procs, servers
from tests.vault import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVE = ["bash", str(ROOT / "scripts" / "serve.sh")]
HTTPS = {"X-Forwarded-Proto": "https"}
REFUSAL = "Governor refuses to start: "

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("DATABASE_URL", "").startswith("postgres"),
        reason="starts its own PostgreSQL and Redis; proven once, in the SQLite pass",
    ),
    pytest.mark.skipif(servers.pg_bin() is None, reason="PostgreSQL server binaries are not installed"),
]


def serve_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """A production host's environment, and nothing from this test process."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
    env.update(
        GOVERNOR_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(50),
        GOVERNOR_AUDIT_KEY=secrets.token_hex(32),
        ALLOWED_HOSTS="governor.example.com,127.0.0.1",
        DATABASE_URL=f"sqlite:///{tmp_path}/governor.sqlite3",
        GOVERNOR_STATIC_ROOT=str(tmp_path / "static"),
        GOVERNOR_LOG_DIR=str(tmp_path / "logs"),
        GOVERNOR_WEB_BIND=f"127.0.0.1:{free_port()}",
        GOVERNOR_WEB_WORKERS="1",
        GOVERNOR_WEB_THREADS="2",
        GOVERNOR_WORKERS="1",
        GOVERNOR_TLS_PROXY_HEADER="X-Forwarded-Proto",
        GOVERNOR_RUN_ROOT=str(tmp_path / "runs"),
        VAULT_APPROLE_FILE=str(tmp_path / "approle.json"),
        GOVERNOR_AUDIT_CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
    )
    env.update(values)
    return env


def refused(env: dict[str, str]) -> tuple[int, list[str], Path]:
    """Run serve.sh to completion (bounded); its exit status, its refusal lines and its log directory."""
    result = subprocess.run(SERVE, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(REFUSAL)]
    return result.returncode, lines, Path(env["GOVERNOR_LOG_DIR"])


def assert_nothing_started(env: dict[str, str], logs: Path) -> None:
    # No server, scheduler or cluster was started, no migration ran, and nothing listens.
    started = {path.name for path in logs.iterdir()}
    assert not started & {"web.log", "scheduler-1.log", "workers-1.log", "migrate.log"}, started
    host, port = env["GOVERNOR_WEB_BIND"].split(":")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{host}:{port}/healthz", timeout=2)


@pytest.fixture(scope="module")
def postgres():
    server = servers.start_primary()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def standby(postgres):
    server = servers.start_standby(postgres)
    yield server
    server.stop()


@pytest.fixture
def redis_server(tmp_path):
    server = servers.RedisServer(tmp_path)
    yield server
    server.stop()


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False)
    return [int(line) for line in out.stdout.split()]


@pytest.mark.slow
def test_serve_runs_gunicorn_whitenoise_schedulers_and_workers_on_postgresql_and_redis(
    postgres, redis_server, bao_server, tmp_path
):
    env = serve_env(
        tmp_path,
        DATABASE_URL=postgres.url,
        REDIS_URL=redis_server.url,
        VAULT_ADDR=bao_server.addr,
        GOVERNOR_SCHEDULERS="2",
        GOVERNOR_WORKER_CLUSTERS="2",
    )
    base = f"http://{env['GOVERNOR_WEB_BIND']}"
    serve = procs.Process("serve", SERVE, env=env, log_dir=tmp_path)
    children: list[int] = []
    try:
        up_after = serve.wait_for("Governor is serving on", timeout=150)
        print(f"serve.sh: checks, collectstatic, migrate and start in {up_after:.1f}s")
        children = children_of(serve.proc.pid)
        # One web server, two schedulers, two worker clusters and the monitor, each its own process group.
        assert len(children) == 6, serve.output()
        assert "web scheduler-1 scheduler-2 workers-1 workers-2 monitor" in serve.output()

        login = httpx.get(f"{base}/login/", headers=HTTPS, timeout=10)
        assert login.status_code == 200 and 'name="password"' in login.text
        assert login.headers["server"] == "gunicorn"
        assert login.headers["strict-transport-security"].startswith("max-age=31536000")
        assert "secure" in login.headers["set-cookie"].lower()
        # Without the proxy's header, plain HTTP is sent to HTTPS.
        plain = httpx.get(f"{base}/login/", timeout=10)
        assert plain.status_code == 301 and plain.headers["location"].startswith("https://")

        css = re.search(r'href="(/static/css/governor\.[0-9a-f]{12}\.css)"', login.text)
        assert css, "the login page links the hashed stylesheet"
        sheet = httpx.get(base + css.group(1), headers={**HTTPS, "Accept-Encoding": "gzip"}, timeout=10)
        assert sheet.status_code == 200 and sheet.headers["content-type"].startswith("text/css")
        assert sheet.headers["cache-control"] == "max-age=315360000, public, immutable"
        assert sheet.headers["content-encoding"] == "gzip" and "body" in sheet.text

        # Probes: plain HTTP, by address, no session.
        health = httpx.get(f"{base}/healthz", timeout=10)
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        assert "set-cookie" not in health.headers
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "vault": "ok", "static": "ok"}

        # Every scheduler and cluster came up against PostgreSQL and Redis.
        for name in ("workers-1", "workers-2"):
            procs.wait_until(
                lambda name=name: "ready for work" in (tmp_path / "logs" / f"{name}.log").read_text(), 60, name
            )

        redis_server.stop()
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 503
        body = ready.json()
        assert body["failed"] == ["broker"] and body["checks"]["database"] == "ok"
        assert body["errors"] == {"broker": "REDIS_URL: Redis refused the connection"}
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
    finally:
        code = serve.stop(grace=60)
        for pid in children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert code == 0, serve.output()
    assert "Stopped." in serve.output()


@pytest.mark.slow
@pytest.mark.parametrize("options", ["", "?target_session_attrs=read-write"])
def test_serve_refuses_a_database_url_that_names_no_writable_node(standby, tmp_path, options):
    assert standby.in_recovery()
    env = serve_env(tmp_path, DATABASE_URL=standby.url + options)
    code, lines, logs = refused(env)
    assert code == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{REFUSAL}DATABASE_URL: ")
    if options:
        # libpq itself skips the standby; the line says so.
        assert "cannot reach a writable node" in lines[0]
    else:
        assert "names no writable node: the server is a standby in recovery" in lines[0]
    assert f"127.0.0.1:{standby.port}/governor" in lines[0]
    assert_nothing_started(env, logs)


def test_serve_refuses_a_redis_that_refuses_connections(tmp_path):
    port = free_port()  # nothing listens there
    env = serve_env(tmp_path, REDIS_URL=f"redis://127.0.0.1:{port}/0")
    code, lines, logs = refused(env)
    assert code == 1
    assert lines == [
        f"{REFUSAL}REDIS_URL: Redis refused the connection: Error 111 connecting to 127.0.0.1:{port}. "
        f"Connection refused. (127.0.0.1:{port})"
    ]
    assert_nothing_started(env, logs)


def test_serve_refuses_without_a_static_build(tmp_path):
    env = serve_env(tmp_path, GOVERNOR_SERVE_COLLECTSTATIC="0")
    code, lines, logs = refused(env)
    assert code == 1
    assert lines == [
        f"{REFUSAL}STATIC_ROOT: no static build (staticfiles.json missing): run manage.py collectstatic "
        f"({tmp_path / 'static'})"
    ]
    assert_nothing_started(env, logs)


def test_serve_refuses_a_missing_setting_with_the_settings_own_line(tmp_path):
    env = serve_env(tmp_path)
    del env["GOVERNOR_AUDIT_KEY"]
    code, lines, logs = refused(env)
    assert code == 1
    assert len(lines) == 1 and "GOVERNOR_AUDIT_KEY must be set in production" in lines[0], lines
    assert_nothing_started(env, logs)
