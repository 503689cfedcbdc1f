"""django-q2 task entry points: they receive primary keys only.

On the ORM broker, a run's queue message is deleted in the transaction that records the
run (``executor.record_result``) instead of by django-q2's monitor in a transaction of its
own afterwards: on SQLite, one write lock less per run for every process to wait on, and the
run's result and its acknowledgement are committed together. django-q2's worker-side
signals carry the message: ``pre_execute`` hands its id to the executor, and
``post_execute_in_worker`` takes it out of the task once that transaction has committed, so
the monitor does not delete it again. Any other outcome (the run was not claimed, the task
failed before recording) leaves the message to the monitor, as before.
"""

from __future__ import annotations

from django.dispatch import receiver
from django_q.conf import Conf
from django_q.signals import post_execute_in_worker, pre_execute

from . import executor, hotpath

TASK = "jobs.tasks.execute_run"


def execute_run(run_id: int) -> str:
    return executor.execute_run(run_id)


def _ours(task: dict) -> bool:
    return task.get("func") in (TASK, execute_run) and len(task.get("args") or ()) == 1


@receiver(pre_execute, dispatch_uid="governor-queue-message-in")
def _hand_over_message(sender, task: dict, **kwargs) -> None:
    # The ORM broker of this database (no custom broker): the message is a row beside the run.
    if task.get("ack_id") and Conf.ORM == hotpath.DB and not Conf.BROKER_CLASS and _ours(task):
        executor.QUEUE_MESSAGE.set(executor.QueueMessage(id=task["ack_id"], run_id=task["args"][0]))
    else:
        executor.QUEUE_MESSAGE.set(None)


@receiver(post_execute_in_worker, dispatch_uid="governor-queue-message-out")
def _take_back_message(sender, task: dict, **kwargs) -> None:
    message = executor.QUEUE_MESSAGE.get()
    executor.QUEUE_MESSAGE.set(None)
    if message is not None and message.deleted and task.get("ack_id") == message.id:
        del task["ack_id"]  # already deleted with the run's result


# --- queue inspection for the reconciler (jobs.scheduler.reconcile_queue) ---

# Past this many messages waiting in a Redis list, the reconciler does not read the list: it
# leaves every run alone for that pass (a backlog that long is a worker problem, not a lost message).
REDIS_SCAN_LIMIT = 200_000


def _run_id(payload) -> int | None:
    from django_q.signing import SignedPackage

    try:
        task = SignedPackage.loads(payload)
    except Exception:  # another producer's message, one signed with another key: not one of ours
        return None
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
