"""A client loop for the database failover test (tests/test_ha_db_failover.py), run as its own
process against DATABASE_URL: each step proposes a job in acme/staging, has it approved (one
approval: applied, the job created) and triggers a run of it, through the same services the API
calls. After each committed step it appends ``<step> <change id> <run id> <unix time>`` to the
output file (flushed), so the test knows what was committed. A step that fails on a database
fault is retried, idempotently: its change is found again by the step's tag before proposing anew.
Stops on SIGTERM after the step in hand."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governor.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import DatabaseError, connection  # noqa: E402

from approvals.models import ChangeRequest  # noqa: E402
from approvals.services import approve_change, propose_change  # noqa: E402
from governance.models import Environment, Team  # noqa: E402
from jobs.models import Run  # noqa: E402
from jobs.services import trigger_run  # noqa: E402

stopping = False


def stop(*_):
    global stopping
    stopping = True


def step(i: int, users, team, environment) -> tuple[int, int]:
    tag = f"ha-client step {i}"
    change = ChangeRequest.objects.filter(justification=tag).first()
    if change is None:
        change = propose_change(
            actor=users["acme-author"],
            action="create",
            team=team,
            environment=environment,
            definition={
                "name": f"payments.failover.step-{i}",
                "description": "Failover client step.",
                "runbook": "None.",
                "criticality": "low",
                "command": ["/bin/sh", "-c", "exec sleep 1"],
                "cron": "0 0 1 1 *",
                "timezone": "UTC",
                "timeout_seconds": 60,
            },
            justification=tag,
        )
    if change.status != "applied":
        change = approve_change(change, actor=users["acme-approver"])
    assert change.status == "applied", change.failure_reason
    run = Run.objects.filter(job=change.job).first()  # one triggered run per step's job
    if run is None:
        run = trigger_run(change.job, actor=users["acme-operator"], reason=tag)
    return change.pk, run.pk


def main(out_path: str) -> None:
    signal.signal(signal.SIGTERM, stop)
    users = {u.username: u for u in get_user_model().objects.all()}
    team = Team.objects.get(tenant__slug="acme", slug="payments")
    environment = Environment.objects.get(tenant__slug="acme", slug="staging")
    i = 0
    with open(out_path, "a") as out:
        while not stopping:
            try:
                change_id, run_id = step(i, users, team, environment)
            except DatabaseError as exc:
                print(f"step {i}: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
                sys.stdout.flush()
                # The broken connection is dropped, as Django does between requests (CONN_HEALTH_CHECKS).
                try:
                    connection.close()
                except DatabaseError:
                    pass
                time.sleep(0.1)
                continue
            out.write(f"{i} {change_id} {run_id} {time.time():.3f}\n")
            out.flush()
            i += 1
            time.sleep(0.05)


if __name__ == "__main__":
    main(sys.argv[1])
