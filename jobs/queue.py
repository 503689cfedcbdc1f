"""Handing runs to the workers (django-q2), through its public API only.

A message carries a run's primary key and nothing else; the worker's claim (queued -> running,
jobs.executor) decides whether it runs, so a message delivered twice, or enqueued again by the
queue reconciler while the first is still on its way, executes the job once. django-q2 stores,
delivers and acknowledges its messages itself.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext

from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)

TASK = "jobs.tasks.execute_run"


def enqueue_run(run_id: int) -> None:
    """Hand a run to django-q2 (called on commit, so the worker always finds the row)."""
    from django_q.tasks import async_task

    async_task("jobs.tasks.execute_run", run_id, task_name=f"run-{run_id}", save=False)


def enqueue_all(run_ids: list[int]) -> None:
    """Hand many runs to django-q2 (a tick's burst, the reconciler's re-enqueues): one
    ``async_task`` each, through one broker. On the ORM broker they are inserted in one
    transaction of its database: one commit for the burst (on SQLite, one write lock instead of
    one per run), and the workers see the whole burst at once."""
    if not run_ids:
        return
    from django_q.brokers import get_broker
    from django_q.tasks import async_task

    options = settings.Q_CLUSTER
    broker = get_broker()
    # In sync mode (tests) async_task runs the task at once, which must not happen inside our transaction.
    batch = options.get("orm") and not options.get("sync") and len(run_ids) > 1
    with transaction.atomic(using=str(options["orm"])) if batch else nullcontext():
        for run_id in run_ids:
            async_task(TASK, run_id, task_name=f"run-{run_id}", save=False, broker=broker)
    log.info("enqueued %s runs", len(run_ids))
