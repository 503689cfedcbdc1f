"""A run that fails closed because Vault cannot give its secrets (sealed, unreachable, denied,
token expired) never starts its process, is retried within bounds when the trouble may pass,
and raises exactly one alert naming the job once no retry is left."""

import re
import time
from datetime import timedelta

import hvac
import pytest
from django.utils import timezone

from governance import secrets
from jobs.executor import execute_run
from jobs.models import Alert, AlertKind, Run, RunStatus
from jobs.recovery import sweep
from jobs.services import trigger_run
from tests.vault import free_port, put_secret, start_bao

REF = "vault:secret/governor/acme/dev/payments/db#password"


def _execute(cast, job) -> Run:
    run = trigger_run(job, actor=cast.operator, reason="test")
    execute_run(run.pk)
    run.refresh_from_db()
    return run


def _retry(run: Run) -> Run:
    """Let the sweep queue the due retry (as beside the scheduler), then let a worker take it."""
    assert sweep(now=timezone.now() + timedelta(hours=1)).requeued == 1
    execute_run(run.pk)
    run.refresh_from_db()
    return run


@pytest.fixture
def sealed_vault(cast, settings, tmp_path):
    """A dev OpenBao of this test's own (sealing it must not disturb other tests), with acme's secret."""
    server = start_bao(tmp_path)
    settings.VAULT_ADDR = server.addr
    credentials = secrets.setup_approle(server.root_client(), secrets.current_scopes())
    settings.VAULT_ROLE_ID, settings.VAULT_SECRET_ID = credentials["role_id"], credentials["secret_id"]
    put_secret(server, "governor/acme/dev/payments/db", {"password": "pw-sealed-away-4711"})
    secrets.reset_client()
    assert secrets.resolve_secrets({"X": REF}, cast.acme, environment=cast.dev, team=cast.payments) == {
        "X": "pw-sealed-away-4711"
    }
    server.root_client().sys.seal()
    try:
        yield server
    finally:
        server.stop()
        secrets.reset_client()


def test_a_sealed_vault_is_retried_within_bounds_then_fails_with_one_alert(cast, settings, sealed_vault, tmp_path):
    settings.GOVERNOR_SECRETS_MAX_ATTEMPTS = 3
    settings.GOVERNOR_SECRETS_BACKOFF_SECONDS = 0.01
    marker = tmp_path / "started"
    # No retry policy of its own: the process never started, so retrying cannot run it twice.
    job = cast.make_job(cast.dev, command=["/usr/bin/touch", str(marker)], secrets={"DB_PASSWORD": REF})
    run = _execute(cast, job)
    assert run.status == RunStatus.SCHEDULED and "sealed" in run.reason and "attempt 2" in run.reason
    assert not Alert.objects.exists()  # the retry may still succeed
    run = _retry(run)
    assert run.status == RunStatus.SCHEDULED and "attempt 3" in run.reason
    assert not Alert.objects.exists()
    run = _retry(run)

    assert run.status == RunStatus.FAILED and "sealed" in run.reason
    assert not marker.exists()
    assert [(a.number, a.status) for a in run.attempts.order_by("number")] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
    ]
    assert all("sealed" in a.reason for a in run.attempts.all())
    alert = Alert.objects.get()
    assert (alert.run_id, alert.job_id, alert.kind) == (run.pk, job.pk, AlertKind.SECRETS_UNAVAILABLE)
    assert job.name in alert.message and "sealed" in alert.message
    assert "pw-sealed-away-4711" not in alert.message
    assert sweep(now=timezone.now() + timedelta(hours=2)).requeued == 0  # bounded: nothing more


