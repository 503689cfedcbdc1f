"""Run archive round trip: a month of 100,000 runs archived, restored and compared row by row."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta

TITLE = "Run archive round trip (100,000 runs of one month)"
RUNS = 100_000


def _digests():
    from jobs import archive
    from jobs.models import Run

    runs = Run.objects.filter(tenant__slug="bench-archive")
    return [(r["id"], archive._fingerprint(archive._line(r))) for r in archive._db_records(runs)]


def run(report) -> None:
    from django.conf import settings

    from governance.models import Environment, Team, Tenant
    from jobs import archive
    from jobs.models import Attempt, Job, Run

    tenant = Tenant.objects.create(slug="bench-archive", name="Bench archive")
    team = Team.objects.create(tenant=tenant, slug="bench", name="Bench")
    env = Environment.objects.create(tenant=tenant, slug="prod", name="Prod", order=2, required_approvals=0)
    job = Job.objects.create(
        tenant=tenant, team=team, environment=env, name="bench.archive.job", command=["/bin/true"], cron="* * * * *"
    )
    start = datetime(2024, 3, 1, tzinfo=UTC)
    step = timedelta(seconds=26)  # 100,000 slots fit in March
    for offset in range(0, RUNS, 5000):
        batch = [
            Run(
                job=job,
                tenant=tenant,
                scheduled_for=start + (offset + i) * step,
                status="succeeded",
                attempt=1,
                job_version=1,
                definition={"name": job.name},
                started_at=start + (offset + i) * step,
                finished_at=start + (offset + i) * step + timedelta(seconds=1),
                exit_code=0,
                output=f"run {offset + i} done\n",
            )
            for i in range(5000)
        ]
        Run.objects.bulk_create(batch)
    ids = Run.objects.filter(tenant=tenant).values_list("id", flat=True)
    Attempt.objects.bulk_create(
        [Attempt(run_id=i, tenant=tenant, number=1, status="succeeded", exit_code=0) for i in ids], batch_size=5000
    )
    before = _digests()
    with tempfile.TemporaryDirectory() as directory:
        settings.GOVERNOR_ARCHIVE_DIR = directory
        t0 = time.perf_counter()
        result = archive.archive_runs(tenant_slug="bench-archive", now=datetime(2026, 1, 1, tzinfo=UTC))
        archived_s = time.perf_counter() - t0
        (month,) = result.months
        assert month.deleted == RUNS and not Run.objects.filter(tenant=tenant).exists()
        manifest = archive.verify(archive.manifest_path("bench-archive", "2024-03"))
        size = (archive.root() / "bench-archive" / manifest["file"]).stat().st_size
        t0 = time.perf_counter()
        archive.restore("bench-archive/2024-03")
        restored_s = time.perf_counter() - t0
    after = _digests()
    assert after == before, "restored runs differ from the archived ones"
    report.figure("archive_100k_runs_s", archived_s, "s", note="write, verify, delete in batches of 1,000")
    report.figure("restore_100k_runs_s", restored_s, "s")
    report.figure("archive_100k_file_mb", size / 1e6, "MB", note="zstd level 10 JSON Lines")
    report.figure("archive_round_trip_rows_equal", float(len(after)), "rows")
    Attempt.objects.filter(tenant=tenant).delete()
    Run.objects.filter(tenant=tenant).delete()
