"""Is this node fit to serve: the checks behind ``/healthz``, ``/readyz`` and ``manage.py preflight``.

``/healthz`` says the process answers (no database, nothing else). ``/readyz`` says the node can do its
work: the database takes writes, the broker (Redis, when it is the broker) answers, Vault answers when
an address was configured, and the static build exists when production serves one. Each check costs one
constant query or round trip. Both are answered by ``HealthCheckMiddleware`` before host checks, HTTPS
redirects, sessions and authentication: probes come by address, over plain HTTP, without a session.

A failing check names the setting to fix. The body of ``/readyz`` (unauthenticated) names the setting
and the reason only; the log and ``preflight`` add where (host, port, path).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import redis
from django.conf import settings
from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse

logger = logging.getLogger(__name__)

# Each probe round trip is bounded: a check that hangs is a failed check.
PROBE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Problem:
    check: str  # database, broker, vault, static
    setting: str  # the setting to look at
    reason: str  # what is wrong, without addresses
    where: str  # host:port, path (logs and the operator's console only)
    detail: str = ""  # the client library's own words (may name addresses: not for /readyz)

    def line(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.setting}: {self.reason}{detail} ({self.where})"

    def public(self) -> str:
        return f"{self.setting}: {self.reason}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _database_where() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return str(db["NAME"])
    return f"{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def database_problem() -> Problem | None:
    """The default database answers and takes writes (PostgreSQL: not a standby, not read-only)."""
    try:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")
                in_recovery, read_only = cursor.fetchone()
                if in_recovery:
                    return Problem(
                        "database",
                        "DATABASE_URL",
                        "names no writable node: the server is a standby in recovery",
                        _database_where(),
                    )
                if read_only == "on":
                    return Problem(
                        "database",
                        "DATABASE_URL",
                        "names no writable node: the session is read-only",
                        _database_where(),
                    )
            else:
                cursor.execute("SELECT 1")
                cursor.fetchone()
    except DatabaseError as exc:
        # A broken connection is not reused by the next request (CONN_HEALTH_CHECKS does the same).
        connection.close_if_unusable_or_obsolete()
        return Problem("database", "DATABASE_URL", "cannot reach a writable node", _database_where(), _first_line(exc))
    return None


_redis_lock = threading.Lock()
_redis_clients: dict[str, redis.Redis] = {}


def _redis_client(url: str) -> redis.Redis:
    with _redis_lock:
        client = _redis_clients.get(url)
        if client is None:
            client = redis.Redis.from_url(
                url, socket_connect_timeout=PROBE_TIMEOUT_SECONDS, socket_timeout=PROBE_TIMEOUT_SECONDS
            )
            _redis_clients[url] = client
        return client


def broker_problem() -> Problem | None:
    """Redis answers a PING when it is the broker (the ORM broker is the database, checked above)."""
    if settings.GOVERNOR_Q_BROKER != "redis":
        return None
    url = settings.REDIS_URL
    parsed = urlparse(url)
    where = f"{parsed.hostname or 'localhost'}:{parsed.port or 6379}"
    try:
        _redis_client(url).ping()
    except redis.RedisError as exc:
        reason = "Redis refused the connection" if isinstance(exc, redis.ConnectionError) else "Redis did not answer"
        return Problem("broker", "REDIS_URL", reason, where, _first_line(exc))
    return None


def vault_problem() -> Problem | None:
    """Vault (or OpenBao) is reachable, initialised and unsealed, when ``VAULT_ADDR`` was given."""
    if not settings.VAULT_CONFIGURED:
        return None
    address = settings.VAULT_ADDR.rstrip("/")
    try:
        response = httpx.get(
            f"{address}/v1/sys/health",
            params={"standbyok": "true", "perfstandbyok": "true"},
            timeout=PROBE_TIMEOUT_SECONDS,
        )
    except httpx.HTTPError as exc:
        return Problem("vault", "VAULT_ADDR", "Vault is unreachable", address, _first_line(exc))
    if response.status_code == 503:
        return Problem("vault", "VAULT_ADDR", "Vault is sealed", address)
    if response.status_code != 200:
        return Problem("vault", "VAULT_ADDR", f"Vault is not ready (HTTP {response.status_code})", address)
    return None


def static_problem() -> Problem | None:
    """Production serves the collected, hashed build: its manifest must exist in ``STATIC_ROOT``."""
    if not isinstance(staticfiles_storage, ManifestFilesMixin):
        return None
    manifest = Path(settings.STATIC_ROOT) / staticfiles_storage.manifest_name
    if not manifest.is_file():
        return Problem(
            "static",
            "STATIC_ROOT",
            f"no static build ({staticfiles_storage.manifest_name} missing): run manage.py collectstatic",
            str(settings.STATIC_ROOT),
        )
    return None


READINESS_CHECKS = {
    "database": database_problem,
    "broker": broker_problem,
    "vault": vault_problem,
    "static": static_problem,
}


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and answers; nothing else is touched."""
    response = JsonResponse({"status": "ok"})
    response["Cache-Control"] = "no-store"
    return response


def readyz(request: HttpRequest) -> JsonResponse:
    """200 when every configured dependency works; 503 naming each that does not."""
    checks: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, check in READINESS_CHECKS.items():
        problem = check()
        if problem is None:
            checks[name] = "ok"
        else:
            checks[name] = "failed"
            errors[name] = problem.public()
            logger.warning("not ready: %s", problem.line())
    body: dict[str, object] = {"status": "ready" if not errors else "unavailable", "checks": checks}
    if errors:
        body["failed"] = list(errors)
        body["errors"] = errors
    response = JsonResponse(body, status=503 if errors else 200)
    response["Cache-Control"] = "no-store"
    return response


PROBES = {"/healthz": healthz, "/readyz": readyz}


class HealthCheckMiddleware:
    """Answers the probes first: no host check, no HTTPS redirect, no session, no user, no CSP."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        view = PROBES.get(request.path_info)
        if view is not None and request.method in ("GET", "HEAD"):
            return view(request)
        return self.get_response(request)
