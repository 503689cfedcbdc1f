"""Display helpers: UTC and local times side by side, status badges, a safe runbook renderer."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from django import template
from django.urls import reverse
from django.utils.html import escape, format_html
from django.utils.safestring import mark_safe

from governance.patterns import linear_pattern
from jobs import schedule
from monitoring.queries import open_incidents

from ..request_facts import review_queue_count

register = template.Library()


def _zone(tz_name: str | None):
    try:
        return schedule.zone(tz_name or "UTC")
    except schedule.ScheduleError:
        return UTC


@register.filter
def utc(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """``2026-11-29 12:03:00 UTC``."""
    if not value:
        return "—"
    return value.astimezone(UTC).strftime(fmt) + " UTC"


@register.filter
def local(value: datetime | None, tz_name: str | None) -> str:
    """The instant on the wall clock of ``tz_name``, with the zone's abbreviation."""
    if not value:
        return "—"
    zone = _zone(tz_name)
    fmt = "%Y-%m-%d %H:%M %Z" if value.second == 0 and value.microsecond == 0 else "%Y-%m-%d %H:%M:%S %Z"
    return value.astimezone(zone).strftime(fmt)


@register.filter
def isoz(value: datetime | None) -> str:
    return schedule.isoz(value) if value else ""


@register.simple_tag
def when(value: datetime | None, tz_name: str | None = None, short: bool = False):
    """UTC time, with the local time of ``tz_name`` beside it when that zone is not UTC."""
    if not value:
        return mark_safe('<span class="muted">—</span>')
    fmt = "%Y-%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S"
    main = format_html('<time datetime="{}">{}</time>', schedule.isoz(value), utc(value, fmt))
    if tz_name and tz_name != "UTC":
        zone = _zone(tz_name)
        shown = value.astimezone(zone).strftime(fmt + " %Z")
        return format_html('{} <span class="local" title="{}">{}</span>', main, tz_name, shown)
    return main


@register.filter
def isotext(value: str | None) -> str:
    """``2026-11-29T13:15:00Z`` as ``Sun 2026-11-29 13:15 UTC`` (previews hand ISO strings)."""
    if not value:
        return "—"
    try:
        instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    fmt = "%a %Y-%m-%d %H:%M" if instant.second == 0 else "%a %Y-%m-%d %H:%M:%S"
    return instant.astimezone(UTC).strftime(fmt) + " UTC"


@register.filter
def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@register.filter
def kib(value: int | None) -> str:
    """A size in KiB, e.g. ``3.1 MiB (3180 KiB)``."""
    if value is None:
        return "—"
    if value < 1024:
        return f"{value} KiB"
    return f"{value / 1024:.1f} MiB ({value} KiB)"


@register.filter
def argv(value) -> str:
    """An argv list shown one item per line (the form's input format)."""
    if isinstance(value, list):
        return "\n".join(str(item) for item in value)
    return "" if value is None else str(value)


@register.filter
def field_label(name: str) -> str:
    return {
        "timeout_seconds": "Timeout (s)",
        "timezone": "Time zone",
        "cron": "Schedule (cron)",
        "command": "Command (argv)",
        "gap": "DST gap",
        "overlap": "DST overlap",
        "catchup": "Missed runs",
        "catchup_limit": "Catch-up limit",
        "starting_deadline_seconds": "Starting deadline (s)",
        "http": "HTTP request",
    }.get(name, name.replace("_", " ").capitalize())


# Matched against runbooks (user text, up to 50 000 characters) by RE2: with ``re``, a line of
# 50 000 "[" took 30 s to render (each start rescans the rest of the line).
_INLINE_CODE = linear_pattern(r"`([^`]+)`")
_BOLD = linear_pattern(r"\*\*([^*]+)\*\*")
_LINK = linear_pattern(r"\[([^\]]+)\]\((https?://[^\s)]+)\)")


def _inline(escaped: str) -> str:
    # Runs on already-escaped text: the only tags in the result are the ones added here.
    escaped = _INLINE_CODE.sub(r"<code>\1</code>", escaped)
    escaped = _BOLD.sub(r"<strong>\1</strong>", escaped)
    return _LINK.sub(r'<a href="\2" rel="noopener noreferrer nofollow">\1</a>', escaped)


