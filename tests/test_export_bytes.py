"""The exact bytes of the audit and run exports (CSV and JSON Lines), pinned: every column, CSV-injection
neutralisation in each text column, unicode, quotes/commas/newlines, nulls, nested ``data`` with unicode
and key order, microsecond timestamps. The export's speed-ups (issue 20) must not change one byte.

The rows are planted with fixed ids, times and hashes (``bulk_create``, not the audit service) so the
output is the same on every run and on both databases; the job's id is the only value read back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from governance import export, export_rows
from governance.models import AuditEvent, Environment, Team
from jobs import run_export
from jobs.models import Run

EVENT_IDS = range(900_001, 900_006)
RUN_IDS = range(800_001, 800_005)
T0 = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)


def _body(response) -> str:
    assert response.status_code == 200, getattr(response, "data", response)
    return b"".join(response.streaming_content).decode()


def _client(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def events(cast):
    evil_team = Team.objects.create(tenant=cast.acme, slug="=team", name="Evil team")
    evil_env = Environment.objects.create(tenant=cast.acme, slug="+env", name="Evil env", order=9)
    common = {"prev_hash": "0" * 64}
    AuditEvent.objects.bulk_create(
        [
            AuditEvent(
                id=EVENT_IDS[0],
                tenant=cast.acme,
                seq=10_001,
                created_at=T0,
                actor_repr='=HYPERLINK("http://x.example/?a=1,b=2")',
                action="+run.triggered",
                object_type="-jobs.job",
                object_id="@42",
                object_repr="\ttabbed",
                team=evil_team,
                environment=evil_env,
                ip="10.1.2.3",
                data={
                    "b": 1,
                    "a": [1, 2.5, None, True, False],
                    "é": "ü 🙂",
                    "z": {"y": 'line\nbreak, "q"', "x": -0.25},
                },
                hash="a" * 64,
                **common,
            ),
            AuditEvent(
                id=EVENT_IDS[1],
                tenant=cast.acme,
                seq=10_002,
                created_at=T0 + timedelta(microseconds=500_000),
                actor_repr='Zoë, "the" admin',
                action="job.paused",
                object_type="jobs.job",
                object_id="7",
                object_repr='line1\r\nline2, with "quotes"',
                team=cast.payments,
                environment=None,
                ip="2001:db8::1",
                data={},
                hash="b" * 64,
                **common,
            ),
            AuditEvent(
                id=EVENT_IDS[2],
                tenant=cast.acme,
                seq=10_003,
                created_at=T0 + timedelta(microseconds=1),
                actor_repr="\rcr",
                action="\nnl",
                object_type="",
                object_id="",
                object_repr="Zürich ☃ 🙂",
                team=None,
                environment=None,
                ip=None,
                data=-5,
                hash="c" * 64,
                **common,
            ),
            AuditEvent(
                id=EVENT_IDS[3],
                tenant=cast.acme,
                seq=10_004,
                created_at=T0 + timedelta(seconds=1, microseconds=120_000),
                actor_repr="@at",
                action="job.created",
                object_type="jobs.job",
                object_id="x,y",
                object_repr="=cmd|' /C calc'!A0",
                team=cast.data,
                environment=cast.prod,
                ip=None,
                data=[{"b": 2, "a": 1}, "=1+1", "\u00e9\t"],
                hash="d" * 64,
                **common,
            ),
            AuditEvent(
                id=EVENT_IDS[4],
                tenant=cast.globex,
                seq=10_001,
                created_at=datetime(2001, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
                actor_repr="plain",
                action="run.triggered",
                object_type="jobs.run",
                object_id="99",
                object_repr="-",
                team=cast.ops,
                environment=cast.globex_prod,
                ip="192.168.0.1",
                data={"k": "v", "n": 12345678901234, "f": 0.1},
                hash="e" * 64,
                **common,
            ),
        ]
    )
    return cast


AUDIT_CSV = (
    "id,tenant,seq,created_at,actor,action,object_type,object_id,object_repr,team,environment,ip,data,prev_hash,hash\r\n"
    '900001,acme,10001,2001-02-03T04:05:06.000000Z,"\'=HYPERLINK(""http://x.example/?a=1,b=2"")",\'+run.triggered,\'-jobs.job,\'@42,\'\ttabbed,\'=team,\'+env,10.1.2.3,"{""a"":[1,2.5,null,true,false],""b"":1,""z"":{""x"":-0.25,""y"":""line\\nbreak, \\""q\\""""},""\\u00e9"":""\\u00fc \\ud83d\\ude42""}",0000000000000000000000000000000000000000000000000000000000000000,aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n'
    '900002,acme,10002,2001-02-03T04:05:06.500000Z,"Zoë, ""the"" admin",job.paused,jobs.job,7,"line1\r\n'
    'line2, with ""quotes""",payments,,2001:db8::1,{},0000000000000000000000000000000000000000000000000000000000000000,bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n'
    "900003,acme,10003,2001-02-03T04:05:06.000001Z,\"'\r"
    'cr","\'\n'
    "nl\",,,Zürich ☃ 🙂,,,,'-5,0000000000000000000000000000000000000000000000000000000000000000,cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\r\n"
    '900004,acme,10004,2001-02-03T04:05:07.120000Z,\'@at,job.created,jobs.job,"x,y",\'=cmd|\' /C calc\'!A0,data,prod,,"[{""a"":1,""b"":2},""=1+1"",""\\u00e9\\t""]",0000000000000000000000000000000000000000000000000000000000000000,dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\r\n'
    '900005,globex,10001,2001-12-31T23:59:59.999999Z,plain,run.triggered,jobs.run,99,\'-,ops,prod,192.168.0.1,"{""f"":0.1,""k"":""v"",""n"":12345678901234}",0000000000000000000000000000000000000000000000000000000000000000,eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\r\n'
)
AUDIT_JSONL = (
    '{"action":"+run.triggered","actor":"=HYPERLINK(\\"http://x.example/?a=1,b=2\\")","created_at":"2001-02-03T04:05:06.000000Z","data":{"a":[1,2.5,null,true,false],"b":1,"z":{"x":-0.25,"y":"line\\nbreak, \\"q\\""},"\\u00e9":"\\u00fc \\ud83d\\ude42"},"environment":"+env","hash":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","id":900001,"ip":"10.1.2.3","object_id":"@42","object_repr":"\\ttabbed","object_type":"-jobs.job","prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","seq":10001,"team":"=team","tenant":"acme"}\n'
    '{"action":"job.paused","actor":"Zo\\u00eb, \\"the\\" admin","created_at":"2001-02-03T04:05:06.500000Z","data":{},"environment":null,"hash":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","id":900002,"ip":"2001:db8::1","object_id":"7","object_repr":"line1\\r\\nline2, with \\"quotes\\"","object_type":"jobs.job","prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","seq":10002,"team":"payments","tenant":"acme"}\n'
    '{"action":"\\nnl","actor":"\\rcr","created_at":"2001-02-03T04:05:06.000001Z","data":-5,"environment":null,"hash":"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc","id":900003,"ip":null,"object_id":"","object_repr":"Z\\u00fcrich \\u2603 \\ud83d\\ude42","object_type":"","prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","seq":10003,"team":null,"tenant":"acme"}\n'
    '{"action":"job.created","actor":"@at","created_at":"2001-02-03T04:05:07.120000Z","data":[{"a":1,"b":2},"=1+1","\\u00e9\\t"],"environment":"prod","hash":"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd","id":900004,"ip":null,"object_id":"x,y","object_repr":"=cmd|\' /C calc\'!A0","object_type":"jobs.job","prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","seq":10004,"team":"data","tenant":"acme"}\n'
    '{"action":"run.triggered","actor":"plain","created_at":"2001-12-31T23:59:59.999999Z","data":{"f":0.1,"k":"v","n":12345678901234},"environment":"prod","hash":"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee","id":900005,"ip":"192.168.0.1","object_id":"99","object_repr":"-","object_type":"jobs.run","prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","seq":10001,"team":"ops","tenant":"globex"}\n'
)


