"""A run's django-q2 message (ORM broker): django-q2 acknowledges it, and the run claim makes any
second delivery harmless.

django-q2's own worker and monitor loops run here, in this process, on real queues and the
real broker: the pusher's part (dequeue, unpack, attach the message id) is done by hand, as
the pusher does it. What an operator relies on: a recorded run leaves no message behind, a
message delivered again (the monitor died before acknowledging it, or the broker redelivered it
after ``retry``) executes nothing a second time, and a run whose result could not be recorded
keeps its message for django-q2's own failure handling.
"""

from __future__ import annotations

import multiprocessing
import signal

import pytest
from django.db import connection
from django_q.brokers import get_broker
from django_q.models import OrmQ
from django_q.monitor import monitor
from django_q.signing import SignedPackage
from django_q.worker import worker

from jobs.models import Attempt, Run, RunStatus
from jobs.services import enqueue_run


def queued_run(cast, command=("/bin/true",)) -> Run:
    return cast.queued_run(cast.make_job(cast.dev, command=list(command)))


def deliver(run: Run, *, then_monitor: bool = True, message=None) -> tuple[dict, int]:
    """Enqueue the run (or deliver ``message`` once more) and take its message as django-q2's
    pusher does; (task as the monitor receives it from the worker, message id)."""
    if message is None:
        enqueue_run(run.pk)
        ((message_id, payload),) = get_broker().dequeue()
    else:
        message_id, payload = message
    broker = get_broker()
    task = SignedPackage.loads(payload)
    task["ack_id"] = message_id
    tasks, results = multiprocessing.Queue(), multiprocessing.Queue()
    tasks.put(task)
    tasks.put("STOP")
    alarm = signal.getsignal(signal.SIGALRM)
    try:
        worker(tasks, results, multiprocessing.Value("f", -1))
    finally:
        signal.signal(signal.SIGALRM, alarm)  # the worker's task timeout resets it to the default
    done = results.get(timeout=30)
    if not then_monitor:
        return done, message_id
    # And django-q2's monitor, which saves results and acknowledges what is left to it.
    results.put(dict(done))
    results.put("STOP")
    monitor(results, broker)
    return done, message_id


@pytest.mark.parametrize("command, status", [("/bin/true", RunStatus.SUCCEEDED), ("/bin/false", RunStatus.FAILED)])
def test_a_recorded_run_leaves_no_message_behind(tcast, command, status):
    run = queued_run(tcast, command=(command,))
    done, message_id = deliver(run)
    assert done["success"] and done["result"] == status
    assert not OrmQ.objects.filter(pk=message_id).exists(), "django-q2's monitor acknowledged it"
    assert Run.objects.get(pk=run.pk).status == status
    assert list(Attempt.objects.filter(run=run).values_list("status", flat=True)) == [status]


def test_a_message_delivered_again_executes_nothing(tcast):
    """The worker recorded the run, then died before the monitor acknowledged the message: django-q2
    delivers it again (after ``retry``), and the run claim turns the second delivery away."""
    run = queued_run(tcast)
    enqueue_run(run.pk)
    ((message_id, payload),) = get_broker().dequeue()
    first, _ = deliver(run, message=(message_id, payload), then_monitor=False)
    assert first["result"] == RunStatus.SUCCEEDED
    assert OrmQ.objects.filter(pk=message_id).exists(), "not acknowledged: the monitor never saw it"
    again, _ = deliver(run, message=(message_id, payload))
    assert again["result"] == "not-claimed"
    assert not OrmQ.objects.filter(pk=message_id).exists()
    stored = Run.objects.get(pk=run.pk)
    assert (stored.status, stored.attempt) == (RunStatus.SUCCEEDED, 1)
    assert Attempt.objects.filter(run=run).count() == 1


def test_a_message_whose_run_was_not_claimed_is_left_to_django_q2(tcast):
    run = queued_run(tcast)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.CANCELLED)  # cancelled while queued
    done, message_id = deliver(run)
    assert done["result"] == "not-claimed"
    assert not OrmQ.objects.filter(pk=message_id).exists()  # which the monitor did
    assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED


REFUSE = {
    "sqlite": (
        "CREATE TRIGGER refuse_attempts BEFORE INSERT ON jobs_attempt BEGIN SELECT RAISE(ABORT, 'disk says no'); END",
        "DROP TRIGGER refuse_attempts",
    ),
    "postgresql": (
        "CREATE FUNCTION refuse_attempts() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk says no'; END $$ "
        "LANGUAGE plpgsql; CREATE TRIGGER refuse_attempts BEFORE INSERT ON jobs_attempt "
        "FOR EACH ROW EXECUTE FUNCTION refuse_attempts()",
        "DROP TRIGGER refuse_attempts ON jobs_attempt; DROP FUNCTION refuse_attempts()",
    ),
}


def test_when_recording_fails_the_message_stays_with_the_unrecorded_run(tcast):
    """The database refuses the attempt row: neither the result nor the acknowledgement is written."""
    run = queued_run(tcast)
    create, drop = REFUSE[connection.vendor]
    with connection.cursor() as cursor:
        cursor.execute(create)
    try:
        done, message_id = deliver(run, then_monitor=False)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(drop)
    assert not done["success"] and "disk says no" in done["result"]
    assert OrmQ.objects.filter(pk=message_id).exists()
    stored = Run.objects.get(pk=run.pk)
    assert stored.status == RunStatus.RUNNING and not Attempt.objects.filter(run=run).exists()
