"""The canary: a unique secret value printed by a job appears nowhere afterwards, except masked."""

import json
import logging
import uuid

import pytest
from django.db import connection
from django_q.tasks import async_task
from rest_framework.test import APIClient

from governance.secrets import MASK
from jobs.executor import execute_run
from jobs.models import Run, RunStatus
from jobs.services import trigger_run
from tests.vault import put_secret

PY = "/usr/bin/python3"


def _run(cast, job) -> Run:
    run = trigger_run(job, actor=cast.operator, reason="canary")
    # Through django-q2 (in-process) so its task tables hold whatever the worker was given.
    async_task("jobs.tasks.execute_run", run.pk, sync=True)
    run.refresh_from_db()
    return run


def _every_table_row_as_text():
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 - introspected names
            for row in cursor.fetchall():
                yield table, repr(row)


def _api_bodies(user, run, job):
    client = APIClient()
    client.force_authenticate(user)
    urls = [
        "/api/v1/jobs/",
        f"/api/v1/jobs/{job.pk}/",
        f"/api/v1/jobs/{job.pk}/history/",
        "/api/v1/runs/",
        f"/api/v1/runs/{run.pk}/",
        "/api/v1/audit-events/",
        "/api/v1/change-requests/",
        "/api/v1/audit-events/export/?format=csv",
        "/api/v1/audit-events/export/?format=jsonl",
        "/api/schema/",
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        yield url, body.decode()


@pytest.mark.django_db(transaction=False)
def test_a_printed_secret_is_masked_and_found_nowhere_else(vault, cast, caplog, capfd):
    canary = f"canary-{uuid.uuid4().hex}"
    put_secret(vault, "governor/acme/dev/payments/canary", {"token": canary})
    ref = "vault:secret/governor/acme/dev/payments/canary#token"
    caplog.set_level(logging.DEBUG)
    printing = cast.make_job(
        cast.dev,
        command=[PY, "-c", "import os; t = os.environ['CANARY']; print('token is', t); print(t.upper(), t)"],
        secrets={"CANARY": ref},
    )
    failing = cast.make_job(
        cast.dev,
        name="payments.ledger.fail-loudly",
        command=[PY, "-c", "import os, sys; sys.exit('failed with ' + os.environ['CANARY'])"],
        secrets={"CANARY": ref},
    )
    ok_run = _run(cast, printing)
    failed_run = _run(cast, failing)

    assert ok_run.status == RunStatus.SUCCEEDED, ok_run.reason
    assert f"token is {MASK}" in ok_run.output
    assert failed_run.status == RunStatus.FAILED
    assert MASK in failed_run.output

    hits = [table for table, row in _every_table_row_as_text() if canary in row]
    assert hits == [], f"secret value found in tables: {sorted(set(hits))}"
    assert ref in json.dumps(ok_run.definition)  # the reference is kept, only the value is not
    for url, body in _api_bodies(cast.admin, ok_run, printing):
        assert canary not in body, url
    captured = capfd.readouterr()
    assert canary not in caplog.text
    assert canary not in captured.out + captured.err


def test_a_run_whose_secret_cannot_be_read_fails_closed_without_starting(vault, cast, tmp_path):
    marker = tmp_path / "started"
    job = cast.make_job(
        cast.dev,
        command=["/usr/bin/touch", str(marker)],
        secrets={"DB_PASSWORD": "vault:secret/governor/acme/dev/payments/absent#password"},
    )
    run = trigger_run(job, actor=cast.operator, reason="test")
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "Vault has no secret" in run.reason
    assert not marker.exists()


def test_a_job_definition_refuses_another_tenants_secret(cast):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as info:
        cast.propose_job(
            environment=cast.dev,
            definition=cast.definition(secrets={"DB": "vault:secret/governor/acme/../globex/db#password"}),
            justification="steal",
        )
    assert "'..'" in info.value.message_dict["secrets.DB"][0]
