"""Watching jobs (issue 17) through the test client: history strips, the runs list and its
filters, the now board, the 24-hour timeline, live fragments and the operator's context."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from conftest import PASSWORD
from governance.models import AuditEvent
from jobs.executor import LIVE_OUTPUT_SECONDS, LeaseKeeper, OutputBuffer
from jobs.models import Run, RunStatus, TriggerKind
from jobs.services import set_paused, trigger_run
from jobs.watch import GANTT_LABEL, GANTT_WIDTH, last_runs, now_board, poll_delay, timeline
from tests.api_support import client_for


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)
    return client


def plant(job, *, status=RunStatus.SUCCEEDED, ago=timedelta(minutes=5), took=3, exit_code=None, **fields):
    """A run of ``job`` scheduled ``ago`` before now that started then and took ``took`` seconds."""
    when = timezone.now() - ago
    finished = status not in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.DEFERRED, RunStatus.SCHEDULED)
    values = {
        "scheduled_for": when,
        "queued_at": when,
        "started_at": when if status not in (RunStatus.QUEUED, RunStatus.DEFERRED, RunStatus.SKIPPED) else None,
        "finished_at": when + timedelta(seconds=took) if finished else None,
        "exit_code": exit_code if exit_code is not None else (0 if status == RunStatus.SUCCEEDED else None),
        **fields,
    }
    if values["started_at"] is None:
        values["finished_at"] = when if finished else None
    return Run.objects.create(
        job=job, tenant_id=job.tenant_id, status=status, job_version=job.version, definition=job.definition(), **values
    )


def strip_cells(html: str, job_pk: int | None = None) -> list[tuple[str, str, str]]:
    """(run id, status, label) of each cell of the first strip in ``html``."""
    strip = re.search(r'<ol class="strip".*?</ol>', html, re.S)
    assert strip, "no strip on the page"
    return re.findall(r'href="/runs/(\d+)/" data-tip="[^"]*" aria-label="([^"]*)".*?>([^<]*)</span>', strip.group(0))


# --- strips ---------------------------------------------------------------------------------


def test_jobs_list_shows_each_jobs_last_20_runs_oldest_first_readable_without_colour(client, cast):
    job = cast.make_job(cast.dev)
    runs = [plant(job, ago=timedelta(minutes=100 - i)) for i in range(24)]
    failed = plant(job, status=RunStatus.FAILED, ago=timedelta(minutes=2), took=7, exit_code=3)
    quiet = cast.make_job(cast.dev, name="payments.ledger.quiet")
    login(client, cast.viewer)

    html = client.get(reverse("job_list")).content.decode()

    rows = {m.group(1): m.group(0) for m in re.finditer(r'href="/jobs/(\d+)/".*?</tr>', html, re.S)}
    cells = strip_cells(rows[str(job.pk)])
    assert [int(pk) for pk, _, _ in cells] == [r.pk for r in runs[5:]] + [failed.pk]
    pk, label, letter = cells[-1]
    assert letter == "F"
    assert f"Run #{failed.pk}: Failed" in label and "took 7.0 s" in label and "exit 3" in label
    assert "started " in label and " UTC" in label
    assert cells[0][2] == "✓"
    assert "no runs yet" in rows[str(quiet.pk)]


def test_strips_of_a_page_take_one_query_and_skip_partition_runs(cast, django_assert_num_queries):
    from jobs.watch import with_strip_cutoff

    busy = cast.make_job(cast.dev)
    new = cast.make_job(cast.dev, name="payments.ledger.new")
    for i in range(30):
        plant(busy, ago=timedelta(minutes=60 - i))
    slot = plant(new, ago=timedelta(minutes=1))
    plant(new, ago=timedelta(minutes=1), partition="eu", parent=slot)
    jobs = list(with_strip_cutoff(type(busy).objects.filter(pk__in=[busy.pk, new.pk])))
    with django_assert_num_queries(1):
        strips = last_runs(jobs)
    assert len(strips[busy.pk]) == 20
    assert strips[busy.pk][-1].scheduled_for > strips[busy.pk][0].scheduled_for
    assert [r.pk for r in strips[new.pk]] == [slot.pk]


# --- runs list ------------------------------------------------------------------------------


def listed(client, **params) -> set[int]:
    response = client.get(reverse("run_list"), params)
    assert response.status_code == 200, response.content
    return {int(pk) for pk in re.findall(r'<tr data-run="(\d+)">', response.content.decode())}


def test_runs_list_filters_as_the_api_does(client, cast):
    dev = cast.make_job(cast.dev)
    prod = cast.make_job(cast.prod, name="payments.ledger.settle")
    data = cast.make_job(cast.dev, team=cast.data)
    plant(dev, ago=timedelta(hours=30))
    plant(dev, status=RunStatus.FAILED, ago=timedelta(hours=2), exit_code=1)
    plant(prod, ago=timedelta(hours=1), trigger=TriggerKind.MANUAL, triggered_by=cast.operator)
    plant(data, status=RunStatus.RUNNING, ago=timedelta(minutes=1))
    plant(cast.make_job(cast.globex_prod), ago=timedelta(minutes=3))
    login(client, cast.viewer)
    api = client_for(cast.viewer)
    since = (timezone.now() - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cases = [
        {},
        {"job": dev.pk},
        {"status": "failed"},
        {"trigger": "manual"},
        {"environment": "prod"},
        {"team": cast.data.pk},
        {"team": "payments", "since": since},
        {"until": since},
        {"status": "succeeded", "environment": "dev"},
    ]
    for params in cases:
        from_api = {row["id"] for row in api.get("/api/v1/runs/", params).json()["results"]}
        assert listed(client, **params) == from_api, params
    assert len(listed(client)) == 4  # globex's run is not acme's viewer's


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("since", "yesterday", "Enter a valid date/time."),
        ("until", "2026-13-45", "Enter a valid date/time."),
        ("status", "exploded", "Select a valid choice. exploded is not one of the available choices."),
        ("trigger", "cron", "Select a valid choice. cron is not one of the available choices."),
        ("job", "twelve", "Enter a number."),
    ],
)
def test_a_filter_value_that_does_not_parse_is_named_beside_its_field(client, cast, field, value, message):
    plant(cast.make_job(cast.dev))
    login(client, cast.viewer)
    api = client_for(cast.viewer)
    events, runs = AuditEvent.objects.count(), Run.objects.count()

    response = client.get(reverse("run_list"), {field: value})

    assert response.status_code == 400
    html = response.content.decode()
    error = re.search(rf'<div class="field-error" id="f-{field}-error">([^<]*)</div>', html)
    assert error and message in error.group(1)
    assert f'id="f-{field}"' in html and 'aria-invalid="true"' in html
    assert "<tr data-run=" not in html
    assert api.get("/api/v1/runs/", {field: value}).status_code == 400
    assert (AuditEvent.objects.count(), Run.objects.count()) == (events, runs)


# --- now ------------------------------------------------------------------------------------


def test_now_lists_running_queued_deferred_with_the_reason_and_late(client, cast):
    job = cast.make_job(cast.dev)
    running = plant(job, status=RunStatus.RUNNING, ago=timedelta(minutes=3), worker="w1")
    queued = plant(job, status=RunStatus.QUEUED, ago=timedelta(seconds=5))
    late = plant(job, status=RunStatus.QUEUED, ago=timedelta(minutes=4))
    deferred = plant(
        job,
        status=RunStatus.DEFERRED,
        ago=timedelta(seconds=10),
        reason="Deferred: maintenance window 'db upgrade' until 03:00Z.",
        deferred_until=timezone.now() + timedelta(hours=1),
    )
    plant(job, status=RunStatus.SUCCEEDED, ago=timedelta(minutes=9))
    overdue = cast.make_job(cast.dev, name="payments.ledger.overdue")
    type(overdue).objects.filter(pk=overdue.pk).update(next_fire_at=timezone.now() - timedelta(minutes=5))
    login(client, cast.viewer)

    html = client.get(reverse("now")).content.decode()

    def section(name):
        return re.search(rf'data-testid="now-{name}".*?</section>', html, re.S).group(0)

    assert re.findall(r'data-run="(\d+)"', section("running")) == [str(running.pk)]
    assert re.findall(r'data-run="(\d+)"', section("queued")) == [str(late.pk), str(queued.pk)]
    assert re.findall(r'data-run="(\d+)"', section("deferred")) == [str(deferred.pk)]
    assert "maintenance window &#x27;db upgrade&#x27;" in section("deferred")
    assert re.findall(r'data-run="(\d+)"', section("late")) == [str(late.pk)]
    assert f'data-job="{overdue.pk}"' in section("late") and "Slot overdue" in section("late")
    assert "1 running, 3 queued" not in html  # deferred is not queued
    assert "1 running, 2 queued, 1 deferred, 2 late" in html


def test_now_and_runs_show_nothing_of_another_tenant(client, cast):
    acme = cast.make_job(cast.dev)
    run = plant(acme, status=RunStatus.RUNNING, ago=timedelta(minutes=1))
    login(client, cast.globex_admin)
    for url in (reverse("now"), reverse("now_panel"), reverse("now_board"), reverse("run_list"), reverse("dashboard")):
        html = client.get(url).content.decode()
        assert acme.name not in html, url
    assert client.get(reverse("job_live", args=[acme.pk])).status_code == 404
    assert client.get(reverse("run_live", args=[run.pk])).status_code == 404
    assert client.get(reverse("run_list"), {"job": acme.pk}).content.decode().count("<tr data-run=") == 0


def test_dashboard_panel_counts_what_runs_now(client, cast):
    job = cast.make_job(cast.dev)
    plant(job, status=RunStatus.RUNNING, ago=timedelta(minutes=1))
    plant(job, status=RunStatus.QUEUED, ago=timedelta(seconds=3))
    login(client, cast.viewer)
    html = client.get(reverse("dashboard")).content.decode()
    panel = re.search(r'<section id="now-panel".*?</section>', html, re.S).group(0)
    assert "<strong>1</strong> running" in panel and "<strong>1</strong> queued" in panel
    assert f'hx-get="{reverse("now_panel")}"' in panel and 'hx-trigger="load delay:2s"' in panel


# --- timeline -------------------------------------------------------------------------------


def test_timeline_draws_each_run_from_its_start_for_its_duration(cast):
    job = cast.make_job(cast.dev)
    now = timezone.now()
    hour = plant(job, ago=timedelta(hours=12), took=3600)
    failed = plant(job, status=RunStatus.FAILED, ago=timedelta(hours=6), took=360, exit_code=2)
    running = plant(job, status=RunStatus.RUNNING, ago=timedelta(hours=1))
    plant(job, ago=timedelta(hours=30))  # before the window

    gantt = timeline(cast.viewer, now=now)

    (row,) = gantt["rows"]
    bars = {bar["run"].pk: bar for bar in row["bars"]}
    assert set(bars) == {hour.pk, failed.pk, running.pk}
    per_second = GANTT_WIDTH / 86400
    assert bars[hour.pk]["x"] == pytest.approx(GANTT_LABEL + 12 * 3600 * per_second, abs=0.2)
    assert bars[hour.pk]["width"] == pytest.approx(3600 * per_second, abs=0.2)
    assert bars[failed.pk]["x"] == pytest.approx(GANTT_LABEL + 18 * 3600 * per_second, abs=0.2)
    assert bars[running.pk]["x"] + bars[running.pk]["width"] == pytest.approx(GANTT_LABEL + GANTT_WIDTH, abs=0.3)
    assert gantt["total"] == 3 and "1 failed" in gantt["summary"]


def test_job_page_timeline_is_an_accessible_svg(client, cast):
    job = cast.make_job(cast.dev)
    failed = plant(job, status=RunStatus.FAILED, ago=timedelta(hours=2), took=5, exit_code=1)
    login(client, cast.viewer)
    html = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    svg = re.search(r'<figure class="gantt">.*?</svg>', html, re.S).group(0)
    assert 'role="group" aria-labelledby="gantt-title gantt-desc"' in svg
    assert f'<title id="gantt-title">Runs of {job.name} in the last 24 hours</title>' in svg
    assert re.search(r'<desc id="gantt-desc">1 run between .*: 1 failed\. .*failed runs are hatched', svg)
    assert f"Run #{failed.pk}: Failed" in svg and "exit 1" in svg
    assert 'class="bar st-failed"' in svg


# --- live fragments -------------------------------------------------------------------------


def test_run_page_polls_while_the_run_lives_and_stops_once_it_finished(client, cast):
    job = cast.make_job(cast.dev)
    run = plant(job, status=RunStatus.RUNNING, ago=timedelta(seconds=20), output="first line\n")
    login(client, cast.operator)

    page = client.get(reverse("run_detail", args=[run.pk])).content.decode()
    assert f'hx-get="{reverse("run_live", args=[run.pk])}" hx-trigger="load delay:2s"' in page
    live = client.get(reverse("run_live", args=[run.pk])).content.decode()
    assert "first line" in live and 'hx-trigger="load delay:2s"' in live
    assert 'id="run-status" class="badge big st-running" hx-swap-oob="true"' in live
    assert 'id="run-actions"' not in live  # the cancel form being typed in stays as it is

    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.SUCCEEDED, finished_at=timezone.now(), exit_code=0, output="first line\nsecond line\n"
    )
    live = client.get(reverse("run_live", args=[run.pk])).content.decode()
    assert "second line" in live and "hx-trigger" not in live.split('id="run-status"')[0]
    assert "Succeeded" in live
    assert '<div id="run-actions" class="run-actions" hx-swap-oob="true">' in live and "Rerun" in live


def test_job_page_polls_for_its_first_run_when_the_slot_comes_due(client, cast):
    job = cast.make_job(cast.dev, cron="* * * * *", rationale="every minute: test")
    login(client, cast.viewer)
    html = client.get(reverse("job_live", args=[job.pk])).content.decode()
    delay = int(re.search(r'hx-trigger="load delay:(\d+)s"', html).group(1))
    assert 1 <= delay <= 61
    assert "appears here by itself" in html
    plant(job, status=RunStatus.QUEUED, ago=timedelta(seconds=1))
    html = client.get(reverse("job_live", args=[job.pk])).content.decode()
    assert 'hx-trigger="load delay:2s"' in html


def test_poll_delay_follows_live_runs_and_the_next_slot():
    now = timezone.now()
    assert poll_delay(True, None, now) == 2
    assert poll_delay(False, None, now) is None
    assert poll_delay(False, now + timedelta(seconds=40), now) == 40
    assert poll_delay(False, now + timedelta(hours=3), now) is None
    assert poll_delay(False, now - timedelta(seconds=1), now) == 2
    assert poll_delay(False, now - timedelta(minutes=10), now) == 15


def test_live_output_is_written_to_the_running_run_without_a_held_back_secret_prefix(cast):
    job = cast.make_job(cast.dev)
    run = plant(job, status=RunStatus.RUNNING, ago=timedelta(seconds=2))
    keeper = LeaseKeeper(run.pk)
    buffer = OutputBuffer(1000, 1000, secrets=["s3cr3t-value"])
    buffer.feed(b"connecting\ntoken=s3cr3t-")

    keeper.publish_output(buffer)
    run.refresh_from_db()
    assert run.output == ""  # not before LIVE_OUTPUT_SECONDS

    keeper.published_at -= LIVE_OUTPUT_SECONDS
    keeper.publish_output(buffer)
    run.refresh_from_db()
    assert run.output.startswith("connecting\n") and "s3cr3t" not in run.output
    buffer.feed(b"value done\nthe last bytes may start a secret\n")
    keeper.published_at -= LIVE_OUTPUT_SECONDS
    keeper.publish_output(buffer)
    run.refresh_from_db()
    assert "token=***" in run.output and "s3cr3t" not in run.output and "done" in run.output
    assert run.output_bytes == buffer.total

    Run.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED, output="final")
    buffer.feed(b"late\n")
    keeper.published_at -= LIVE_OUTPUT_SECONDS
    keeper.publish_output(buffer)
    run.refresh_from_db()
    assert run.output == "final"  # a finished run's recorded output is never overwritten


# --- operator context -----------------------------------------------------------------------


def test_run_page_shows_the_trigger_reason_and_who_beside_the_outcome_and_the_runbook_on_failure(client, cast):
    job = cast.make_job(cast.dev, runbook="Check the **ledger** lock, then rerun.")
    run = trigger_run(job, actor=cast.operator, reason="month-end close, INC-7")
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.FAILED, reason="Exited with code 3.", exit_code=3, finished_at=timezone.now()
    )
    login(client, cast.viewer)

    html = client.get(reverse("run_detail", args=[run.pk])).content.decode()

    assert re.search(r'data-testid="trigger-reason">month-end close, INC-7<', html)
    assert re.search(r"<dt>Who</dt><dd>acme-operator</dd>", html)
    assert re.search(r'<dt>Outcome</dt><dd data-testid="run-outcome">Exited with code 3\.', html)
    runbook = re.search(r'data-testid="failed-runbook">.*?</aside>', html, re.S).group(0)
    assert "<strong>ledger</strong>" in runbook

    detail = client_for(cast.viewer).get(f"/api/v1/runs/{run.pk}/").json()
    assert (detail["trigger_reason"], detail["reason"]) == ("month-end close, INC-7", "Exited with code 3.")

    Run.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED, reason="")
    html = client.get(reverse("run_detail", args=[run.pk])).content.decode()
    assert "failed-runbook" not in html and "month-end close, INC-7" in html


def test_a_scheduled_run_says_its_schedule_came_due(client, cast):
    job = cast.make_job(cast.dev)
    run = plant(job)
    login(client, cast.viewer)
    html = client.get(reverse("run_detail", args=[run.pk])).content.decode()
    assert re.search(r'data-testid="trigger-reason">Its schedule \(\*/5 \* \* \* \*, Europe/Berlin\) came due\.<', html)


def test_a_paused_job_says_who_paused_it_when_and_why(client, cast):
    job = cast.make_job(cast.dev)
    set_paused(job, actor=cast.operator, paused=True, reason="upstream outage INC-42")
    login(client, cast.viewer)
    html = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    notice = re.search(r'data-testid="paused-by">.*?</div>', html, re.S).group(0)
    assert "Paused by <strong>acme-operator</strong> on" in notice
    assert "upstream outage INC-42" in notice and "<time datetime=" in notice


def test_now_board_query_count_is_fixed(cast, django_assert_max_num_queries):
    job = cast.make_job(cast.dev)

    def plant_many(start, count):
        for i in range(start, start + count):
            status = [RunStatus.RUNNING, RunStatus.QUEUED, RunStatus.DEFERRED][i % 3]
            plant(job, status=status, ago=timedelta(seconds=i))

    plant_many(0, 3)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as small:
        now_board(cast.viewer, limit=10)
    plant_many(3, 37)
    with django_assert_max_num_queries(len(small.captured_queries)):
        board = now_board(cast.viewer, limit=10)
    assert len(board["running"]) == 10 and board["counts"]["running"] == 14
