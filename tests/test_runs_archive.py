"""Run history archives: round trip, crash between write and delete, other tenants untouched, bad input."""

import json
import os
import stat
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command

from governance.models import AuditAction, AuditEvent
from jobs import archive
from jobs.models import Attempt, Run, RunStatus

MONTH = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture
def archive_dir(tmp_path, settings):
    settings.GOVERNOR_ARCHIVE_DIR = str(tmp_path / "archive")
    return tmp_path / "archive"


def make_runs(job, n, *, start=MONTH, status=RunStatus.SUCCEEDED, step=timedelta(minutes=20)):
    runs = []
    for i in range(n):
        at = start + i * step
        runs.append(
            Run(
                job=job,
                tenant_id=job.tenant_id,
                scheduled_for=at,
                status=status,
                attempt=1,
                job_version=job.version if hasattr(job, "version") else 1,
                definition={"name": job.name, "n": i},
                started_at=at,
                finished_at=at + timedelta(seconds=i % 7),
                exit_code=i % 3,
                output=f"line {i}\n=cmd\u00e9",
                cpu_user_s=i / 10,
            )
        )
    created = Run.objects.bulk_create(runs, batch_size=500)
    if not created[0].pk:  # backends without RETURNING
        created = list(Run.objects.filter(job=job, scheduled_for__gte=start).order_by("id"))
    Attempt.objects.bulk_create(
        [
            Attempt(run=r, tenant_id=r.tenant_id, number=1, status=r.status, output=r.output, exit_code=r.exit_code)
            for r in created
        ],
        batch_size=500,
    )
    # created_at is auto_now_add: give the rows a past one, as history would have.
    Run.objects.filter(pk__in=[r.pk for r in created]).update(created_at=start)
    return created


def snapshot(queryset):
    """Every stored column of the runs and their attempts, row by row."""
    return list(archive._db_records(queryset))


def test_archive_round_trip_restores_every_row_exactly(cast, archive_dir):
    job = cast.make_job()
    make_runs(job, 2000)
    before = snapshot(Run.objects.filter(tenant=cast.acme))
    assert len(before) == 2000

    call_command("archive_runs", "--tenant", "acme")

    assert not Run.objects.filter(tenant=cast.acme).exists()
    assert not Attempt.objects.filter(tenant=cast.acme).exists()
    manifest_file = archive_dir / "acme" / "runs-2024-03.manifest.json"
    manifest = json.loads(manifest_file.read_text())
    assert manifest["count"] == 2000
    assert manifest["first_id"] == before[0]["id"] and manifest["last_id"] == before[-1]["id"]
    assert manifest["jobs"][job.name]["count"] == 2000
    data = archive_dir / "acme" / manifest["file"]
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(manifest_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(archive_dir / "acme").st_mode) == 0o700
    event = AuditEvent.objects.get(action=AuditAction.RUNS_ARCHIVED)
    assert event.tenant_id == cast.acme.pk and event.data["deleted"] == 2000

    call_command("restore_runs", "acme/2024-03")

    assert snapshot(Run.objects.filter(tenant=cast.acme)) == before
    assert AuditEvent.objects.filter(action=AuditAction.RUNS_RESTORED, tenant=cast.acme).count() == 1


def test_crash_between_write_and_delete_neither_loses_nor_duplicates(cast, archive_dir):
    job = cast.make_job()
    make_runs(job, 300)
    before = snapshot(Run.objects.all())

    # The "crash": the archive is written and verified, nothing deleted yet.
    archive.archive_runs(tenant_slug="acme", delete=False)
    assert Run.objects.count() == 300
    # More runs of the same month became old enough meanwhile.
    make_runs(job, 50, start=MONTH + timedelta(days=20), step=timedelta(minutes=7))
    everything = snapshot(Run.objects.all())

    report = archive.archive_runs(tenant_slug="acme")
    (month,) = report.months
    assert (month.runs, month.written, month.deleted, month.archive_count) == (350, 50, 350, 350)
    files = sorted(p.name for p in (archive_dir / "acme").iterdir() if p.name != ".lock")
    assert len(files) == 2  # one data file and its manifest: the first file was replaced, not kept

    # A third pass finds nothing; the archive still holds each run once.
    assert archive.archive_runs(tenant_slug="acme").months == []
    manifest = archive.verify(archive_dir / "acme" / "runs-2024-03.manifest.json")
    assert manifest["count"] == 350
    archive.restore("acme/2024-03")
    assert snapshot(Run.objects.all()) == everything
    assert everything[:300] == before


