"""HTTP jobs: one request with httpx, judged by status code and an optional JSON Schema.

Only hosts on the environment's allow-list are called. Loopback, link-local,
private, reserved and cloud metadata addresses are refused unless the
environment explicitly allows them (SSRF guard). The guard runs on every hop
of a redirect chain, and the connection is made to the very address that was
checked, so a DNS answer that changes between check and connect
(rebinding) cannot slip through.
"""

from __future__ import annotations

import email.utils
import fnmatch
import ipaddress
import json
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from governance.models import Environment
from governance.patterns import UserSchemaValidator

from .placeholders import WHOLE_PLACEHOLDER

MAX_REDIRECTS = 5
MAX_BODY_BYTES = 1024 * 1024
# Cloud metadata endpoints that are not covered by the link-local/private checks.
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("100.100.100.200"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("192.0.0.192"),
}
METADATA_HOSTS = {"metadata", "metadata.google.internal", "metadata.goog"}


class HostRefused(Exception):
    """The URL's host is not allowed for this environment."""


@dataclass
class Policy:
    hosts: list[str] = field(default_factory=list)
    allow_private: bool = False

    def private_allowed(self, host: str) -> bool:
        """Internal addresses only for hosts the allow-list names literally, never through a wildcard."""
        return self.allow_private and host.lower().rstrip(".") in self.hosts


def policy_for(environment: Environment | int) -> Policy:
    from .models import EnvironmentExecutionPolicy

    env_id = environment.pk if isinstance(environment, Environment) else environment
    row = EnvironmentExecutionPolicy.objects.filter(environment_id=env_id).first()
    if row is None:
        return Policy()
    return Policy(hosts=[h.lower() for h in row.http_allowed_hosts], allow_private=row.allow_private_addresses)


def address_refused(address: str) -> str | None:
    """Why an IP address may not be called (None if it may)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private or ip.is_reserved or ip.is_multicast or ip.is_unspecified or not ip.is_global:
        return "a private or reserved address"
    return None


def check_url_host(url: str, environment: Environment | int | Policy, *, resolve: bool = True) -> Policy:
    """Refuse URLs whose scheme or host the environment does not allow (and, when resolving, whose
    addresses are internal)."""
    policy = environment if isinstance(environment, Policy) else policy_for(environment)
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise HostRefused(f"Only http and https URLs are allowed, not {parts.scheme or 'no scheme'!r}.")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise HostRefused("The URL has no host.")
    if parts.username or parts.password:
        raise HostRefused("Credentials in the URL are not allowed; use a secret header.")
    if not any(fnmatch.fnmatchcase(host, pattern) for pattern in policy.hosts):
        raise HostRefused(f"Host {host!r} is not on this environment's allow-list of HTTP hosts.")
    if policy.private_allowed(host):
        return policy
    if host in METADATA_HOSTS:
        raise HostRefused(f"Host {host!r} is a cloud metadata service.")
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        reason = address_refused(str(literal))
        if reason:
            raise HostRefused(f"Host {host!r} is {reason}; refused unless the environment allows private addresses.")
    elif resolve:
        for address in resolve_host(host, parts.port or (443 if parts.scheme == "https" else 80)):
            reason = address_refused(address)
            if reason:
                raise HostRefused(f"Host {host!r} resolves to {address}, {reason}; refused.")
    return policy


def resolve_host(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise httpx.ConnectError(f"Cannot resolve {host!r}: {exc}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.SyncBackend):
    """Connects only to addresses that pass the SSRF guard, to exactly the address checked."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        addresses = resolve_host(host, port)
        if not self.policy.private_allowed(host):
            for address in addresses:
                reason = address_refused(address)
                if reason:
                    raise httpcore.ConnectError(f"Refused to connect to {host} ({address}): {reason}.")
        return super().connect_tcp(addresses[0], port, timeout, local_address, socket_options)


