"""Change requests notify people: the reviewers who may approve a request when it waits for them, its
author when it is decided; delivered by email to a real SMTP server."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.utils import timezone

from approvals import notify
from approvals.services import approve_change, reject_change, resubmit_change
from governance.actors import SYSTEM
from governance.models import Role
from governance.services import grant_role
from notifications import delivery
from notifications.models import Notification
from tests.notify_servers import SmtpSink


@pytest.fixture
def smtp(settings):
    sink = SmtpSink().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
    yield sink
    sink.stop()


@pytest.fixture
def people(cast, django_user_model):
    """Everyone has an address; a data-team approver may not review payments' changes."""
    data_approver = django_user_model.objects.create_user("data-approver")
    grant_role(data_approver, Role.APPROVER, tenant=cast.acme, team=cast.data, actor=SYSTEM)
    users = [cast.author, cast.approver, cast.approver2, cast.admin, cast.viewer, cast.globex_approver, data_approver]
    for user in users:
        user.email = f"{user.username}@mail.test"
        user.save()
    return users


def deliver(smtp) -> dict[str, list[str]]:
    """Deliver what is due; each recipient's subjects, sorted (the pool sends in parallel)."""
    smtp.messages.clear()
    delivery.deliver_due(timezone.now())
    got: dict[str, list[str]] = {}
    for message in smtp.messages:
        got.setdefault(message["X-Envelope-To"].split("@")[0], []).append(str(message["Subject"]))
    return {who: sorted(subjects) for who, subjects in got.items()}


def test_a_submitted_request_reaches_exactly_the_people_who_may_approve_it(cast, people, smtp):
    change = cast.propose_job()

    got = deliver(smtp)

    subject = f"[Governor] {change} waits for your review"
    assert got == {"acme-approver": [subject], "acme-approver2": [subject]}
    (message,) = smtp.to("acme-approver@mail.test")
    assert f"/changes/{change.pk}/" in message.get_content()
    assert "acme-author asks for your review" in message.get_content()


def test_the_author_hears_when_the_request_is_approved_and_applied(cast, people, smtp):
    change = cast.propose_job()
    deliver(smtp)

    change = approve_change(change, actor=cast.approver)
    assert deliver(smtp) == {}  # one of two approvals: nothing decided yet
    change = approve_change(change, actor=cast.approver2)

    assert deliver(smtp) == {"acme-author": [f"[Governor] {change} was applied", f"[Governor] {change} was approved"]}


def test_a_rejection_reaches_the_author_and_the_resubmission_the_reviewers_again_but_a_retry_does_not(
    cast, people, smtp
):
    change = cast.propose_job()
    deliver(smtp)
    change = reject_change(change, actor=cast.approver, reason="Runs during the batch window.")

    got = deliver(smtp)
    assert got == {"acme-author": [f"[Governor] {change} was rejected"]}
    assert "Reason: Runs during the batch window." in smtp.to("acme-author@mail.test")[0].get_content()

    change = resubmit_change(change, actor=cast.author, based_on_revision=1, justification="Moved to 03:00.")
    with transaction.atomic():
        notify.waiting_for_review(change)  # a retry of the same step queues nothing more
    subject = f"[Governor] {change} waits for your review"
    assert deliver(smtp) == {"acme-approver": [subject], "acme-approver2": [subject]}
    assert Notification.objects.filter(subject=subject).count() == 4  # two submissions, two reviewers


def test_a_request_that_applies_at_once_tells_nobody_and_a_rolled_back_one_queues_nothing(cast, people, smtp):
    # dev needs no approval: the author applied it themselves.
    cast.propose_job(environment=cast.dev)
    with pytest.raises(RuntimeError), transaction.atomic():
        cast.propose_job(definition=cast.definition(name="payments.ledger.other"))
        raise RuntimeError("the request's transaction rolls back")

    assert not Notification.objects.exists()
    assert deliver(smtp) == {}


def test_finding_the_reviewers_costs_as_many_queries_for_twenty_approvers_as_for_two(cast, django_user_model):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from approvals.policies import reviewers

    change = cast.propose_job(submit=False)
    with CaptureQueriesContext(connection) as few:
        assert {u.username for u in reviewers(change)} == {"acme-approver", "acme-approver2"}
    for i in range(18):
        grant_role(django_user_model.objects.create_user(f"extra-{i}"), Role.APPROVER, tenant=cast.acme, actor=SYSTEM)
    change.refresh_from_db()
    with CaptureQueriesContext(connection) as many:
        assert len(reviewers(change)) == 20
    assert len(many) == len(few)