def test_audit_export_bytes_are_pinned_through_the_api_the_command_and_stream(events, tmp_path):
    client = _client(events.superuser)
    # "until" leaves out the events the cast and the export itself record now.
    assert _body(client.get("/api/v1/audit-events/export/", {"until": "2001-12-31"})) == AUDIT_CSV
    assert _body(client.get("/api/v1/audit-events/export/", {"until": "2001-12-31", "format": "jsonl"})) == AUDIT_JSONL
    out = tmp_path / "audit.csv"
    call_command("export_audit", "--until", "2001-12-31", "--output", str(out), stderr=StringIO())
    assert out.read_bytes() == AUDIT_CSV.encode()
    planted = AuditEvent.objects.filter(id__in=EVENT_IDS)
    assert "".join(export.stream(planted, "jsonl")) == AUDIT_JSONL


def test_a_tenant_member_gets_the_same_bytes_for_the_events_they_may_see(events):
    client = _client(events.viewer)
    acme_csv = AUDIT_CSV[: AUDIT_CSV.index(f"{EVENT_IDS[4]},globex,")]
    assert _body(client.get("/api/v1/audit-events/export/", {"until": "2001-12-31"})) == acme_csv
    jsonl = _body(client.get("/api/v1/audit-events/export/", {"until": "2001-12-31", "format": "jsonl"}))
    assert jsonl == "".join(AUDIT_JSONL.splitlines(keepends=True)[:4])
    assert _body(_client(events.outsider).get("/api/v1/audit-events/export/", {"format": "jsonl"})) == ""