def test_restore_refuses_ids_that_exist_and_names_them(cast, archive_dir):
    job = cast.make_job()
    runs = make_runs(job, 5)
    archive.archive_runs(tenant_slug="acme", delete=False)
    with pytest.raises(CommandError) as err:
        call_command("restore_runs", "acme/2024-03")
    assert "Runs already in the database (5)" in str(err.value)
    assert str(runs[0].pk) in str(err.value)
    assert Run.objects.count() == 5


def test_other_tenant_untouched_and_only_old_finished_runs_archived(cast, archive_dir):
    acme_job = cast.make_job()
    globex_job = cast.make_job(environment=cast.globex_prod)
    make_runs(acme_job, 10)
    make_runs(globex_job, 10)
    make_runs(acme_job, 3, start=MONTH + timedelta(days=25), status=RunStatus.RUNNING, step=timedelta(hours=1))
    make_runs(acme_job, 3, start=MONTH + timedelta(days=26), status=RunStatus.QUEUED, step=timedelta(hours=1))
    recent = datetime.now(UTC) - timedelta(days=40)
    make_runs(acme_job, 4, start=recent, step=timedelta(hours=1))

    call_command("archive_runs", "--tenant", "acme")

    assert Run.objects.filter(tenant=cast.globex).count() == 10
    left = Run.objects.filter(tenant=cast.acme)
    assert sorted(left.values_list("status", flat=True)) == ["queued"] * 3 + ["running"] * 3 + ["succeeded"] * 4
    assert not (archive_dir / "globex").exists()
    assert archive.verify(archive_dir / "acme" / "runs-2024-03.manifest.json")["count"] == 10


def test_retention_and_before_limit_what_is_archived(cast, archive_dir):
    job = cast.make_job()
    make_runs(job, 5)  # March 2024
    make_runs(job, 5, start=datetime(2024, 5, 3, tzinfo=UTC))
    call_command("archive_runs", "--before", "2024-04")
    assert Run.objects.filter(scheduled_for__lt=datetime(2024, 4, 1, tzinfo=UTC)).count() == 0
    assert Run.objects.count() == 5
    cast.acme.run_retention_days = 100000
    cast.acme.save()
    call_command("archive_runs")
    assert Run.objects.count() == 5


def test_dry_run_writes_and_deletes_nothing(cast, archive_dir, capsys):
    job = cast.make_job()
    make_runs(job, 7)
    call_command("archive_runs", "--dry-run")
    assert "acme 2024-03: 7 runs would be archived" in capsys.readouterr().out
    assert Run.objects.count() == 7 and not archive_dir.exists()


def test_list_archives_by_job_and_date(cast, archive_dir, capsys):
    job = cast.make_job()
    make_runs(job, 3)
    make_runs(job, 3, start=datetime(2024, 6, 2, tzinfo=UTC))
    call_command("archive_runs")
    capsys.readouterr()
    call_command("list_archives", "--job", job.name, "--from", "2024-06-01")
    out = capsys.readouterr().out
    assert "acme/2024-06\t3 runs" in out and "2024-03" not in out
    call_command("list_archives", "--job", "payments.other.job")
    assert "No archives match." in capsys.readouterr().out
    call_command("list_archives", "--tenant", "acme", "--to", "2024-03-31")
    out = capsys.readouterr().out
    assert "acme/2024-03" in out and "2024-06" not in out


def test_a_damaged_archive_is_refused_and_runs_are_kept(cast, archive_dir):
    job = cast.make_job()
    make_runs(job, 4)
    archive.archive_runs(delete=False)
    manifest = json.loads((archive_dir / "acme" / "runs-2024-03.manifest.json").read_text())
    data = archive_dir / "acme" / manifest["file"]
    data.write_bytes(data.read_bytes()[:-3] + b"xyz")
    with pytest.raises(archive.ArchiveError, match="sha256"):
        archive.archive_runs()
    assert Run.objects.count() == 4
    with pytest.raises(CommandError, match="sha256"):
        call_command("restore_runs", "acme/2024-03")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["archive_runs", "--before", "2024-13"], "use YYYY-MM"),
        (["archive_runs", "--tenant", "nope"], "No tenant 'nope'"),
        (["restore_runs", "acme/2024-02"], "No archive"),
        (["restore_runs", "../etc/2024-02"], "not a month|No archive"),
        (["list_archives", "--from", "yesterday"], "--from"),
        (["list_archives", "--from", "2024-05-01", "--to", "2024-04-01"], "--to"),
    ],
)
def test_bad_input_is_refused_by_name(cast, archive_dir, args, message):
    with pytest.raises(CommandError, match=message):
        call_command(*args)


def test_retention_below_31_days_is_refused(cast):
    from django.core.exceptions import ValidationError

    cast.acme.run_retention_days = 30
    with pytest.raises(ValidationError) as err:
        cast.acme.full_clean()
    assert "run_retention_days" in err.value.message_dict
