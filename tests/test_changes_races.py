"""Concurrent reviews of one request end in exactly one terminal state (real threads, real DB)."""

import threading

from django.db import connection

from approvals.models import ChangeRequest, ChangeStatus, Review
from approvals.services import ChangeError, approve_change, reject_change
from jobs.models import Job


def _race(*calls):
    """Run the calls at the same moment in threads; return (results, errors)."""
    barrier = threading.Barrier(len(calls))
    results, errors = [], []

    def run(call):
        try:
            barrier.wait()
            results.append(call())
        except ChangeError as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results, errors


def test_concurrent_approve_and_reject_end_in_exactly_one_terminal_state(tcast):
    for _ in range(3):
        change = tcast.propose_job(environment=tcast.staging, justification="race")
        results, errors = _race(
            lambda c=change: approve_change(c, actor=tcast.approver),
            lambda c=change: reject_change(c, actor=tcast.approver2, reason="race"),
        )
        assert len(results) == 1 and len(errors) == 1
        assert errors[0].code.startswith("not_submitted:")
        change.refresh_from_db()
        assert change.status == results[0].status
        assert change.status in (ChangeStatus.APPLIED, ChangeStatus.REJECTED)
        assert Review.objects.filter(change_request=change).count() == 1
        assert Job.objects.filter(change_request_id=change.pk).exists() == (change.status == "applied")
        if change.status == ChangeStatus.APPLIED:
            Job.objects.filter(change_request_id=change.pk).update(status="deleted")


def test_two_final_approvals_at_once_apply_the_change_once(tcast):
    change = tcast.propose_job(justification="race")
    results, errors = _race(
        lambda: approve_change(change, actor=tcast.approver),
        lambda: approve_change(change, actor=tcast.approver2),
    )
    assert not errors and len(results) == 2
    assert ChangeRequest.objects.get(pk=change.pk).status == ChangeStatus.APPLIED
    job = Job.objects.get()
    assert job.version == 1
