"""Run history strips and timelines: a run in a letter and in one line of words."""

from __future__ import annotations

from datetime import UTC

from django import template

from ..models import Run, RunStatus
from ..watch import STATE_LETTERS

register = template.Library()


def _seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@register.filter
def state_letter(status: str) -> str:
    """The letter standing for a run state (F failed, R running, ✓ succeeded...), beside its colour."""
    return STATE_LETTERS.get(status, "?")


@register.filter
def run_summary(run: Run) -> str:
    """``Run #12: Failed · started 2026-12-07 01:02:03 UTC · took 3.0 s · exit 1``: what hover and
    focus show on a strip cell or a timeline bar (reads only the strip's fields)."""
    parts = [f"Run #{run.pk}: {RunStatus(run.status).label}"]
    if run.started_at:
        parts.append(f"started {run.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC")
        if run.finished_at:
            parts.append(f"took {_seconds((run.finished_at - run.started_at).total_seconds())}")
        else:
            parts.append("still running" if run.status == RunStatus.RUNNING else "not finished")
    else:
        parts.append(f"scheduled for {run.scheduled_for.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC, not started")
    if run.exit_code is not None:
        parts.append(f"exit {run.exit_code}")
    return " · ".join(parts)
