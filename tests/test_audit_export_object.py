"""Audit exports filtered by object, the same way on all three surfaces: the audit page (and its
export button), GET /api/v1/audit-events/export/ and ``manage.py export_audit``."""

import csv
import io
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from conftest import PASSWORD
from governance import audit
from governance.models import AuditAction, AuditEvent
from jobs.services import set_paused, trigger_run

URL = "/api/v1/audit-events/export/"


def _api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _rows(response) -> list[dict]:
    assert response.status_code == 200, getattr(response, "data", response)
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.fixture
def jobs(cast):
    job = cast.make_job(cast.dev)
    other = cast.make_job(cast.dev, name="payments.ledger.other")
    trigger_run(job, actor=cast.operator, reason="r")
    set_paused(job, actor=cast.operator, paused=True, reason="maintenance")
    set_paused(other, actor=cast.operator, paused=True, reason="maintenance")
    return job, other


def _job_events(job) -> list[int]:
    return list(
        AuditEvent.objects.filter(object_type="jobs.job", object_id=str(job.pk))
        .order_by("id")
        .values_list("id", flat=True)
    )


@pytest.mark.parametrize("spelling", ["job:{pk}", "jobs.job:{pk}", "JOB:{pk}", " job : {pk} "])
def test_the_api_export_keeps_only_the_named_objects_events(cast, jobs, spelling):
    job, _ = jobs
    rows = _rows(_api(cast.viewer).get(URL, {"object": spelling.format(pk=job.pk)}))
    assert [int(r["id"]) for r in rows] == _job_events(job)
    assert len(rows) == 2  # created, paused (the triggered run is an object of its own)
    assert {(r["object_type"], r["object_id"]) for r in rows} == {("jobs.job", str(job.pk))}


def test_object_type_and_id_as_two_parameters_mean_the_same(cast, jobs):
    job, other = jobs
    client = _api(cast.viewer)
    assert _rows(client.get(URL, {"object_type": "job", "object_id": job.pk})) == _rows(
        client.get(URL, {"object": f"job:{job.pk}"})
    )
    both = _rows(client.get(URL, {"object": "jobs.job", "action": "job.paused"}))
    assert sorted(int(r["object_id"]) for r in both) == sorted([job.pk, other.pk])


def test_another_tenants_object_exports_nothing(cast, jobs):
    theirs = cast.make_job(cast.globex_prod)
    assert _job_events(theirs)
    assert _rows(_api(cast.viewer).get(URL, {"object": f"job:{theirs.pk}"})) == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"object": "job:"}, "object"),
        ({"object": "nonsense:1"}, "object"),
        ({"object": ":12"}, "object"),
        ({"object": "job:1;DROP TABLE"}, "object"),
        ({"object_id": "12"}, "object_type"),
        ({"object_type": "jobs.nope", "object_id": "12"}, "object_type"),
        ({"object_type": "job", "object_id": "../12"}, "object_id"),
        ({"object": "job:1", "object_type": "job"}, "object"),
    ],
)
def test_a_malformed_object_filter_answers_400_and_records_nothing(cast, params, field):
    before = AuditEvent.objects.count()
    response = _api(cast.admin).get(URL, params)
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert AuditEvent.objects.count() == before


def test_the_export_records_its_object_filter(cast, jobs):
    job, _ = jobs
    _rows(_api(cast.viewer).get(URL, {"object": f"job:{job.pk}", "format": "csv"}))
    event = AuditEvent.objects.filter(action=AuditAction.EXPORT).get()
    assert event.actor == cast.viewer
    assert event.data["filters"] == {"object_type": "jobs.job", "object_id": str(job.pk)}


def test_export_queries_do_not_grow_with_the_objects_events(cast, jobs):
    job, _ = jobs
    client = _api(cast.viewer)

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            _rows(client.get(URL, {"object": f"job:{job.pk}"}))
        return len(ctx.captured_queries)

    queries()  # the first request warms per-process caches
    few = queries()
    for i in range(60):
        audit.record(AuditAction.JOB_UPDATED, actor=cast.author, obj=job, data={"i": i})
    assert queries() == few


def test_the_command_filters_by_object_and_is_audited(cast, jobs):
    job, _ = jobs
    out = StringIO()
    call_command("export_audit", "--format", "jsonl", "--object", f"job:{job.pk}", stdout=out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["id"] for r in rows] == _job_events(job)
    out = StringIO()
    call_command("export_audit", "--object-type", "jobs.job", "--object-id", str(job.pk), stdout=out)
    assert len(list(csv.DictReader(io.StringIO(out.getvalue())))) == len(rows)
    recorded = AuditEvent.objects.filter(action=AuditAction.EXPORT, tenant=cast.acme).order_by("id").first()
    assert recorded.data["filters"] == {"object_type": "jobs.job", "object_id": str(job.pk)}


@pytest.mark.parametrize("args", [["--object", "job:"], ["--object", "gadget:1"], ["--object-id", "3"]])
def test_the_command_refuses_a_malformed_object(cast, args):
    before = AuditEvent.objects.count()
    with pytest.raises(CommandError, match="object"):
        call_command("export_audit", *args, stdout=StringIO())
    assert AuditEvent.objects.count() == before


def test_the_audit_page_filters_by_object_and_its_export_button_carries_the_filter(client, cast, jobs):
    job, _ = jobs
    client.login(username=cast.viewer.username, password=PASSWORD)
    response = client.get(reverse("audit_list"), {"object": f"job:{job.pk}"})
    assert response.status_code == 200
    shown = [event.pk for event in response.context["events"]]
    assert sorted(shown) == _job_events(job)
    export_link = f"{reverse('api-audit-export')}?object=job%3A{job.pk}&amp;format=csv"
    assert export_link in response.content.decode()
    exported = client.get(reverse("api-audit-export"), {"object": f"job:{job.pk}", "format": "csv"})
    assert sorted(int(r["id"]) for r in _rows(exported)) == sorted(shown)


def test_the_audit_page_explains_a_malformed_object(client, cast):
    client.login(username=cast.viewer.username, password=PASSWORD)
    response = client.get(reverse("audit_list"), {"object": "gadget:7"})
    assert response.status_code == 400
    assert "Unknown object type" in response.content.decode()
    assert "Export CSV" not in response.content.decode()