@pytest.fixture
def runs(cast):
    job = cast.make_job()
    base = {"job": job, "tenant": cast.acme, "job_version": 1, "definition": {"name": job.name}}
    Run.objects.bulk_create(
        [
            Run(
                id=RUN_IDS[0],
                scheduled_for=T0,
                trigger="schedule",
                status="succeeded",
                attempt=1,
                queued_at=T0 + timedelta(microseconds=1),
                started_at=T0 + timedelta(microseconds=500_000),
                finished_at=T0 + timedelta(seconds=2, microseconds=120_000),
                exit_code=0,
                worker="node-1/123",
                cpu_user_s=0.1,
                cpu_sys_s=1e-05,
                max_rss_kb=123456,
                output_bytes=42,
                reason="",
                **base,
            ),
            Run(
                id=RUN_IDS[1],
                scheduled_for=T0 + timedelta(minutes=5),
                trigger="-manual",
                status="@failed",
                attempt=3,
                exit_code=-9,
                http_status=503,
                worker="=worker",
                cpu_user_s=12.5,
                reason='+reason, "quoted"\nZürich 🙂',
                **base,
            ),
            Run(
                id=RUN_IDS[2],
                scheduled_for=T0 + timedelta(minutes=10, microseconds=999_999),
                status="queued",
                attempt=0,
                worker="",
                reason="\tcell",
                **base,
            ),
        ]
    )
    return job


