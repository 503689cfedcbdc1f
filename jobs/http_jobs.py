"""HTTP jobs: one request with httpx, judged by status code and an optional JSON Schema.

Only hosts on the environment's allow-list are called, through the SSRF guard of
``governance.egress`` (shared with webhooks): loopback, link-local, private,
reserved and cloud metadata addresses are refused unless the environment
explicitly allows them. The guard runs on every hop of a redirect chain, and
the connection is made to the very address that was checked.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import httpcore
import httpx

from governance import egress
from governance.egress import HostRefused, Policy, address_refused, union
from governance.models import Environment
from governance.patterns import UserSchemaValidator

from .placeholders import WHOLE_PLACEHOLDER

MAX_REDIRECTS = 5
MAX_BODY_BYTES = 1024 * 1024

__all__ = ["HostRefused", "Policy", "address_refused", "check_url_host", "execute_http", "policy_for", "tenant_policy"]


def policy_for(environment: Environment | int) -> Policy:
    from .models import EnvironmentExecutionPolicy

    env_id = environment.pk if isinstance(environment, Environment) else environment
    row = EnvironmentExecutionPolicy.objects.filter(environment_id=env_id).first()
    if row is None:
        return Policy()
    return Policy(hosts=[h.lower() for h in row.http_allowed_hosts], allow_private=row.allow_private_addresses)


def tenant_policy(tenant_id: int) -> Policy:
    """The tenant's HTTP policy for what is not tied to one environment (webhooks, chat): the union
    of its environments' policies (``egress.union``)."""
    from .models import EnvironmentExecutionPolicy

    rows = EnvironmentExecutionPolicy.objects.filter(environment__tenant_id=tenant_id).values_list(
        "http_allowed_hosts", "allow_private_addresses"
    )
    return union(Policy(hosts=[h.lower() for h in hosts], allow_private=private) for hosts, private in rows)


def check_url_host(url: str, environment: Environment | int | Policy, *, resolve: bool = True) -> Policy:
    """Refuse URLs whose scheme or host the environment does not allow (and, when resolving, whose
    addresses are internal)."""
    policy = environment if isinstance(environment, Policy) else policy_for(environment)
    return egress.check_url_host(url, policy, resolve=resolve)


def _client(policy: Policy, timeout: float) -> httpx.Client:
    return egress.guarded_client(policy, timeout)


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
