"""What notifications learn from the apps above them (which never import upward).

``jobs`` owns the tenant's HTTP policy (``EnvironmentExecutionPolicy``) and plugs it in from
``JobsConfig.ready()``; without it, no webhook or generic chat host is allowed (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable

from governance.egress import Policy

_http_policy: Callable[[int], Policy] | None = None


def set_http_policy(source: Callable[[int], Policy]) -> None:
    global _http_policy
    _http_policy = source


def http_policy(tenant_id: int) -> Policy:
    """The hosts the tenant's webhooks and generic chat URLs may reach."""
    return _http_policy(tenant_id) if _http_policy is not None else Policy()