def test_a_vault_unsealed_before_the_retry_lets_the_run_start_without_an_alert(cast, settings, sealed_vault, tmp_path):
    settings.GOVERNOR_SECRETS_BACKOFF_SECONDS = 0.01
    script = 'test "$DB_PASSWORD" = pw-sealed-away-4711 && echo got-the-secret'
    job = cast.make_job(cast.dev, command=["/bin/sh", "-c", script], secrets={"DB_PASSWORD": REF})
    run = _execute(cast, job)
    assert run.status == RunStatus.SCHEDULED and "sealed" in run.reason

    # The dev server prints its single unseal key; an operator would use `bao operator unseal`.
    key = re.search(r"Unseal Key: (\S+)", sealed_vault.log_path.read_text()).group(1)
    client = hvac.Client(url=sealed_vault.addr)
    client.sys.submit_unseal_key(key)
    # Unsealed is not yet serving: wait until the server reports itself active, as an operator would.
    deadline = time.monotonic() + 15
    while client.sys.read_health_status(method="HEAD").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    run = _retry(run)

    assert run.status == RunStatus.SUCCEEDED, run.reason
    assert run.output == "got-the-secret\n"
    assert [(a.number, a.status) for a in run.attempts.order_by("number")] == [(1, "failed"), (2, "succeeded")]
    assert not Alert.objects.exists()


def test_unreachable_vault_alerts_once_per_run_after_its_retries_are_spent(vault, cast, settings):
    settings.GOVERNOR_SECRETS_MAX_ATTEMPTS = 1
    settings.VAULT_ADDR = f"http://127.0.0.1:{free_port()}"
    secrets.reset_client()
    job = cast.make_job(
        cast.dev,
        command=["/bin/true"],
        secrets={"DB_PASSWORD": REF},
        retry={"max_attempts": 2, "backoff_seconds": 0.01, "backoff_cap_seconds": 0.01},
    )
    run = _execute(cast, job)
    assert run.status == RunStatus.SCHEDULED, run.reason
    assert "unreachable" in run.reason
    assert not Alert.objects.exists()  # the retry may still succeed

    Run.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED)
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "unreachable" in run.reason
    assert Alert.objects.filter(run=run, kind=AlertKind.SECRETS_UNAVAILABLE).count() == 1
    assert Alert.objects.count() == 1

    # The job's own max_attempts counts when it is above the bound for Vault trouble.
    settings.GOVERNOR_SECRETS_MAX_ATTEMPTS = 1
    other = _execute(cast, cast.make_job(cast.dev, name="payments.ledger.other", secrets={"DB_PASSWORD": REF}))
    assert other.status == RunStatus.FAILED
    assert Alert.objects.filter(run=other).count() == 1


def test_a_denied_or_expired_login_fails_the_run_with_one_alert(vault, cast, settings):
    put_secret(vault, "governor/acme/dev/payments/db", {"password": "pw-expired-0815"})
    job = cast.make_job(cast.dev, command=["/bin/true"], secrets={"DB_PASSWORD": REF})
    root = vault.root_client()
    secrets.resolve_secrets({"X": REF}, cast.acme, environment=cast.dev, team=cast.payments)
    root.auth.token.revoke(secrets._authenticated_client().token)
    root.auth.approle.destroy_secret_id(role_name=secrets.ROLE_NAME, secret_id=settings.VAULT_SECRET_ID)

    run = _execute(cast, job)

    # A denial does not pass by itself: no retry, at once one alert.
    assert run.status == RunStatus.FAILED
    assert "denied" in run.reason and run.attempts.count() == 1
    alert = Alert.objects.get(run=run)
    assert alert.kind == AlertKind.SECRETS_UNAVAILABLE and "denied" in alert.message
    assert "pw-expired-0815" not in alert.message


def test_a_run_without_secret_trouble_raises_no_secrets_alert(vault, cast):
    put_secret(vault, "governor/acme/dev/payments/db", {"password": "pw-fine-2024"})
    job = cast.make_job(cast.dev, command=["/bin/false"], secrets={"DB_PASSWORD": REF})
    run = _execute(cast, job)
    assert run.status == RunStatus.FAILED
    assert not Alert.objects.exists()