@register.filter
def runbook(text: str | None):
    """A small, safe subset of markdown: headings, lists, paragraphs, `code`, **bold**, http(s) links.

    The text is HTML-escaped before any markup is added, so a runbook can never inject HTML.
    """
    if not text:
        return ""
    html: list[str] = []
    list_tag: str | None = None
    paragraph: list[str] = []
    in_code = False
    code_lines: list[str] = []

    def flush_paragraph() -> None:
        if paragraph:
            html.append("<p>" + "<br>".join(_inline(line) for line in paragraph) + "</p>")
            paragraph.clear()

    def close_list() -> None:
        nonlocal list_tag
        if list_tag:
            html.append(f"</{list_tag}>")
            list_tag = None

    for raw in text.splitlines():
        if raw.strip().startswith("```"):
            if in_code:
                html.append("<pre>" + "\n".join(code_lines) + "</pre>")
                code_lines.clear()
                in_code = False
            else:
                flush_paragraph()
                close_list()
                in_code = True
            continue
        line = escape(raw)
        if in_code:
            code_lines.append(line)
            continue
        stripped = line.strip()
        heading = re.match(r"^(#{1,4})\s+(.*)$", stripped)
        bullet = re.match(r"^[-*]\s+(.*)$", stripped)
        numbered = re.match(r"^\d+[.)]\s+(.*)$", stripped)
        if not stripped:
            flush_paragraph()
            close_list()
        elif heading:
            flush_paragraph()
            close_list()
            level = min(len(heading.group(1)) + 2, 6)
            html.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif bullet or numbered:
            flush_paragraph()
            tag = "ul" if bullet else "ol"
            if list_tag != tag:
                close_list()
                html.append(f"<{tag}>")
                list_tag = tag
            item = bullet or numbered
            assert item is not None
            html.append(f"<li>{_inline(item.group(1))}</li>")
        else:
            close_list()
            paragraph.append(stripped)
    if in_code:
        html.append("<pre>" + "\n".join(code_lines) + "</pre>")
    flush_paragraph()
    close_list()
    return mark_safe("\n".join(html))  # noqa: S308 - built from escaped text only


_OBJECT_PAGES = {"approvals.changerequest": "change_detail", "jobs.job": "job_detail", "jobs.run": "run_detail"}


@register.filter
def object_url(event) -> str:
    """The page of the object an audit event is about, when it has one (no query: type and id are on the row)."""
    name = _OBJECT_PAGES.get(event.object_type)
    if not name or not str(event.object_id).isdigit():
        return ""
    return reverse(name, args=[int(event.object_id)])


@register.simple_tag
def chart_bars(chart: dict) -> str:
    """The dashboard chart's bars (``governor.views.runs_chart``), built here rather than by a template
    loop (2.7 ms of the dashboard for 24 bars; the numbers are the view's, the statuses escaped)."""
    width, height = chart["bar_width"], chart["height"]
    bars = chart["bars"]
    out = []
    for index, bar in enumerate(bars):
        segments = bar["segments"]
        total = bar["total"]
        title = f"{utc(bar['hour'], '%Y-%m-%d %H:00')}: {total} run{'' if total == 1 else 's'}" + "".join(
            f", {s['n']} {escape(s['status'])}" for s in segments
        )
        rects = "".join(
            f'<rect x="0" y="{s["y"]}" width="{width}" height="{s["h"]}" class="seg st-{escape(s["status"])}"/>'
            for s in segments
        )
        tick = (
            f'<text x="{round(width)}" y="{height + 14}" class="tick" text-anchor="end">{escape(bar["label"])}h</text>'
            if index % 3 == 0 or index == len(bars) - 1
            else ""
        )
        out.append(
            f'<g transform="translate({bar["x"]},0)">\n'
            f"        <title>{title}</title>\n"
            f'        <rect x="0" y="0" width="{width}" height="{height}" class="hover-target"/>\n'
            f"        {rects}\n"
            f"        {tick}\n"
            "      </g>"
        )
    return mark_safe("\n      ".join(out))  # noqa: S308  # numbers, and statuses escaped


@register.simple_tag(takes_context=True)
def query_with(context, **changes) -> str:
    """The current query string with some parameters replaced (pagination, tabs)."""
    params = context["request"].GET.copy()
    for key, value in changes.items():
        if value in (None, ""):
            params.pop(key, None)
        else:
            params[key] = value
    encoded = params.urlencode()
    return "?" + encoded if encoded else "?"


@register.simple_tag(takes_context=True)
def review_count(context) -> int:
    """How many requests wait for the signed-in user's review (the nav badge); one query."""
    request = context.get("request")
    return 0 if request is None else review_queue_count(request)


@register.simple_tag(takes_context=True)
def open_incident_count(context) -> int:
    """Open incidents the signed-in user can see (the nav badge); one query."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return 0
    return open_incidents(user).count()
