"""Where an app above ``jobs`` adds to it without ``jobs`` importing that app (docs/architecture.md).

``approvals`` registers the pause policy and the job page part in ``ApprovalsConfig.ready()``.
Unregistered, jobs behave as if there were no change control: pausing never needs a change request
and the job page shows no requests. ``monitoring`` listens to finished runs and raised alerts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import Job

log = logging.getLogger(__name__)

PausePolicy = Callable[["Job"], bool]
# Adds to the job page's context (``user``, ``job``, the context built so far, to read and extend).
JobPagePart = Callable[[Any, "Job", dict], None]

RunListener = Callable[[Any], None]  # called with the finished Run
AlertListener = Callable[[Any], None]  # called with the new jobs.Alert

_pause_policy: PausePolicy | None = None
_run_finished: list[RunListener] = []
_alert_listeners: list[AlertListener] = []
_job_page_parts: list[JobPagePart] = []


def set_pause_policy(policy: PausePolicy) -> None:
    global _pause_policy
    _pause_policy = policy


def pause_requires_change(job: Job) -> bool:
    """Does the registered policy put pausing and resuming this job under change control?"""
    return _pause_policy is not None and _pause_policy(job)


def add_job_page_part(part: JobPagePart) -> None:
    if part not in _job_page_parts:
        _job_page_parts.append(part)


def fill_job_page(user, job: Job, context: dict) -> None:
    for part in _job_page_parts:
        part(user, job, context)


def add_run_finished_listener(listener: RunListener) -> None:
    if listener not in _run_finished:
        _run_finished.append(listener)


def add_alert_listener(listener: AlertListener) -> None:
    if listener not in _alert_listeners:
        _alert_listeners.append(listener)


def has_run_finished_listeners() -> bool:
    return bool(_run_finished)


def run_finished(run: Any) -> None:
    """Tell the listeners a run ended; one that raises is logged and the others still hear of it."""
    for listener in _run_finished:
        try:
            listener(run)
        except Exception:
            log.exception("run-finished listener %r failed for run %s", listener, getattr(run, "pk", None))


def alert_raised(alert: Any) -> None:
    for listener in _alert_listeners:
        try:
            listener(alert)
        except Exception:
            log.exception("alert listener %r failed for alert %s", listener, getattr(alert, "pk", None))
