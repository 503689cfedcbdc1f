"""django-q2 task entry points: they receive primary keys only.

django-q2 delivers, acknowledges and redelivers the messages itself; a message delivered twice
finds its run already claimed (jobs.executor) and does nothing.
"""

from __future__ import annotations

from django_q.conf import Conf

from . import executor
from .queue import TASK


def execute_run(run_id: int) -> str:
    return executor.execute_run(run_id)


# --- queue inspection for the reconciler (jobs.scheduler_reconcile.reconcile_queue) ---

# Past this many messages waiting in a Redis list, the reconciler does not read the list: it
# leaves every run alone for that pass (a backlog that long is a worker problem, not a lost message).
REDIS_SCAN_LIMIT = 200_000


def _run_id(payload) -> int | None:
    """The run of one of our messages; None for another producer's, or one signed with another key.

    Read with django-q2's own reader of a message (``OrmQ.task``, what its admin shows), which
    answers a dict without "func" for a payload it cannot verify; a Redis list holds the same
    signed packages."""
    from django_q.models import OrmQ

    task = OrmQ(payload=payload).task
    if task.get("func") == TASK and len(task.get("args") or ()) == 1:
        return task["args"][0]
    return None


def live_queue_messages(bound: float, now) -> set[int] | None:
    """The runs that have a live message in the broker, for the queue reconciler.

    - ORM broker: a message row of this cluster that is not locked (waiting for a worker), or was
      locked by a cluster less than ``bound`` seconds ago (django-q2 locks a row it takes until
      ``now + Q_CLUSTER['retry']``, so it was taken at ``lock - retry``). A row locked longer ago
      belongs to a task a cluster took and has not finished: if that cluster is dead, django-q2
      would hand it out again only after ``retry`` (a day by default).
    - Redis: a message still in the list. A popped message (prefetched by a cluster, or being
      executed) cannot be seen: for those, the bound alone decides.
    - Any other broker: nothing is visible (None): the bound alone decides.
    Only reads; never writes into django-q2's tables or lists.
    """
    from django_q.brokers import get_broker
    from django_q.brokers.orm import ORM
    from django_q.models import OrmQ

    broker = get_broker()
    if isinstance(broker, ORM):
        from datetime import timedelta

        from django.db.models import Q
        from django.utils import timezone

        taken_after = now - timedelta(seconds=bound) + timedelta(seconds=Conf.RETRY)
        # Waiting: locked "until" its enqueue instant, which may be a moment after ``now``.
        waiting = max(now, timezone.now())
        rows = (
            OrmQ.objects.using(Conf.ORM)
            .filter(key=broker.list_key or Conf.CLUSTER_NAME)
            .filter(Q(lock__lte=waiting) | Q(lock__gt=taken_after))
            .values_list("payload", flat=True)
        )
        return {run_id for run_id in map(_run_id, rows.iterator(chunk_size=2000)) if run_id is not None}
    if Conf.REDIS and getattr(broker, "connection", None) is not None and not Conf.BROKER_CLASS:
        connection = broker.connection
        if connection.llen(broker.list_key) > REDIS_SCAN_LIMIT:
            return None
        live: set[int] = set()
        for start in range(0, REDIS_SCAN_LIMIT, 2000):
            chunk = connection.lrange(broker.list_key, start, start + 1999)
            live.update(run_id for run_id in map(_run_id, chunk) if run_id is not None)
            if len(chunk) < 2000:
                break
        return live
    return set()
