"""Run history strips and timelines: a run in a letter and in one line of words."""

from __future__ import annotations

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from ..models import Run
from ..watch import STATE_LETTERS, RunRow
from ..watch import run_summary as summarize

register = template.Library()


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
    cells = format_html_join(
        "",
        '<li><a class="cell st-{}" href="{}" data-tip="{}" aria-label="{}"><span aria-hidden="true">{}</span></a></li>',
        ((run.status, run.url, run.summary, run.summary, run.letter) for run in strip),
    )
    count = len(strip)
    return format_html(
        '<ol class="strip" aria-label="Last {} run{}, oldest first">{}</ol>', count, "" if count == 1 else "s", cells
    )


@register.simple_tag
def gantt_bars(row: dict) -> str:
    """A timeline row's bars (``jobs.watch.timeline``), built here rather than by a template loop:
    the now page draws up to 2,000 of them."""
    name = row["name"]
    return format_html_join(
        "",
        '<a href="{}" class="bar-link"><rect x="{}" y="{}" width="{}" height="{}" class="bar st-{}{}" data-run="{}">'
        "<title>{}: {}</title></rect></a>",
        (
            (
                bar["run"].url,
                bar["x"],
                bar["y"],
                bar["width"],
                bar["height"],
                bar["run"].status,
                "" if bar["started"] else " waiting",
                bar["run"].pk,
                name,
                bar["run"].summary,
            )
            for bar in row["bars"]
        ),
    )
