"""What monitoring does when jobs reports a finished run or raises one of its own alerts.

Both are called after the run's end (or the alert) is committed; an exception here is logged by
jobs and never reaches the executor.
"""

from __future__ import annotations

from typing import Any

from . import incident_listeners, rule_step


def run_finished(run: Any) -> None:
    """A run ended (any final state): alert rules on failure, recovery rules, incidents resolved by success."""
    from . import recovery

    # A success resolves the job's incidents first, naming the run; the rules' own clears then find
    # nothing left open.
    incident_listeners.resolve_on_success(run)
    rule_step.on_run_finished(run)
    recovery.evaluate(run)


def alert_raised(alert: Any) -> None:
    """The executor, the recovery sweep or the reconciler raised a ``jobs.Alert`` (lost run, missed ping...)."""
    incident_listeners.incident_from_alert(alert)
