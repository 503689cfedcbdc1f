"""A run that fails closed because Vault cannot give its secrets raises exactly one alert naming the job."""

from governance import secrets
from jobs.executor import execute_run
from jobs.models import Alert, AlertKind, Run, RunStatus
from jobs.services import trigger_run
from tests.vault import free_port, put_secret, start_bao

REF = "vault:secret/governor/acme/payments/db#password"


def _execute(cast, job) -> Run:
    run = trigger_run(job, actor=cast.operator, reason="test")
    execute_run(run.pk)
    run.refresh_from_db()
    return run


def test_a_sealed_vault_fails_the_run_and_raises_one_alert_without_the_value(cast, settings, tmp_path):
    marker = tmp_path / "started"
    server = start_bao(tmp_path)
    try:
        settings.VAULT_ADDR = server.addr
        credentials = secrets.setup_approle(server.root_client(), ["acme"])
        settings.VAULT_ROLE_ID, settings.VAULT_SECRET_ID = credentials["role_id"], credentials["secret_id"]
        put_secret(server, "governor/acme/payments/db", {"password": "pw-sealed-away-4711"})
        secrets.reset_client()
        job = cast.make_job(cast.dev, command=["/usr/bin/touch", str(marker)], secrets={"DB_PASSWORD": REF})
        assert secrets.resolve_secrets({"X": REF}, cast.acme) == {"X": "pw-sealed-away-4711"}
        server.root_client().sys.seal()

        run = _execute(cast, job)
    finally:
        server.stop()
        secrets.reset_client()

    assert run.status == RunStatus.FAILED
    assert "sealed" in run.reason
    assert not marker.exists()
    alert = Alert.objects.get()
    assert (alert.run_id, alert.job_id, alert.tenant_id) == (run.pk, job.pk, cast.acme.pk)
    assert alert.kind == AlertKind.SECRETS_UNAVAILABLE
    assert job.name in alert.message and "sealed" in alert.message
    assert "pw-sealed-away-4711" not in alert.message


def test_unreachable_vault_alerts_once_per_run_after_its_retries_are_spent(vault, cast, settings):
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

    other = _execute(cast, cast.make_job(cast.dev, name="payments.ledger.other", secrets={"DB_PASSWORD": REF}))
    assert other.status == RunStatus.FAILED
    assert Alert.objects.filter(run=other).count() == 1


def test_a_denied_or_expired_login_fails_the_run_with_one_alert(vault, cast, settings):
    put_secret(vault, "governor/acme/payments/db", {"password": "pw-expired-0815"})
    job = cast.make_job(cast.dev, command=["/bin/true"], secrets={"DB_PASSWORD": REF})
    root = vault.root_client()
    secrets.resolve_secrets({"X": REF}, cast.acme)
    root.auth.token.revoke(secrets._authenticated_client().token)
    root.auth.approle.destroy_secret_id(role_name=secrets.ROLE_NAME, secret_id=settings.VAULT_SECRET_ID)

    run = _execute(cast, job)

    assert run.status == RunStatus.FAILED
    assert "denied" in run.reason
    alert = Alert.objects.get(run=run)
    assert alert.kind == AlertKind.SECRETS_UNAVAILABLE and "denied" in alert.message
    assert "pw-expired-0815" not in alert.message


def test_a_run_without_secret_trouble_raises_no_secrets_alert(vault, cast):
    put_secret(vault, "governor/acme/payments/db", {"password": "pw-fine-2024"})
    job = cast.make_job(cast.dev, command=["/bin/false"], secrets={"DB_PASSWORD": REF})
    run = _execute(cast, job)
    assert run.status == RunStatus.FAILED
    assert not Alert.objects.exists()
