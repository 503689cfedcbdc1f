"""Outbound HTTP guard (SSRF): which URLs Governor may call on a tenant's behalf, and a client that
connects only to the address it checked.

Used by HTTP jobs (``jobs.http_jobs``, policy per environment) and by signed webhooks and generic chat
URLs (``notifications``, the union of the tenant's environment policies). Pure: no models, only a
``Policy`` handed in by the caller. Loopback, link-local, private, reserved and cloud metadata
addresses are refused unless the policy names the host literally and allows private addresses; the
connection is made to the very address that was checked, so a DNS answer that changes between check
and connect (rebinding) cannot slip through.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpcore
import httpx

# Cloud metadata endpoints that are not covered by the link-local/private checks.
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("100.100.100.200"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("192.0.0.192"),
}
METADATA_HOSTS = {"metadata", "metadata.google.internal", "metadata.goog"}


class HostRefused(Exception):
    """The URL's host is not allowed by the policy."""


@dataclass
class Policy:
    """Hosts (fnmatch patterns) that may be called; internal addresses only for hosts named literally
    with ``allow_private`` (or, for a union of policies, exactly the hosts in ``private_hosts``)."""

    hosts: list[str] = field(default_factory=list)
    allow_private: bool = False
    private_hosts: frozenset[str] | None = None

    def private_allowed(self, host: str) -> bool:
        """Internal addresses only for hosts the allow-list names literally, never through a wildcard."""
        host = host.lower().rstrip(".")
        if self.private_hosts is not None:
            return host in self.private_hosts
        return self.allow_private and host in self.hosts


def union(policies: Iterable[Policy]) -> Policy:
    """A host allowed by any policy; internal addresses for a host only where a policy allowing them
    names it literally."""
    policies = list(policies)
    hosts = sorted({h.lower() for p in policies for h in p.hosts})
    private = frozenset(h.lower().rstrip(".") for p in policies if p.allow_private for h in p.hosts)
    return Policy(hosts=hosts, allow_private=bool(private), private_hosts=private)


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


def check_url_host(url: str, policy: Policy, *, resolve: bool = True, whose: str = "this environment's") -> Policy:
    """Refuse URLs whose scheme or host the policy does not allow (and, when resolving, whose
    addresses are internal). ``whose`` names the allow-list in the message."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise HostRefused(f"Only http and https URLs are allowed, not {parts.scheme or 'no scheme'!r}.")
    try:
        port = parts.port
    except ValueError:
        raise HostRefused("The URL's port is not a number between 0 and 65535.") from None
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise HostRefused("The URL has no host.")
    if parts.username or parts.password:
        raise HostRefused("Credentials in the URL are not allowed; use a secret header.")
    if not any(fnmatch.fnmatchcase(host, pattern) for pattern in policy.hosts):
        raise HostRefused(f"Host {host!r} is not on {whose} allow-list of HTTP hosts.")
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
            raise HostRefused(f"Host {host!r} is {reason}; refused unless the policy allows private addresses.")
    elif resolve:
        for address in resolve_host(host, port or (443 if parts.scheme == "https" else 80)):
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


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """Loading the CA bundle costs tens of milliseconds: once per process (client contexts are safe to
    share between threads)."""
    return httpx.create_ssl_context()


def guarded_client(policy: Policy, timeout: float) -> httpx.Client:
    """An httpx client that never follows redirects, ignores proxy variables and connects only through
    the guard."""
    transport = httpx.HTTPTransport()
    # httpx does not expose the network backend; swap the pool for one that uses the guard.
    transport._pool = httpcore.ConnectionPool(ssl_context=_ssl_context(), network_backend=GuardedBackend(policy))
    return httpx.Client(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)
