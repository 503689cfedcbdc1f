"""The governed path, end to end, with the real moving parts: an author proposes a production
job through the REST API, two approvers approve it, a real ``run_scheduler`` process creates its
run at the next minute boundary and a real django-q2 worker (``qcluster``) executes it.

The suite runs on SQLite and on PostgreSQL, so this path is proven on both. Waiting for the
minute boundary costs up to a minute; the two processes start first so their startup overlaps.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from django.utils import timezone
from django_q.tasks import async_task, fetch
from rest_framework.test import APIClient

from conftest import PASSWORD
from governance.models import AuditAction
from jobs.models import Run, RunStatus
from tests import procs

TERMINAL = {"succeeded", "failed", "timed_out", "cancelled", "skipped", "lost"}


@pytest.fixture
def services(tcast, tmp_path):
    """A real scheduler and a real django-q2 cluster on the test database, stopped afterwards."""
    env = procs.django_env(
        GOVERNOR_WORKERS="1",
        # Wake often enough to notice the job applied while the scheduler was already asleep.
        GOVERNOR_SCHEDULER_MAX_SLEEP_MS="200",
    )
    started = [
        procs.manage("scheduler", "run_scheduler", env=env, log_dir=tmp_path),
        procs.manage("worker", "qcluster", env=env, log_dir=tmp_path),
    ]
    try:
        yield {p.name: p for p in started}
    finally:
        for p in started:
            p.stop()


def api_client(username: str) -> APIClient:
    client = APIClient()
    response = client.post("/api/v1/auth/token/", {"username": username, "password": PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    return client


def parse_utc(value: str) -> datetime:
    assert value.endswith("Z"), f"{value!r} is not UTC with a Z"
    return datetime.fromisoformat(value)


def next_minute(instant: datetime) -> datetime:
    return (instant + timedelta(minutes=1)).replace(second=0, microsecond=0)


def wait_for_finished_run(client: APIClient, job_id: int, deadline: float) -> dict:
    while time.monotonic() < deadline:
        runs = client.get(f"/api/v1/runs/?job={job_id}").json()
        if runs["count"] and runs["results"][0]["status"] in TERMINAL:
            return runs
        time.sleep(0.2)
    raise AssertionError(f"no finished run before the deadline; runs: {runs}")


def test_an_approved_prod_job_is_run_by_the_scheduler_and_a_worker_on_time(tcast, services):
    t0 = time.monotonic()
    author = api_client("acme-author")
    definition = tcast.definition(
        name="payments.ledger.heartbeat",
        command=["/bin/echo", "governed", "hello"],
        cron="* * * * *",
        timezone="Europe/Berlin",
        timeout_seconds=30,
        criticality="low",
        rationale="Every minute, so the test sees a run soon.",
    )
    response = author.post(
        "/api/v1/change-requests/",
        {
            "action": "create",
            "team": tcast.payments.pk,
            "environment": tcast.prod.pk,
            "definition": definition,
            "justification": "A heartbeat proving the governed path works.",
            "ticket": "OPS-1",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    change_id = response.json()["id"]
    change_url = f"/api/v1/change-requests/{change_id}/"
    assert response.json()["status"] == "submitted"

    response = api_client("acme-approver").post(
        change_url + "approve/", {"revision": 1, "comment": "ok"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "submitted"
    # The last approval fixes the first slot: make sure both processes are up before it, so
    # "on time" measures the scheduler and the worker, not their startup.
    ready = {
        name: p.wait_for(text, timeout=60)
        for (name, p), text in zip(services.items(), ["scheduler started", "running."], strict=True)
    }
    second_approver = api_client("acme-approver2")
    before = timezone.now()
    response = second_approver.post(change_url + "approve/", {"revision": 1}, format="json")
    after = timezone.now()
    assert response.status_code == 200, response.content
    applied = response.json()
    assert applied["status"] == "applied"
    job_id = applied["job"]["id"]
    # The first slot is the minute boundary after the change applied (between before and after).
    slots = {next_minute(before), next_minute(after)}

    seconds_to_slot = (max(slots) - timezone.now()).total_seconds()
    runs = wait_for_finished_run(author, job_id, time.monotonic() + seconds_to_slot + 30)
    finished = time.monotonic()

    assert runs["count"] == 1, runs
    summary = runs["results"][0]
    run = author.get(f"/api/v1/runs/{summary['id']}/").json()
    assert run["status"] == "succeeded", run
    assert run["exit_code"] == 0
    assert run["output"] == "governed hello\n"
    assert run["trigger"] == "schedule" and run["job_version"] == 1
    assert run["definition"]["command"] == ["/bin/echo", "governed", "hello"]
    scheduled_for = parse_utc(run["scheduled_for"])
    assert scheduled_for in slots, (scheduled_for, slots)
    assert (scheduled_for.second, scheduled_for.microsecond) == (0, 0)
    started_late = (parse_utc(run["started_at"]) - scheduled_for).total_seconds()
    assert 0 <= started_late < 5, f"started {started_late:.2f}s after its slot"
    assert parse_utc(run["finished_at"]) >= parse_utc(run["started_at"])

    # The change, its approvals, the job's history and the audit trail, through the API.
    change = author.get(change_url).json()
    assert change["status"] == "applied" and change["author"] == "acme-author"
    assert [(r["reviewer"], r["decision"]) for r in change["reviews"]] == [
        ("acme-approver", "approve"),
        ("acme-approver2", "approve"),
    ]
    job = author.get(f"/api/v1/jobs/{job_id}/").json()
    assert job["version"] == 1 and job["status"] == "enabled"
    history = author.get(f"/api/v1/jobs/{job_id}/history/").json()
    assert [(h["version"], h["change_request_id"]) for h in history["results"]] == [(1, change_id)]
    trail = author.get(f"/api/v1/audit-events/?object=approvals.changerequest:{change_id}").json()
    assert [event["action"] for event in reversed(trail["results"])] == [
        AuditAction.CHANGE_CREATED,
        AuditAction.CHANGE_SUBMITTED,
        AuditAction.CHANGE_APPROVED,
        AuditAction.CHANGE_APPROVED,
        AuditAction.CHANGE_APPLIED,
    ]
    job_trail = author.get(job["links"]["audit"]).json()
    assert AuditAction.JOB_CREATED in [event["action"] for event in job_trail["results"]]

    # django-q2 delivers at least once: the same task delivered again must not run the job again.
    task_id = async_task("jobs.tasks.execute_run", summary["id"], save=True)
    deadline = time.monotonic() + 20
    while (task := fetch(task_id)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert task is not None and task.result == "not-claimed", services["worker"].output()
    assert Run.objects.get(pk=summary["id"]).status == RunStatus.SUCCEEDED
    assert Run.objects.filter(job_id=job_id).count() == 1

    print(
        f"\ne2e timings: scheduler ready {ready['scheduler']:.1f}s, worker ready {ready['worker']:.1f}s, "
        f"waited {seconds_to_slot:.1f}s for the slot, started {started_late:.2f}s after it, "
        f"total {finished - t0:.1f}s"
    )
