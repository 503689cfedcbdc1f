"""An alert as the rule engine reports it, before deduplication into an incident."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AlertSignal:
    """One firing of one rule for one job (or the executor's own alert kinds).

    ``fingerprint`` decides deduplication: signals with the same fingerprint while an incident is
    open join that incident's timeline instead of opening another one (e.g. ``rule:7:job:42``).
    """

    tenant_id: int
    job_id: int | None
    kind: str  # run_failed, late_start, long_running, failure_rate, deadline_missed, deadline_predicted, ...
    severity: str  # critical, high, medium, low
    fingerprint: str
    summary: str
    at: dt.datetime
    rule_id: int | None = None
    run_id: int | None = None
    details: dict = field(default_factory=dict)
