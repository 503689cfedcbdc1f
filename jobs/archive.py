"""Run history archives: finished runs older than the tenant's retention, one zstd JSON Lines file per
tenant and month, with a manifest; listed, searched and restored from there.

Layout under ``settings.GOVERNOR_ARCHIVE_DIR`` (directories 0700, files 0600)::

    <tenant>/runs-<YYYY-MM>.manifest.json      the commit point: count, sha256, first/last id, jobs
    <tenant>/runs-<YYYY-MM>.<sha12>.jsonl.zst  one JSON object per run (its attempts inside), by id

Crash safety: a new data file gets a new name (its hash), is fsynced and re-read, and only then does an
atomic rename of the manifest make it the month's archive; runs are deleted (in batches) only after
that, and only those whose archived copy is identical. A rerun after a crash anywhere merges what the
database still holds with what the month's archive already has (by id): nothing lost, nothing twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast

import zstandard
from django.conf import settings
from django.db import models, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from governance import audit
from governance.actors import SYSTEM
from governance.models import AuditAction, Tenant

from .models import TERMINAL_STATUSES, Alert, Attempt, Run

FORMAT = "governor.runs/1"
DELETE_BATCH = 1000
READ_CHUNK = 1000
ZSTD_LEVEL = 10
MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
MANIFEST_RE = re.compile(r"^runs-(\d{4}-\d{2})\.manifest\.json$")


class ArchiveError(Exception):
    """An archive is missing, damaged, or cannot be restored; the message says which and why."""


def parse_month(value: str) -> date:
    match = MONTH_RE.fullmatch(value or "")
    if not match:
        raise ArchiveError(f"{value!r} is not a month; use YYYY-MM, e.g. 2026-01.")
    return date(int(match[1]), int(match[2]), 1)


def _next_month(month: date) -> date:
    return date(month.year + (month.month == 12), month.month % 12 + 1, 1)


def _month_start(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=UTC)


def root() -> Path:
    return Path(settings.GOVERNOR_ARCHIVE_DIR)


# --- rows <-> records ------------------------------------------------------------------------


def _fields(model: type[models.Model]) -> list[models.Field]:
    return list(model._meta.concrete_fields)


def _encode(model_field: models.Field, value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return value


def _decode(model_field: models.Field, value: Any) -> Any:
    if value is not None and isinstance(model_field, models.DateTimeField):
        return parse_datetime(value)
    return value


def _record(row: dict, attempts: list[dict]) -> dict:
    record = {f.attname: _encode(f, row[f.attname]) for f in _fields(Run)}
    record["attempts"] = [{f.attname: _encode(f, a[f.attname]) for f in _fields(Attempt)} for a in attempts]
    return record


def _line(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _fingerprint(line: bytes) -> bytes:
    return hashlib.blake2b(line, digest_size=16).digest()


def _db_records(queryset) -> Iterator[dict]:
    """The runs of ``queryset`` as records, by id, with their attempts: two queries per chunk of runs."""
    run_names = [f.attname for f in _fields(Run)]
    attempt_names = [f.attname for f in _fields(Attempt)]
    chunk: list[dict] = []

    def flush(rows: list[dict]) -> Iterator[dict]:
        attempts: dict[int, list[dict]] = {}
        for a in (
            Attempt.objects.filter(run_id__in=[r["id"] for r in rows])
            .order_by("run_id", "number")
            .values(*attempt_names)
        ):
            attempts.setdefault(a["run_id"], []).append(a)
        for r in rows:
            yield _record(r, attempts.get(r["id"], []))

    for row in queryset.order_by("id").values(*run_names).iterator(chunk_size=READ_CHUNK):
        chunk.append(row)
        if len(chunk) == READ_CHUNK:
            yield from flush(chunk)
            chunk = []
    if chunk:
        yield from flush(chunk)


# --- files -----------------------------------------------------------------------------------


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_private(path: Path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def manifest_path(tenant_slug: str, month: str) -> Path:
    return root() / tenant_slug / f"runs-{month}.manifest.json"


def read_records(path: Path) -> Iterator[dict]:
    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as reader:
        for line in io.TextIOWrapper(reader, encoding="utf-8"):
            if line.strip():
                yield json.loads(line)


def load_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"{path}: not a readable archive manifest ({exc}).") from exc
    if manifest.get("format") != FORMAT:
        raise ArchiveError(f"{path}: not a run archive manifest (format {manifest.get('format')!r}).")
    return manifest


def data_path(manifest_file: Path, manifest: dict) -> Path:
    name = manifest["file"]
    if "/" in name or name.startswith("."):
        raise ArchiveError(f"{manifest_file}: the manifest names an unsafe file {name!r}.")
    return manifest_file.parent / name


def verify(manifest_file: Path) -> dict:
    """Re-read an archive: its sha256 and its run count must match the manifest; returns the manifest."""
    manifest = load_manifest(manifest_file)
    data = data_path(manifest_file, manifest)
    digest = hashlib.sha256()
    try:
        with open(data, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ArchiveError(f"{data}: cannot be read ({exc}).") from exc
    if digest.hexdigest() != manifest["sha256"]:
        raise ArchiveError(f"{data}: sha256 {digest.hexdigest()} differs from the manifest's {manifest['sha256']}.")
    count, first, last, previous = 0, None, None, 0
    for record in read_records(data):
        count += 1
        if record["id"] <= previous:
            raise ArchiveError(f"{data}: run ids are not in increasing order at {record['id']}.")
        previous = record["id"]
        first = record["id"] if first is None else first
        last = record["id"]
    if (count, first, last) != (manifest["count"], manifest["first_id"], manifest["last_id"]):
        raise ArchiveError(
            f"{data}: holds {count} runs (ids {first}..{last}), the manifest says {manifest['count']} "
            f"({manifest['first_id']}..{manifest['last_id']})."
        )
    return manifest


def _merge(old: Iterable[dict], new: Iterable[dict]) -> Iterator[tuple[dict, bool]]:
    """Both by id -> every record once, by id; True when it comes from the database (which wins)."""
    old_it, new_it = iter(old), iter(new)
    a, b = next(old_it, None), next(new_it, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a["id"] < b["id"]):
            yield a, False  # type: ignore[misc]
            a = next(old_it, None)
        else:
            if a is not None and a["id"] == b["id"]:
                a = next(old_it, None)
            yield b, True
            b = next(new_it, None)


# --- archiving -------------------------------------------------------------------------------


@dataclass
class MonthResult:
    tenant: str
    month: str
    runs: int  # runs of the month found in the database
    written: int = 0  # of which new or changed since the archive last held them
    deleted: int = 0
    archive_count: int = 0  # runs in the month's archive afterwards
    manifest: str = ""
    skipped_with_alerts: int = 0


@dataclass
class ArchiveReport:
    dry_run: bool
    months: list[MonthResult] = field(default_factory=list)


def eligible(tenant: Tenant, *, now: datetime, before: date | None = None):
    """Finished runs of ``tenant`` older than its retention (and before ``before``), that nothing
    still points at: runs with alerts and slot runs with unfinished partitions stay."""
    cutoff = now - timedelta(days=tenant.run_retention_days)
    if before is not None:
        cutoff = min(cutoff, _month_start(before))
    unfinished_child = Run.objects.filter(parent=OuterRef("pk")).filter(
        ~Q(status__in=TERMINAL_STATUSES) | Q(scheduled_for__gte=cutoff)
    )
    return (
        Run.objects.filter(tenant=tenant, scheduled_for__lt=cutoff, status__in=TERMINAL_STATUSES)
        .exclude(Exists(Alert.objects.filter(run=OuterRef("pk"))))
        .exclude(Exists(unfinished_child))
    )


def _months(queryset) -> list[date]:
    stamps = queryset.dates("scheduled_for", "month", order="ASC")
    return list(stamps)


def archive_runs(
    *,
    tenant_slug: str | None = None,
    before: date | None = None,
    dry_run: bool = False,
    delete: bool = True,
    now: datetime | None = None,
) -> ArchiveReport:
    """Archive every tenant's (or one tenant's) eligible runs month by month, then delete them.

    ``delete=False`` stops after the archive is written and verified (what a crash there leaves)."""
    now = now or timezone.now()
    tenants = Tenant.objects.order_by("slug")
    if tenant_slug:
        tenants = tenants.filter(slug=tenant_slug)
        if not tenants.exists():
            raise ArchiveError(f"No tenant {tenant_slug!r}.")
    report = ArchiveReport(dry_run=dry_run)
    for tenant in tenants:
        runs = eligible(tenant, now=now, before=before)
        for month in _months(runs):
            in_month = runs.filter(
                scheduled_for__gte=_month_start(month), scheduled_for__lt=_month_start(_next_month(month))
            )
            label = month.strftime("%Y-%m")
            if dry_run:
                report.months.append(
                    MonthResult(tenant.slug, label, in_month.count(), manifest=str(manifest_path(tenant.slug, label)))
                )
                continue
            report.months.append(_archive_month(tenant, label, in_month, delete=delete))
    return report


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One archive_runs or restore_runs at a time per tenant directory (a second one waits)."""
    _private_dir(directory.parent)
    _private_dir(directory)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _archive_month(tenant: Tenant, month: str, queryset, *, delete: bool) -> MonthResult:
    with _locked(root() / tenant.slug):
        return _archive_month_locked(tenant, month, queryset, delete=delete)


