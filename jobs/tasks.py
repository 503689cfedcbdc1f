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