# {job_id}: the only value not planted (the job goes through change control).
RUNS_CSV = (
    "id,tenant,job,job_id,scheduled_for,trigger,status,attempt,job_version,queued_at,started_at,finished_at,exit_code,http_status,worker,cpu_user_s,cpu_sys_s,max_rss_kb,output_bytes,reason\r\n"
    "800001,acme,payments.ledger.reconcile,{job_id},2001-02-03T04:05:06.000000Z,schedule,succeeded,1,1,2001-02-03T04:05:06.000001Z,2001-02-03T04:05:06.500000Z,2001-02-03T04:05:08.120000Z,0,,node-1/123,0.1,1e-05,123456,42,\r\n"
    '800002,acme,payments.ledger.reconcile,{job_id},2001-02-03T04:10:06.000000Z,\'-manual,\'@failed,3,1,,,,-9,503,\'=worker,12.5,,,0,"\'+reason, ""quoted""\n'
    'Zürich 🙂"\r\n'
    "800003,acme,payments.ledger.reconcile,{job_id},2001-02-03T04:15:06.999999Z,schedule,queued,0,1,,,,,,,,,,0,'\tcell\r\n"
)
RUNS_JSONL = (
    '{"attempt":1,"cpu_sys_s":1e-05,"cpu_user_s":0.1,"exit_code":0,"finished_at":"2001-02-03T04:05:08.120000Z","http_status":null,"id":800001,"job":"payments.ledger.reconcile","job_id":{job_id},"job_version":1,"max_rss_kb":123456,"output_bytes":42,"queued_at":"2001-02-03T04:05:06.000001Z","reason":"","scheduled_for":"2001-02-03T04:05:06.000000Z","started_at":"2001-02-03T04:05:06.500000Z","status":"succeeded","tenant":"acme","trigger":"schedule","worker":"node-1/123"}\n'
    '{"attempt":3,"cpu_sys_s":null,"cpu_user_s":12.5,"exit_code":-9,"finished_at":null,"http_status":503,"id":800002,"job":"payments.ledger.reconcile","job_id":{job_id},"job_version":1,"max_rss_kb":null,"output_bytes":0,"queued_at":null,"reason":"+reason, \\"quoted\\"\\nZ\\u00fcrich \\ud83d\\ude42","scheduled_for":"2001-02-03T04:10:06.000000Z","started_at":null,"status":"@failed","tenant":"acme","trigger":"-manual","worker":"=worker"}\n'
    '{"attempt":0,"cpu_sys_s":null,"cpu_user_s":null,"exit_code":null,"finished_at":null,"http_status":null,"id":800003,"job":"payments.ledger.reconcile","job_id":{job_id},"job_version":1,"max_rss_kb":null,"output_bytes":0,"queued_at":null,"reason":"\\tcell","scheduled_for":"2001-02-03T04:15:06.999999Z","started_at":null,"status":"queued","tenant":"acme","trigger":"schedule","worker":""}\n'
)


def test_run_export_bytes_are_pinned(runs, cast):
    client = _client(cast.viewer)
    body = _body(client.get("/api/v1/runs/export/", {"until": "2001-12-31"}))
    assert body == RUNS_CSV.replace("{job_id}", str(runs.pk))
    body = _body(client.get("/api/v1/runs/export/", {"until": "2001-12-31", "format": "jsonl"}))
    assert body == RUNS_JSONL.replace("{job_id}", str(runs.pk))
    queryset = Run.objects.filter(id__in=RUN_IDS)
    assert "".join(run_export.stream(queryset, "csv")) == RUNS_CSV.replace("{job_id}", str(runs.pk))


@pytest.mark.parametrize(
    "text",
    [
        "2001-02-03 04:05:06+00",
        "2001-02-03 04:05:06.5+00",
        "2001-02-03 04:05:06.000001+00",
        "2001-02-03 04:05:06.123456+00",
        "0099-12-31 23:59:59.9+00",
        # Another session time zone: not the fast path, the same instant.
        "2001-02-03 04:05:06.25+05:30",
        "2001-02-03 04:05:06-08",
    ],
)
def test_postgresql_timestamp_text_becomes_the_utc_text_of_its_instant(text):
    assert export_rows.instant_text(text) == export._instant_text(parse_datetime(text))


def test_date_times_read_naive_are_in_the_databases_zone_and_bad_text_is_refused():
    naive = datetime(2001, 2, 3, 4, 5, 6, 7)
    assert export_rows.instant_text(naive) == "2001-02-03T04:05:06.000007Z"
    assert export_rows.instant_text(naive, ZoneInfo("Europe/Berlin")) == "2001-02-03T03:05:06.000007Z"
    aware = datetime(2001, 2, 3, 4, 5, 6, tzinfo=ZoneInfo("America/New_York"))
    assert export_rows.instant_text(aware) == "2001-02-03T09:05:06.000000Z"
    with pytest.raises(ValueError, match="not a timestamp"):
        export_rows.instant_text("2001-02-03 04:05:06")  # no zone
    with pytest.raises(ValueError, match="not a timestamp"):
        export_rows.instant_text("infinity")


@pytest.mark.parametrize(
    ("text", "value"),
    [('{"b": 1, "a": [true]}', {"a": [True], "b": 1}), (' {"a": 1} ', {"a": 1}), ("[1] x", "[1] x"), ("nope", "nope")],
)
def test_json_text_is_read_as_jsonfield_reads_it(text, value):
    assert export_rows.json_value(text) == value