def _client(policy: Policy, timeout: float) -> httpx.Client:
    transport = httpx.HTTPTransport()
    # httpx does not expose the network backend; swap the pool for one that uses the guard.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(), network_backend=GuardedBackend(policy)
    )
    return httpx.Client(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)


@dataclass
class HttpResult:
    status: int | None
    body: str
    body_bytes: int
    ok: bool
    error: str = ""
    transient: bool = False
    retry_after: float | None = None
    elapsed_ms: float = 0.0


def render_body(body: Any, values: dict) -> Any:
    """Replace JSON string leaves that are exactly "{name}" with the typed value; nothing is spliced."""
    if isinstance(body, dict):
        return {k: render_body(v, values) for k, v in body.items()}
    if isinstance(body, list):
        return [render_body(v, values) for v in body]
    if isinstance(body, str):
        match = WHOLE_PLACEHOLDER.match(body)
        if match and match.group(1) in values:
            return values[match.group(1)]
    return body


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (now if now is not None else datetime.now(UTC).timestamp()))


def execute_http(spec: dict, values: dict, environment: Environment | int, timeout: float) -> HttpResult:
    started = time.monotonic()
    try:
        policy = check_url_host(spec["url"], environment)
    except HostRefused as exc:
        return HttpResult(None, "", 0, ok=False, error=str(exc))
    method = spec.get("method", "GET")
    headers = dict(spec.get("headers") or {})
    kwargs: dict[str, Any] = {"headers": headers}
    body = spec.get("body")
    if isinstance(body, dict | list):
        kwargs["json"] = render_body(body, values)
    elif isinstance(body, str):
        kwargs["content"] = body.encode()
    url = spec["url"]
    try:
        with _client(policy, timeout) as client:
            for _hop in range(MAX_REDIRECTS + 1):
                check_url_host(url, policy)
                with client.stream(method, url, **kwargs) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        if response.status_code in (301, 302, 303) and method != "HEAD":
                            method, kwargs = "GET", {"headers": headers}
                        continue
                    raw = bytearray()
                    for chunk in response.iter_bytes():
                        raw += chunk[: MAX_BODY_BYTES - len(raw)]
                        if len(raw) >= MAX_BODY_BYTES:
                            break
                    status = response.status_code
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                    break
            else:
                return HttpResult(None, "", 0, ok=False, error=f"More than {MAX_REDIRECTS} redirects.")
    except HostRefused as exc:
        return HttpResult(None, "", 0, ok=False, error=f"Redirect refused: {exc}")
    except httpx.TimeoutException as exc:
        return HttpResult(None, "", 0, ok=False, error=f"Timed out: {exc}", transient=True)
    except (httpx.TransportError, httpcore.ConnectError) as exc:
        refused = "Refused to connect" in str(exc)
        return HttpResult(None, "", 0, ok=False, error=f"Connection error: {exc}", transient=not refused)
    text = raw.decode("utf-8", errors="replace")
    elapsed = (time.monotonic() - started) * 1000
    success = spec.get("success_status") or [200, 201, 202, 204]
    transient = status >= 500 or status == 429
    if status not in success:
        return HttpResult(
            status,
            text,
            len(raw),
            ok=False,
            error=f"HTTP {status} is not a success status {success}.",
            transient=transient,
            retry_after=retry_after,
            elapsed_ms=elapsed,
        )
    schema = spec.get("response_schema")
    if schema:
        try:
            document = json.loads(text)
        except ValueError:
            return HttpResult(
                status, text, len(raw), ok=False, error="The response body is not JSON.", elapsed_ms=elapsed
            )
        errors = [e.message for e in UserSchemaValidator(schema).iter_errors(document)]
        if errors:
            return HttpResult(
                status,
                text,
                len(raw),
                ok=False,
                error="The response body does not match the schema: " + "; ".join(errors[:5]),
                elapsed_ms=elapsed,
            )
    return HttpResult(status, text, len(raw), ok=True, elapsed_ms=elapsed)
