"""Previews where a person decides: DST notes on the job page, maintenance-window warnings on a change."""

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from conftest import PASSWORD


def login(client, user):
    assert client.login(username=user.get_username(), password=PASSWORD)
    return client


def test_the_job_page_marks_a_run_that_dst_shifts(client, cast):
    # 02:30 on 28 March 2027 does not exist in Berlin (clocks jump 02:00 -> 03:00).
    job = cast.make_job(cast.dev, cron="30 2 28 3 *", timezone="Europe/Berlin", rationale="Yearly, DST on purpose.")
    html = login(client, cast.viewer).get(reverse("job_detail", args=[job.pk])).content.decode()
    assert "02:30 local does not exist" in html


def test_reviewers_see_when_a_proposed_schedule_runs_into_a_maintenance_window(client, cast):
    now = timezone.now()
    cast.make_window(
        environment=cast.prod,
        name="storage migration",
        starts_at=now - timedelta(hours=1),
        ends_at=now + timedelta(days=2),
    )
    change = cast.propose_job(definition=cast.definition(cron="0 * * * *", timezone="UTC"), justification="hourly")
    html = login(client, cast.approver).get(reverse("change_detail", args=[change.pk])).content.decode()
    assert "falls in maintenance window &#x27;storage migration&#x27;" in html or "storage migration" in html
    assert "will be deferred to" in html
