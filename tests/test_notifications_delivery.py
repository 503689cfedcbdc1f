"""Delivery from the outbox to real servers on free ports: an SMTP server (aiosmtpd), a webhook receiver
that verifies the HMAC signature, apprise's json:// plugin. Every pass is driven with an explicit ``now``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction

from jobs.models import EnvironmentExecutionPolicy
from notifications import delivery
from notifications.channels import create_channel, set_channel_enabled
from notifications.models import DeliveryAttempt, Notification, NotificationState
from notifications.outbox import enqueue
from tests.notify_servers import Receiver, SmtpSink
from tests.vault import put_secret

SECRET = "whsec-0123456789abcdef-test"
REF = "vault:secret/governor/acme/prod/hooks#signing"
# Later than any row the test queues (enqueue stamps rows due at the real clock), so they are all due.
T0 = datetime(2036, 1, 7, 6, 0, tzinfo=UTC)


@pytest.fixture
def smtp(settings):
    sink = SmtpSink().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
    yield sink
    sink.stop()


@pytest.fixture
def receiver():
    server = Receiver(SECRET).start()
    yield server
    server.stop()


@pytest.fixture
def channels(cast, vault, receiver, smtp, settings):
    """acme's prod allows calling 127.0.0.1 (named literally, private allowed): a signed webhook, an
    email channel and a chat channel (apprise json://) there; the signing secret lives in OpenBao."""
    settings.GOVERNOR_NOTIFY_TIMEOUT_SECONDS = 2
    EnvironmentExecutionPolicy.objects.create(
        environment=cast.prod, http_allowed_hosts=["127.0.0.1"], allow_private_addresses=True
    )
    put_secret(vault, "governor/acme/prod/hooks", {"signing": SECRET})
    cast.approver.email = "approver@acme.test"
    cast.approver.save()

    def make(name, kind, target, **extra):
        return create_channel(actor=cast.admin, tenant=cast.acme, name=name, kind=kind, target=target, **extra)

    return {
        "hook": make("ops-hook", "webhook", f"{receiver.url}/hook", secret=REF),
        "mail": make("ops-mail", "email", "ops@acme.test"),
        "chat": make("ops-chat", "apprise", f"json://127.0.0.1:{receiver.port}/chat"),
    }


def notify(cast, key, *, channels=(), users=()):
    with transaction.atomic():
        return enqueue(
            tenant_id=cast.acme.pk,
            subject=f"Job failed ({key})",
            body="payments.ledger.reconcile failed in prod.",
            dedupe_key=key,
            users=users,
            channels=channels,
            payload={"job": "payments.ledger.reconcile", "status": "failed"},
            source="test",
            due_at=T0,  # the fixed clock of these tests, whatever the wall clock says
        )


def states() -> dict[str, str]:
    return dict(Notification.objects.values_list("channel__name", "state"))


def test_email_webhook_and_chat_each_arrive_once_signed_and_keyed(cast, channels, receiver, smtp):
    rows = notify(cast, "run:1", channels=channels.values(), users=[cast.approver, cast.viewer])
    assert len(rows) == 4  # the viewer has no email address: skipped

    counts = delivery.deliver_due(T0)

    assert counts["delivered"] == 4
    hook_row = Notification.objects.get(channel=channels["hook"])
    # The webhook: signature verified by the receiver, idempotency key in the header and the body.
    assert receiver.refused == []
    assert receiver.by_key == {str(hook_row.key): 1}
    assert receiver.accepted[0]["body"]["event"] == {"job": "payments.ledger.reconcile", "status": "failed"}
    assert receiver.accepted[0]["body"]["idempotency_key"] == str(hook_row.key)
    # Email to the person and to the email channel, each with its key as Message-ID.
    for address, row in [
        ("approver@acme.test", Notification.objects.get(user=cast.approver)),
        ("ops@acme.test", Notification.objects.get(channel=channels["mail"])),
    ]:
        (message,) = smtp.to(address)
        assert message["Subject"] == "Job failed (run:1)"
        assert message["Message-ID"].strip() == f"<notification.{row.key}@governor.invalid>"
        assert "payments.ledger.reconcile failed" in message.get_content()
    # The chat service got title and body.
    assert [(c["title"], c["message"].strip()) for c in receiver.chat] == [
        ("Job failed (run:1)", "payments.ledger.reconcile failed in prod.")
    ]
    assert set(DeliveryAttempt.objects.values_list("ok", flat=True)) == {True}
    assert Notification.objects.filter(state="delivered", delivered_at=T0).count() == 4
    # Nothing is sent twice: a later pass finds nothing due.
    assert sum(delivery.deliver_due(T0 + timedelta(hours=1)).values()) == 0
    assert len(smtp.messages) == 2 and len(receiver.accepted) == 1 and len(receiver.chat) == 1


def test_a_receiver_that_is_down_backs_off_the_others_deliver_and_on_its_return_everything_arrives_once(
    cast, channels, receiver, smtp
):
    receiver.stop()
    notify(cast, "run:2", channels=[channels["hook"], channels["mail"]])
    notify(cast, "run:3", channels=[channels["hook"]])

    delivery.deliver_due(T0)

    assert states() == {"ops-hook": "pending", "ops-mail": "delivered"}
    assert len(smtp.messages) == 1
    for row in Notification.objects.filter(channel=channels["hook"]):
        assert row.attempts == 1
        assert "ConnectError" in row.last_error
        # First retry after the base backoff (30 s), half of it jitter.
        assert T0 + timedelta(seconds=15) <= row.next_attempt_at <= T0 + timedelta(seconds=30)
    # Not due yet: nothing is tried again.
    assert sum(delivery.deliver_due(T0 + timedelta(seconds=14)).values()) == 0
    later = T0 + timedelta(seconds=31)
    delivery.deliver_due(later)
    for row in Notification.objects.filter(channel=channels["hook"]):
        assert row.attempts == 2
        # The ceiling doubles: 60 s, of which 30 s jitter.
        assert later + timedelta(seconds=30) <= row.next_attempt_at <= later + timedelta(seconds=60)

    receiver.start()
    delivery.deliver_due(T0 + timedelta(minutes=5))
    delivery.deliver_due(T0 + timedelta(hours=2))

    keys = {str(k) for k in Notification.objects.filter(channel=channels["hook"]).values_list("key", flat=True)}
    assert receiver.by_key == dict.fromkeys(keys, 1)
    assert len(smtp.messages) == 1
    attempts = DeliveryAttempt.objects.filter(notification__channel=channels["hook"]).order_by("at")
    assert [(a.at, a.ok) for a in attempts if a.notification.dedupe_key.startswith("run:3")] == [
        (T0, False),
        (later, False),
        (T0 + timedelta(minutes=5), True),
    ]
    assert all(a.duration_ms is not None for a in attempts)
    assert [a.status_code for a in attempts if a.ok] == [200, 200]


def test_a_slow_receiver_times_out_without_holding_the_other_channels(cast, channels, receiver, smtp, settings):
    settings.GOVERNOR_NOTIFY_TIMEOUT_SECONDS = 1
    receiver.delay = 3
    notify(cast, "run:4", channels=[channels["hook"], channels["mail"]])

    delivery.deliver_due(T0)

    assert states() == {"ops-hook": "pending", "ops-mail": "delivered"}
    hook_attempt = DeliveryAttempt.objects.get(notification__channel=channels["hook"])
    assert not hook_attempt.ok and ("Timeout" in hook_attempt.error or "No answer" in hook_attempt.error)
    mail_attempt = DeliveryAttempt.objects.get(notification__channel=channels["mail"])
    assert mail_attempt.duration_ms < 1000


def test_it_gives_up_after_the_last_attempt_and_metrics_count_the_failure(cast, channels, receiver, client, settings):
    settings.GOVERNOR_NOTIFY_MAX_ATTEMPTS = 2
    receiver.status = 503
    notify(cast, "run:5", channels=[channels["hook"]])

    delivery.deliver_due(T0)
    delivery.deliver_due(T0 + timedelta(minutes=1))

    row = Notification.objects.get()
    assert (row.state, row.attempts, row.failed_at) == ("failed", 2, T0 + timedelta(minutes=1))
    assert row.last_error == "HTTP 503 from the receiver."
    assert [a.status_code for a in row.delivery_attempts.order_by("at")] == [503, 503]
    # Failed is final: the receiver comes back, nothing is sent again.
    receiver.status = 200
    assert sum(delivery.deliver_due(T0 + timedelta(days=1)).values()) == 0
    text = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    assert 'governor_notification_failures{kind="webhook",tenant="acme"} 1.0' in text
    assert 'governor_notification_delivery_errors{tenant="acme"} 2.0' in text


def test_a_crash_between_sending_and_recording_sends_once_more_with_the_same_key(cast, channels, receiver):
    (row,) = notify(cast, "run:6", channels=[channels["hook"]])
    # A monitor claims and sends, then dies before it records anything.
    token, claimed = delivery.claim_due(T0, 10)
    send = delivery.prepare(claimed[0], T0, delivery.PassCache())
    assert send().ok  # type: ignore[operator]
    # Another monitor finds nothing to do while the claim holds...
    assert sum(delivery.deliver_due(T0 + timedelta(seconds=10)).values()) == 0
    # ...and sends it again once the claim has expired: the receiver sees the same key twice.
    expired = T0 + timedelta(seconds=delivery.claim_seconds(10) + 1)
    assert delivery.deliver_due(expired)["delivered"] == 1
    assert [item["key"] for item in receiver.accepted] == [str(row.key)] * 2
    assert sum(delivery.deliver_due(expired + timedelta(days=1)).values()) == 0
    # The dead monitor's late record cannot undo the newer state.
    delivery.record(claimed[0], token, delivery.Outcome(False, "late"), T0)
    assert Notification.objects.get().state == "delivered"


def test_two_monitors_never_claim_the_same_row(cast, channels):
    notify(cast, "run:7", channels=[channels["mail"], channels["hook"]])
    _, first = delivery.claim_due(T0, 10)
    _, second = delivery.claim_due(T0, 10)
    assert len(first) == 2 and second == []


def test_the_http_policy_is_checked_again_at_delivery(cast, channels, receiver):
    notify(cast, "run:8", channels=[channels["hook"], channels["chat"]])
    EnvironmentExecutionPolicy.objects.filter(environment=cast.prod).update(allow_private_addresses=False)

    delivery.deliver_due(T0)

    assert receiver.accepted == [] and receiver.chat == []
    for row in Notification.objects.all():
        assert row.state == "pending"
        assert row.last_error.startswith("Refused by the tenant's HTTP policy: Host '127.0.0.1' is a loopback address")


def test_a_disabled_channel_fails_its_waiting_messages_without_sending(cast, channels, smtp):
    notify(cast, "run:9", channels=[channels["mail"]])
    disabled = set_channel_enabled(channels["mail"], actor=cast.admin, enabled=False)
    assert notify(cast, "run:10", channels=[disabled]) == []  # nothing new is queued for it

    delivery.deliver_due(T0)

    row = Notification.objects.get()
    assert (row.state, row.last_error) == ("failed", "Channel ops-mail is disabled.")
    assert smtp.messages == []


def test_a_missing_signing_secret_is_an_attempt_that_fails_and_is_retried(cast, channels, receiver, vault):
    vault.root_client().secrets.kv.v2.delete_metadata_and_all_versions(
        path="governor/acme/prod/hooks", mount_point="secret"
    )
    notify(cast, "run:11", channels=[channels["hook"]])

    delivery.deliver_due(T0)

    row = Notification.objects.get()
    assert row.state == NotificationState.PENDING
    assert row.last_error.startswith("Signing secret: Vault has no secret")
    assert receiver.accepted == []


def test_the_monitor_loop_runs_the_delivery_step(cast, channels, smtp):
    from monitoring import loop

    # run_once itself closes the connection between steps, which a test's transaction cannot survive.
    assert ("notifications", delivery.deliver_step) in loop.STEPS
    notify(cast, "run:12", channels=[channels["mail"]])
    delivery.deliver_step(T0)
    assert Notification.objects.get().state == "delivered" and len(smtp.messages) == 1


@pytest.mark.django_db(transaction=True)
def test_monitors_in_parallel_share_out_the_rows_without_overlap(tcast, settings):
    """Four claimers at once on separate connections (FOR UPDATE SKIP LOCKED on PostgreSQL, the single
    writer on SQLite): every row is claimed exactly once."""
    import threading

    from django.db import connection

    for i in range(40):
        Notification.objects.create(
            tenant=tcast.acme, subject=f"n{i}", body="b", dedupe_key=f"p:{i}", next_attempt_at=T0
        )
    claimed: list[list[int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def claimer():
        try:
            start.wait()
            for _ in range(5):
                _, rows = delivery.claim_due(T0, 4)
                claimed.append([row.pk for row in rows])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    every = [pk for batch in claimed for pk in batch]
    assert len(every) == len(set(every)) == 40
    assert set(Notification.objects.values_list("attempts", flat=True)) == {1}


def test_the_verification_shown_in_the_docs_accepts_governors_signature_and_refuses_forgeries():
    import time
    from pathlib import Path

    from notifications import signing

    docs = Path(__file__).resolve().parent.parent / "docs" / "notifications.md"
    namespace: dict = {}
    exec(docs.read_text().split("```python\n")[1].split("```")[0], namespace)  # noqa: S102 - our own docs
    verify = namespace["verify"]
    body, now = b'{"subject":"Job failed"}', int(time.time())
    headers = {"X-Governor-Timestamp": str(now), "X-Governor-Signature": signing.sign(SECRET, now, body)}

    assert verify(SECRET, headers, body)
    assert not verify(SECRET, headers, body.replace(b"failed", b"fixed"))
    assert not verify("another secret", headers, body)
    old = now - 3600
    assert not verify(SECRET, {**headers, "X-Governor-Timestamp": str(old)}, body)
    replayed = {"X-Governor-Timestamp": str(old), "X-Governor-Signature": signing.sign(SECRET, old, body)}
    assert not verify(SECRET, replayed, body)
