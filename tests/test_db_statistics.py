"""The monitor keeps SQLite's planner statistics (governance.db_statistics): analysed when the
monitor starts, then once a day; nothing to do on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from governance import db_statistics
from jobs.models import Run
from monitoring import loop

pytestmark = pytest.mark.django_db


def stat(index: str) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'")
        if cursor.fetchone() is None:
            return None
        cursor.execute("SELECT stat FROM sqlite_stat1 WHERE idx = %s", [index])
        row = cursor.fetchone()
    return row[0] if row else None


@pytest.fixture
def fresh():
    db_statistics.forget()
    yield
    db_statistics.forget()


def plant(cast, jobs: int = 4, per_job: int = 50, batch: str = "a") -> None:
    now = timezone.now()
    made = [cast.make_job(cast.dev, name=f"payments.stats-{batch}.job-{i}") for i in range(jobs)]
    Run.objects.bulk_create(
        Run(
            job=job,
            tenant=cast.acme,
            scheduled_for=now - timedelta(minutes=i),
            status="succeeded",
            job_version=1,
            definition=job.definition(),
        )
        for job in made
        for i in range(per_job)
    )


def test_the_monitor_cycle_gives_sqlite_the_runs_per_job_and_refreshes_daily(cast, fresh):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's statistics; PostgreSQL's autovacuum keeps its own")
    plant(cast)
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'")
        if cursor.fetchone() is not None:
            cursor.execute("DELETE FROM sqlite_stat1")
    assert stat("run_job_recent") is None

    now = timezone.now()
    # run_once closes the connection between steps, which a test's transaction cannot survive.
    assert ("db_statistics", db_statistics.refresh) in loop.STEPS
    assert db_statistics.refresh(now) is True
    # 200 runs; 50 per job (the index's first column), one per (job, time).
    assert stat("run_job_recent") == "200 50 1"

    plant(cast, jobs=1, per_job=100, batch="b")
    assert db_statistics.refresh(now + timedelta(hours=23)) is False
    assert stat("run_job_recent") == "200 50 1", "analysed again within the day"
    assert db_statistics.refresh(now + timedelta(hours=24)) is True
    assert stat("run_job_recent") == "300 60 1"


def test_nothing_to_do_on_postgresql(fresh):
    if connection.vendor == "sqlite":
        pytest.skip("PostgreSQL")
    assert db_statistics.refresh(timezone.now()) is False
