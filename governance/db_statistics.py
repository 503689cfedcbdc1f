"""Planner statistics for the embedded SQLite database (``ANALYZE``), refreshed by the monitor.

PostgreSQL keeps its own statistics (autovacuum's ANALYZE). SQLite keeps none until ``ANALYZE`` is
run, and without them its planner guesses: with 1,000,000 runs it walked the tenant's run index for
``/runs/?job=<id>`` (about 85 ms) instead of reading the job's runs from ``run_job_recent``, and the
runs lists' plan choices (``jobs.run_scope``) were tuned on analysed data. ``refresh`` analyses
each table in a transaction of its own (the write lock is held for one table at a time: 0.6 s for
the 1,000,000 runs, 1.3 s for the whole bench database of 1,000,000 runs and 1,000,000 audit events),
when the monitor starts and then every ``INTERVAL``. ``PRAGMA analysis_limit`` (approximate
statistics in milliseconds) was tried and rejected: at 1,000 rows it estimated 1,001 runs per
tenant for a tenant of a million.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from django.db import connection

log = logging.getLogger("governor.db")

INTERVAL = timedelta(hours=24)
_last: datetime | None = None


def refresh(now: datetime) -> bool:
    """Analyse every table of an SQLite database if this process has not in the last ``INTERVAL``;
    True when it did. Nothing on other databases."""
    global _last
    if connection.vendor != "sqlite" or (_last is not None and now - _last < INTERVAL):
        return False
    started = time.perf_counter()
    tables = connection.introspection.table_names(include_views=False)
    for table in tables:
        with connection.cursor() as cursor:
            # A table name from the database's own catalogue, quoted.
            cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")
    _last = now
    log.info("planner statistics refreshed: %d tables in %.1f s", len(tables), time.perf_counter() - started)
    return True


def forget() -> None:
    """Analyse again at the next ``refresh`` (tests)."""
    global _last
    _last = None