def _archive_month_locked(tenant: Tenant, month: str, queryset, *, delete: bool) -> MonthResult:
    directory = root() / tenant.slug
    manifest_file = manifest_path(tenant.slug, month)
    old_manifest = verify(manifest_file) if manifest_file.exists() else None
    old_data = data_path(manifest_file, old_manifest) if old_manifest else None
    old_records: Iterable[dict] = read_records(old_data) if old_data else ()
    # What the archive holds, as a digest per run id: an unchanged run is not "written" again.
    old_index = {r["id"]: _fingerprint(_line(r)) for r in read_records(old_data)} if old_data else {}

    result = MonthResult(tenant.slug, month, 0, manifest=str(manifest_file))
    from_db: list[int] = []
    tmp = directory / f".runs-{month}.{os.getpid()}.tmp"
    digest = hashlib.sha256()
    count, first, last = 0, None, None
    jobs: dict[str, dict] = {}
    with _open_private(tmp) as raw:
        hashing = _HashingWriter(raw, digest)
        with zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(cast(IO[bytes], hashing), closefd=False) as out:
            for record, is_db in _merge(old_records, _db_records(queryset)):
                line = _line(record)
                if is_db:
                    from_db.append(record["id"])
                    if old_index.get(record["id"]) != _fingerprint(line):
                        result.written += 1
                out.write(line)
                count += 1
                first = record["id"] if first is None else first
                last = record["id"]
                name = str(record["definition"].get("name", record["job_id"]))
                entry = jobs.setdefault(name, {"job_id": record["job_id"], "count": 0})
                entry["count"] += 1
                entry["from"] = min(entry.get("from", record["scheduled_for"]), record["scheduled_for"])
                entry["to"] = max(entry.get("to", record["scheduled_for"]), record["scheduled_for"])
        raw.flush()
        os.fsync(raw.fileno())
    result.runs = len(from_db)
    if not from_db:
        tmp.unlink()
        result.archive_count = old_manifest["count"] if old_manifest else 0
        return result

    if result.written:
        sha = digest.hexdigest()
        data = directory / f"runs-{month}.{sha[:12]}.jsonl.zst"
        os.replace(tmp, data)
        all_from = [j["from"] for j in jobs.values()]
        all_to = [j["to"] for j in jobs.values()]
        manifest = {
            "format": FORMAT,
            "tenant": tenant.slug,
            "month": month,
            "file": data.name,
            "count": count,
            "sha256": sha,
            "first_id": first,
            "last_id": last,
            "from": min(all_from),
            "to": max(all_to),
            "jobs": jobs,
            "created_at": timezone.now().astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
        manifest_tmp = directory / f".runs-{month}.manifest.{os.getpid()}.tmp"
        with _open_private(manifest_tmp) as handle:
            handle.write(json.dumps(manifest, indent=1, sort_keys=True).encode())
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_dir(directory)
        # The new file must read back whole before it replaces the old one.
        _check(data, manifest)
        os.replace(manifest_tmp, manifest_file)  # the commit point
        _fsync_dir(directory)
        verify(manifest_file)
        if old_data is not None and old_data != data:
            old_data.unlink(missing_ok=True)
    else:
        tmp.unlink()  # the archive already holds every one of these runs exactly
    _sweep(directory, month, manifest_file)
    result.archive_count = count
    if delete:
        result.deleted = _delete(tenant, month, from_db, written=result.written, manifest_file=manifest_file)
    return result


def _check(data: Path, manifest: dict) -> None:
    """Verify a data file against a manifest not yet in place."""
    probe = data.parent / f".probe-{os.getpid()}.json"
    with _open_private(probe) as handle:
        handle.write(json.dumps(manifest).encode())
    try:
        verify(probe)
    finally:
        probe.unlink()


def _sweep(directory: Path, month: str, manifest_file: Path) -> None:
    """Files of the month no manifest names: left by a crash before or after the commit point."""
    current = load_manifest(manifest_file)["file"]
    for path in directory.glob(f"runs-{month}.*.jsonl.zst"):
        if path.name != current:
            path.unlink(missing_ok=True)
    for path in directory.glob(f".runs-{month}.*"):
        path.unlink(missing_ok=True)


def _delete(tenant: Tenant, month: str, ids: list[int], *, written: int, manifest_file: Path) -> int:
    """Delete the archived runs, partition runs before their slot run, DELETE_BATCH per transaction."""
    children = set(Run.objects.filter(pk__in=ids, parent__isnull=False).values_list("pk", flat=True))
    ordered = [i for i in ids if i in children] + [i for i in ids if i not in children]
    deleted = 0
    for start in range(0, len(ordered), DELETE_BATCH):
        batch = ordered[start : start + DELETE_BATCH]
        with transaction.atomic():
            # Still finished: a run that changed state since it was read stays (the next pass archives it).
            doomed = Run.objects.filter(pk__in=batch, status__in=TERMINAL_STATUSES)
            Attempt.objects.filter(run__in=doomed).delete()
            deleted += doomed.delete()[1].get(Run._meta.label, 0)
    manifest = load_manifest(manifest_file)
    audit.record(
        AuditAction.RUNS_ARCHIVED,
        actor=SYSTEM,
        actor_repr="archive_runs",
        tenant=tenant,
        data={
            "month": month,
            "deleted": deleted,
            "written": written,
            "archive_count": manifest["count"],
            "file": manifest["file"],
            "sha256": manifest["sha256"],
            "retention_days": tenant.run_retention_days,
        },
    )
    return deleted


class _HashingWriter(io.RawIOBase):
    """Passes bytes to ``raw`` and into ``digest``: the file's sha256 without reading it again."""

    def __init__(self, raw, digest) -> None:
        self.raw, self.digest = raw, digest

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.digest.update(b)
        return self.raw.write(b)


# --- listing and restoring -------------------------------------------------------------------


def manifests(tenant_slug: str | None = None) -> Iterator[tuple[Path, dict]]:
    base = root()
    if not base.is_dir():
        return
    tenants = [base / tenant_slug] if tenant_slug else sorted(p for p in base.iterdir() if p.is_dir())
    for directory in tenants:
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            if MANIFEST_RE.fullmatch(path.name):
                yield path, load_manifest(path)


def search(
    *, tenant_slug: str | None = None, job: str | None = None, since: datetime | None = None, until=None
) -> list[dict]:
    """Manifests (with ``path``) holding runs of ``job`` scheduled in [since, until] (UTC)."""
    found = []
    for path, manifest in manifests(tenant_slug):
        if job and job not in manifest["jobs"]:
            continue
        span = manifest["jobs"][job] if job else manifest
        lo, hi = parse_datetime(span["from"]), parse_datetime(span["to"])
        if lo is None or hi is None:
            raise ArchiveError(f"{path}: the manifest's from/to are not date-times.")
        if (since and hi < since) or (until and lo > until):
            continue
        found.append({**manifest, "path": str(path)})
    return found


def resolve(spec: str) -> Path:
    """An archive named as its manifest's path, or as <tenant>/<YYYY-MM>."""
    path = Path(spec)
    if path.name.endswith(".manifest.json"):
        if not path.is_file():
            raise ArchiveError(f"No archive manifest at {spec}.")
        return path
    tenant, _, month = spec.partition("/")
    parse_month(month)
    path = manifest_path(tenant, month)
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", tenant) or not path.is_file():
        raise ArchiveError(f"No archive {spec!r} (looked for {path}).")
    return path


def restore(spec: str) -> dict:
    """Insert an archive's runs and attempts back with their ids, all or nothing; refuses when any id exists."""
    path = resolve(spec)
    with _locked(path.parent):
        return _restore(path)


def _restore(path: Path) -> dict:
    manifest = verify(path)
    data = data_path(path, manifest)
    run_ids = [r["id"] for r in read_records(data)]
    attempt_ids = [a["id"] for r in read_records(data) for a in r["attempts"]]
    tenant = Tenant.objects.filter(slug=manifest["tenant"]).first()
    if tenant is None:
        raise ArchiveError(f"The archive's tenant {manifest['tenant']!r} no longer exists.")
    for model, ids, what in ((Run, run_ids, "Runs"), (Attempt, attempt_ids, "Attempts")):
        present: list[int] = []
        for start in range(0, len(ids), READ_CHUNK):
            present += model._base_manager.filter(pk__in=ids[start : start + READ_CHUNK]).values_list("pk", flat=True)
        if present:
            present.sort()
            shown = ", ".join(map(str, present[:20])) + (" …" if len(present) > 20 else "")
            raise ArchiveError(f"{what} already in the database ({len(present)}): {shown}. Nothing restored.")
    with transaction.atomic():
        runs: list[Run] = []
        attempts: list[Attempt] = []
        for record in read_records(data):
            if record["tenant_id"] != tenant.pk:
                raise ArchiveError(f"Run {record['id']} belongs to another tenant than the archive's.")
            runs.append(Run(**{f.attname: _decode(f, record[f.attname]) for f in _fields(Run)}))
            attempts += [
                Attempt(**{f.attname: _decode(f, a[f.attname]) for f in _fields(Attempt)}) for a in record["attempts"]
            ]
            if len(runs) >= READ_CHUNK:
                _insert(runs, attempts)
                runs, attempts = [], []
        _insert(runs, attempts)
        audit.record(
            AuditAction.RUNS_RESTORED,
            actor=SYSTEM,
            actor_repr="restore_runs",
            tenant=tenant,
            data={"month": manifest["month"], "count": manifest["count"], "file": manifest["file"]},
        )
    return manifest


def _insert(runs: list[Run], attempts: list[Attempt]) -> None:
    # raw=True: values as stored (created_at is not "now"), like loaddata.
    if runs:
        Run._base_manager._insert(runs, fields=_fields(Run), raw=True)  # type: ignore[attr-defined]
    if attempts:
        Attempt._base_manager._insert(attempts, fields=_fields(Attempt), raw=True)  # type: ignore[attr-defined]
