"""Run history strips and timelines: a run in a letter and in one line of words."""

from __future__ import annotations

from html import escape

from django import template
from django.utils.safestring import mark_safe

from ..models import Run
from ..watch import STATE_LETTERS, RunRow
from ..watch import run_summary as summarize

register = template.Library()


def _e(value: object) -> str:
    return escape(str(value), quote=True)


@register.filter
def state_letter(status: str) -> str:
    """The letter standing for a run state (F failed, R running, ✓ succeeded...), beside its colour."""
    return STATE_LETTERS.get(status, "?")


@register.filter
def run_summary(run: Run | RunRow) -> str:
    """What hover and focus show for a run (``jobs.watch.run_summary``)."""
    return summarize(run)


@register.simple_tag
def run_strip(strip) -> str:
    """The run history strip (``jobs.watch.last_runs``), built here rather than by a template loop:
    the jobs list shows up to a thousand cells, and the template engine took most of its time."""
    if not strip:
        return mark_safe('<span class="muted small">no runs yet</span>')  # noqa: S308  # a constant
    # Python's html.escape is what django.utils.html.escape calls, without its lazy-string wrappers
    # (which took a third of the list's time): the same HTML.
    cells = "".join(
        f'<li><a class="cell st-{_e(run.status)}" href="{_e(run.url)}" data-tip="{summary}" aria-label="{summary}">'
        f'<span aria-hidden="true">{_e(run.letter)}</span></a></li>'
        for run in strip
        for summary in (_e(run.summary),)
    )
    count = len(strip)
    plural = "" if count == 1 else "s"
    return mark_safe(f'<ol class="strip" aria-label="Last {count} run{plural}, oldest first">{cells}</ol>')  # noqa: S308  # escaped above


@register.simple_tag
def gantt_bars(row: dict) -> str:
    """A timeline row's bars (``jobs.watch.timeline``), built here rather than by a template loop:
    the now page draws up to 2,000 of them (escaped as ``run_strip`` does)."""
    name = _e(row["name"])
    return mark_safe(  # noqa: S308  # every value escaped
        "".join(
            f'<a href="{_e(run.url)}" class="bar-link"><rect x="{bar["x"]}" y="{bar["y"]}" width="{bar["width"]}" '
            f'height="{bar["height"]}" class="bar st-{_e(run.status)}{"" if bar["started"] else " waiting"}" '
            f'data-run="{run.pk}"><title>{name}: {_e(run.summary)}</title></rect></a>'
            for bar in row["bars"]
            for run in (bar["run"],)
        )
    )
