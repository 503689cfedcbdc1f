"""Incidents: alerts deduplicated by fingerprint, triggered -> acknowledged -> resolved.

The contract the rule engine (monitoring.rules) and the listeners rely on; the implementation is
being written (models in monitoring/models/incidents.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .signals import AlertSignal


def raise_alert(signal: AlertSignal) -> Any:
    """Open an incident for ``signal.fingerprint`` or add the signal to the open one; returns the incident.

    A silenced job (ad-hoc silence or maintenance window) still records the incident but notifies nobody.
    Idempotent for the same (fingerprint, rule, run): calling twice adds nothing.
    """
    raise NotImplementedError


def resolve_fingerprint(tenant_id: int, fingerprint: str, *, at: dt.datetime, reason: str) -> Any:
    """Resolve the open incident with this fingerprint (automatically, e.g. the next run succeeded)."""
    raise NotImplementedError
