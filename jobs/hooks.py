"""Where an app above ``jobs`` adds to it without ``jobs`` importing that app (docs/architecture.md).

``approvals`` registers both hooks in ``ApprovalsConfig.ready()``. Unregistered, jobs behave as if
there were no change control: pausing never needs a change request and the job page shows no requests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import Job

PausePolicy = Callable[["Job"], bool]
# Adds to the job page's context (``user``, ``job``, the context built so far, to read and extend).
JobPagePart = Callable[[Any, "Job", dict], None]

_pause_policy: PausePolicy | None = None
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
