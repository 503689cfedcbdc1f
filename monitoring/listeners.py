"""What monitoring does when jobs reports a finished run or raises one of its own alerts.

Both are called after the run's end (or the alert) is committed; an exception here is logged by
jobs and never reaches the executor.
"""

from __future__ import annotations

from typing import Any

from . import rule_step


def run_finished(run: Any) -> None:
    """A run ended (any final state): alert rules on failure, recovery rules, incidents resolved by success."""
    rule_step.on_run_finished(run)


def alert_raised(alert: Any) -> None:
    """The executor, the recovery sweep or the reconciler raised a ``jobs.Alert`` (lost run, missed ping...)."""
