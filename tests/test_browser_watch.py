"""Watching jobs in a real Chromium (issue 17): pages follow runs by themselves, with the real
scheduler and worker where a run must really happen. A marker set on ``window`` when a page is
opened proves no reload happened: a reload would clear it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Run, RunStatus
from jobs.services import trigger_run
from tests.test_browser_review_flow import ARTIFACTS, browser, signed_in  # noqa: F401 (browser is a fixture)
from tests.test_end_to_end import services  # noqa: F401 (a real scheduler and worker)

pytestmark = pytest.mark.browser


def mark(page) -> None:
    page.evaluate("window.__sameDocument = true")


def not_reloaded(page) -> bool:
    return page.evaluate("window.__sameDocument === true")


def test_readme_tour_the_first_run_appears_by_itself_on_the_job_and_run_pages(
    browser,  # noqa: F811
    live_server,
    tcast,
    services,  # noqa: F811
):
    cast = tcast
    ARTIFACTS.mkdir(exist_ok=True)
    # The README's tour: a prod job on `* * * * *` (with the rationale it needs), approved by two.
    job = cast.make_job(
        cast.prod,
        name="payments.ledger.every-minute",
        cron="* * * * *",
        rationale="The tour: runs every minute to show the first run.",
        command=["/bin/echo", "books balanced"],
    )
    page = signed_in(browser, live_server, cast.operator.username)
    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    assert "appears here by itself" in page.inner_text("[data-testid=recent-runs]")
    mark(page)

    # The scheduler creates the run at the next minute, the worker runs it: the page shows both by itself.
    page.wait_for_selector("#job-live .strip .cell", timeout=90_000)
    page.wait_for_selector("#job-live .strip .cell.st-succeeded", timeout=60_000)
    assert not_reloaded(page)
    first = Run.objects.filter(job=job).order_by("id").first()
    assert first.status == RunStatus.SUCCEEDED and first.trigger == "schedule"
    assert page.locator(f'#job-live a[href="/runs/{first.pk}/"]').count() >= 1
    # Keyboard focus on a strip cell shows the run's start, duration and exit, as hover does.
    page.focus("#job-live .strip .cell.st-succeeded")
    tip = page.evaluate("getComputedStyle(document.activeElement, '::after').content")
    assert f"Run #{first.pk}: Succeeded" in tip and "started " in tip and "took " in tip and "exit 0" in tip
    page.screenshot(path=str(ARTIFACTS / "watch-job-page.png"), full_page=True)

    # Triggered by hand: the run page shows it queued, then succeeded, without a reload.
    page.fill("#id_trigger_reason", "show the tour, INC-1")
    page.click("[data-testid=trigger]")
    page.wait_for_url(f"{live_server.url}/runs/*/")
    mark(page)
    assert page.inner_text("[data-testid=trigger-reason]") == "show the tour, INC-1"
    page.locator("[data-testid=run-status]", has_text="Succeeded").wait_for(timeout=60_000)
    assert "books balanced" in page.inner_text("[data-testid=run-output]")
    assert not_reloaded(page)
    # Finished: the page stops asking, and offers the rerun the finished run allows.
    assert page.get_attribute("#run-live", "hx-get") is None
    assert page.locator("#run-actions >> text=Rerun or settle this run…").count() == 1
    page.screenshot(path=str(ARTIFACTS / "watch-run-page.png"), full_page=True)


def test_run_page_tails_the_output_of_a_running_job(
    browser,  # noqa: F811
    live_server,
    tcast,
    services,  # noqa: F811
):
    cast = tcast
    ARTIFACTS.mkdir(exist_ok=True)
    job = cast.make_job(
        cast.dev,
        name="payments.ledger.slow-export",
        command=["/bin/sh", "-c", "echo first-line; sleep 5; echo second-line; sleep 3"],
    )
    run = trigger_run(job, actor=cast.operator, reason="export for the auditors")
    page = signed_in(browser, live_server, cast.viewer.username)
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    mark(page)

    page.wait_for_selector("#run-output-text", timeout=30_000)
    # (wait_for_function would evaluate a string, which the CSP refuses: locators instead.)
    page.locator("#run-output-text", has_text="first-line").wait_for(timeout=30_000)
    # Tailing: the first line is there while the run still lives and before the second is written.
    assert page.inner_text("[data-testid=run-status]") == "Running"
    assert "second-line" not in page.inner_text("#run-output-text")
    assert "live: following the output" in page.inner_text("[data-testid=run-output]")
    page.screenshot(path=str(ARTIFACTS / "watch-run-tail.png"), full_page=True)
    page.locator("#run-output-text", has_text="second-line").wait_for(timeout=30_000)
    page.locator("[data-testid=run-status]", has_text="Succeeded").wait_for(timeout=30_000)
    assert not_reloaded(page)


def test_now_panel_shows_a_queued_and_a_running_run_and_follows_them(
    browser,  # noqa: F811
    live_server,
    tcast,
):
    cast = tcast
    ARTIFACTS.mkdir(exist_ok=True)
    job = cast.make_job(cast.dev)
    other = cast.make_job(cast.dev, name="payments.ledger.archive")
    now = timezone.now()
    running = Run.objects.create(
        job=other,
        tenant=cast.acme,
        scheduled_for=now - timedelta(seconds=40),
        status=RunStatus.RUNNING,
        queued_at=now - timedelta(seconds=40),
        started_at=now - timedelta(seconds=39),
        worker="worker-1",
        job_version=other.version,
        definition=other.definition(),
    )
    queued = cast.queued_run(job)
    page = signed_in(browser, live_server, cast.viewer.username)
    mark(page)
    panel = page.locator("[data-testid=now-panel]")
    assert panel.locator(f'[data-run="{running.pk}"][data-status="running"]').count() == 1
    assert panel.locator(f'[data-run="{queued.pk}"][data-status="queued"]').count() == 1
    assert "1 running" in panel.inner_text() and "1 queued" in panel.inner_text()
    page.screenshot(path=str(ARTIFACTS / "watch-dashboard.png"), full_page=True)

    # The worker (played here by the database) finishes one and starts the other: the panel follows.
    Run.objects.filter(pk=running.pk).update(status=RunStatus.SUCCEEDED, finished_at=timezone.now(), exit_code=0)
    Run.objects.filter(pk=queued.pk).update(status=RunStatus.RUNNING, started_at=timezone.now())
    page.wait_for_selector(f'[data-testid=now-panel] [data-run="{queued.pk}"][data-status="running"]', timeout=15_000)
    assert panel.locator(f'[data-run="{running.pk}"]').count() == 0
    assert not_reloaded(page)

    # Nothing live any more: the panel stops asking every 2 s (it wakes once when the next slot is due).
    Run.objects.filter(pk=queued.pk).update(status=RunStatus.SUCCEEDED, finished_at=timezone.now(), exit_code=0)
    page.wait_for_selector("[data-testid=now-panel] >> text=Nothing is running, queued or deferred", timeout=15_000)
    assert page.get_attribute("#now-panel", "hx-trigger") != "load delay:2s"

    page.goto(f"{live_server.url}/now/")
    assert page.locator("[data-testid=now-timeline] svg[role=group] title").count() >= 1
    page.screenshot(path=str(ARTIFACTS / "watch-now.png"), full_page=True)
