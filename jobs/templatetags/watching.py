"""Run history strips and timelines: a run in a letter and in one line of words."""

from __future__ import annotations

from django import template

from ..models import Run
from ..watch import STATE_LETTERS
from ..watch import run_summary as summarize

register = template.Library()


@register.filter
def state_letter(status: str) -> str:
    """The letter standing for a run state (F failed, R running, ✓ succeeded...), beside its colour."""
    return STATE_LETTERS.get(status, "?")


@register.filter
def run_summary(run: Run) -> str:
    """What hover and focus show for a run (``jobs.watch.run_summary``)."""
    return summarize(run)
