"""Audit exports: API and command, filtered, visible-only, CSV-injection safe, audited, streamed."""

import csv
import gc
import io
import json
import os
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from governance import audit
from governance.models import AuditAction, AuditChain, AuditEvent

URL = "/api/v1/audit-events/export/"


def _client(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def _body(response) -> str:
    assert response.status_code == 200, getattr(response, "data", response)
    return b"".join(response.streaming_content).decode()


def _csv(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(_body(response))))


@pytest.fixture
def trail(cast):
    audit.record(AuditAction.RUN_TRIGGERED, actor=cast.operator, tenant=cast.acme, data={"n": 1})
    audit.record(AuditAction.JOB_PAUSED, actor=cast.operator, tenant=cast.acme, data={"n": 2})
    audit.record(AuditAction.RUN_TRIGGERED, actor=cast.author, tenant=cast.acme, data={"n": 3})
    audit.record(AuditAction.RUN_TRIGGERED, actor=cast.globex_admin, tenant=cast.globex, data={"secret": "globex"})
    return cast


def test_it_exports_only_the_callers_tenant(trail):
    rows = _csv(_client(trail.viewer).get(URL))
    assert rows and {r["tenant"] for r in rows} == {"acme"}
    assert not any("globex" in json.dumps(r) for r in rows)


def test_someone_without_roles_exports_nothing(trail):
    rows = _csv(_client(trail.outsider).get(URL))
    assert rows == []


def test_anonymous_callers_are_refused(trail):
    assert APIClient().get(URL).status_code in (401, 403)


def test_filters_by_actor_action_and_time(trail):
    client = _client(trail.admin)
    rows = _csv(client.get(URL, {"actor": "acme-operator", "action": "run.triggered"}))
    assert [json.loads(r["data"]) for r in rows] == [{"n": 1}]
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert _csv(client.get(URL, {"since": future})) == []
    assert len(_csv(client.get(URL, {"until": future, "action": "run.triggered,job.paused"}))) == 3


def test_a_bare_date_means_that_whole_utc_day(trail):
    client = _client(trail.admin)
    today = datetime.now(UTC).date()
    assert len(_csv(client.get(URL, {"since": today.isoformat(), "action": "run.triggered"}))) == 2
    assert len(_csv(client.get(URL, {"until": today.isoformat(), "action": "run.triggered"}))) == 2
    tomorrow = (today + timedelta(days=1)).isoformat()
    assert _csv(client.get(URL, {"since": tomorrow})) == []
    response = client.get(URL, {"since": "2026-02-30"})
    assert response.status_code == 400 and set(response.json()) == {"since"}


def test_bad_filters_answer_400_with_field_errors_and_record_nothing(trail):
    before = AuditEvent.objects.count()
    response = _client(trail.admin).get(
        URL, {"format": "xlsx", "since": "yesterday", "until": "2026-01-01T00:00:00", "action": "rm -rf"}
    )
    assert response.status_code == 400
    assert set(response.json()) == {"format", "since", "until", "action"}
    assert AuditEvent.objects.count() == before


def test_jsonl_has_one_object_per_event_in_chain_order(trail):
    body = _body(_client(trail.admin).get(URL, {"format": "jsonl"}))
    rows = [json.loads(line) for line in body.splitlines()]
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(seqs) and rows[0]["tenant"] == "acme"
    assert rows[-1]["action"] == AuditAction.EXPORT  # the export records itself first
    assert all(r["created_at"].endswith("Z") for r in rows)


def test_the_export_itself_is_audited(trail):
    _body(_client(trail.viewer).get(URL, {"format": "jsonl", "actor": "acme-operator"}))
    event = AuditEvent.objects.filter(action=AuditAction.EXPORT).get()
    assert event.actor == trail.viewer and event.tenant == trail.acme
    assert event.data == {"format": "jsonl", "filters": {"actor": "acme-operator"}, "surface": "api"}


