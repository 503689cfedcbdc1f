"""The notifications page: a tenant's channels (targets without credentials for those who do not
manage them), its failed notifications and latest attempts; nothing of another tenant; queries do not
grow with rows."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notifications.models import Channel, DeliveryAttempt, Notification

SLACK = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#ops"


def plant(cast, tenant, n: int, prefix: str) -> Channel:
    now = timezone.now()
    channel = Channel.objects.create(tenant=tenant, name=f"{prefix}-chat", kind="apprise", target=SLACK)
    for i in range(n):
        row = Notification.objects.create(
            tenant=tenant,
            channel=channel,
            subject=f"{prefix} failure {i}",
            body="x",
            dedupe_key=f"{prefix}:{i}",
            state="failed",
            attempts=3,
            next_attempt_at=now,
            failed_at=now,
            last_error=f"{prefix} error {i}",
        )
        DeliveryAttempt.objects.create(notification=row, at=now, ok=False, error=f"{prefix} error {i}")
    return channel


def test_it_shows_the_tenants_channels_failures_and_attempts_and_hides_chat_tokens(cast, client):
    plant(cast, cast.acme, 2, "acme")
    plant(cast, cast.globex, 1, "globex")

    client.force_login(cast.viewer)
    html = client.get("/notifications/").content.decode()

    assert "acme-chat" in html and "acme failure 1" in html and "acme error 0" in html
    assert "globex" not in html
    assert "TIiajkdnlazkcOXrIdevi7FQ" not in html and "slack://T...2/" in html
    client.force_login(cast.admin)
    assert "TIiajkdnlazkcOXrIdevi7FQ" in client.get("/notifications/").content.decode()


def test_its_query_count_does_not_grow_with_rows(cast, client):
    client.force_login(cast.viewer)
    plant(cast, cast.acme, 2, "few")
    with CaptureQueriesContext(connection) as few:
        client.get("/notifications/")
    plant(cast, cast.acme, 30, "many")
    with CaptureQueriesContext(connection) as many:
        response = client.get("/notifications/")
    assert len(response.context["failed"]) == 32
    assert len(many) == len(few)
