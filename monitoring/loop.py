"""The monitor process (``manage.py run_monitor``): rule evaluation, escalation and delivery, apart
from the scheduler and the workers so that a slow channel or a slow rule never delays a run.

Each part registers a step; a step that raises is logged and the loop goes on.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

log = logging.getLogger("governor.monitor")

Step = Callable[[dt.datetime], object]
STEPS: list[tuple[str, Step]] = []


def add_step(name: str, step: Step) -> None:
    if all(existing != name for existing, _ in STEPS):
        STEPS.append((name, step))


def run_once(now: dt.datetime) -> None:
    from django.db import close_old_connections

    for name, step in STEPS:
        close_old_connections()
        try:
            step(now)
        except Exception:
            log.exception("monitor step %s failed", name)