@pytest.mark.parametrize("payload", ['=HYPERLINK("http://evil")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rcmd"])
def test_csv_cells_that_spreadsheets_would_evaluate_are_escaped(trail, payload):
    audit.record(AuditAction.LOGIN_FAILED, actor_repr=payload, data={"username": payload})
    rows = _csv(_client(trail.superuser).get(URL, {"action": "auth.login_failed"}))
    assert rows[0]["actor"] == "'" + payload
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))


def test_export_audit_command_writes_a_filtered_file_and_is_audited(trail, tmp_path):
    target = tmp_path / "audit.jsonl"
    err = StringIO()
    call_command(
        "export_audit",
        "--format",
        "jsonl",
        "--tenant",
        "acme",
        "--action",
        "run.triggered",
        "-o",
        str(target),
        stderr=err,
    )
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["data"]["n"] for r in rows] == [1, 3]
    event = AuditEvent.objects.filter(action=AuditAction.EXPORT).get()
    assert event.tenant == trail.acme and event.actor is None
    assert event.actor_repr == "manage.py export_audit"


def test_export_audit_command_refuses_bad_filters(trail):
    with pytest.raises(CommandError, match="since"):
        call_command("export_audit", "--since", "last tuesday", stdout=StringIO())


def test_export_audit_command_streams_csv_to_stdout(trail):
    out = StringIO()
    call_command("export_audit", stdout=out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert {r["tenant"] for r in rows} >= {"acme", "globex"}


def _bulk_trail(tenant, count: int) -> None:
    """``count`` events with a valid hash chain, inserted with executemany (record() would take minutes)."""
    from django.db import connection

    chain, _ = AuditChain.objects.get_or_create(tenant=tenant)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    previous, seq = chain.last_hash, chain.last_seq
    # One instance reused as a hashing template: compute_hash stays the single definition of the chain.
    event = AuditEvent(
        tenant=tenant, actor_repr="bulk-loader", action=AuditAction.RUN_TRIGGERED, object_type="jobs.run"
    )
    sql = (
        "INSERT INTO governance_auditevent (tenant_id, seq, created_at, actor_repr, action, object_type, object_id,"
        " object_repr, data, prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    )
    rows = []
    for i in range(count):
        seq += 1
        event.seq, event.created_at = seq, start + timedelta(seconds=i)
        event.object_id, event.object_repr, event.data = str(i), f"payments.ledger.reconcile run {i}", {"i": i}
        event.prev_hash = previous
        previous = event.compute_hash()
        rows.append(
            (
                tenant.pk,
                seq,
                connection.ops.adapt_datetimefield_value(event.created_at),
                event.actor_repr,
                event.action,
                event.object_type,
                event.object_id,
                event.object_repr,
                json.dumps(event.data),
                event.prev_hash,
                previous,
            )
        )
        # Small batches keep the loader's own memory low, so it cannot mask the export's growth.
        if len(rows) == 5000 or i == count - 1:
            with connection.cursor() as cursor:
                cursor.executemany(sql, rows)
            rows = []
    AuditChain.objects.filter(pk=chain.pk).update(last_seq=seq, last_hash=previous)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_exporting_200000_events_streams_in_bounded_memory(cast):
    """Resident memory is sampled after every chunk (tracemalloc would quadruple the run time)."""
    _bulk_trail(cast.acme, 200_000)
    client = _client(cast.admin)
    gc.collect()
    baseline = peak = _rss_bytes()
    response = client.get(URL, {"format": "csv"})
    assert response.status_code == 200 and response.streaming
    total = lines = 0
    for chunk in response.streaming_content:
        total += len(chunk)
        lines += chunk.count(b"\n")
        peak = max(peak, _rss_bytes())
    assert lines == 1 + AuditEvent.objects.filter(tenant=cast.acme).count()  # header + every acme event
    # The output is over 50 MB and the rows as Python objects well over 100 MB: holding either would show.
    assert total > 50 * 1024 * 1024
    growth = peak - baseline
    print(f"export: {total / 1e6:.1f} MB streamed, resident memory grew {growth / 1e6:.1f} MB")
    assert growth < 25 * 1024 * 1024, f"resident memory grew {growth / 1e6:.1f} MB exporting {total / 1e6:.1f} MB"
