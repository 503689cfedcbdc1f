"""Reading secrets from a real OpenBao dev server through AppRole; failing closed with a clear reason."""

import hvac
import pytest

from governance import secrets
from governance.models import AuditAction, AuditEvent, Environment, Team, Tenant
from governance.secrets import SecretError, resolve_secrets
from tests.vault import assert_cannot_read, put_secret, start_bao

REF = "vault:secret/governor/acme/dev/payments/db#password"


def test_it_reads_a_value_under_the_tenants_prefix_and_audits_the_path_only(vault, cast):
    put_secret(vault, "governor/acme/dev/payments/db", {"password": "s3cr3t-value-123", "user": "ledger"})
    values = resolve_secrets({"DB_PASSWORD": REF}, cast.acme, environment=cast.dev, team=cast.payments)
    assert values == {"DB_PASSWORD": "s3cr3t-value-123"}
    event = AuditEvent.objects.filter(action=AuditAction.SECRET_READ).get()
    assert event.tenant == cast.acme and event.data == {"reference": REF, "env": "DB_PASSWORD"}
    assert "s3cr3t-value-123" not in str(event.__dict__)


def test_the_app_logs_in_with_approle_not_the_root_token(vault, cast):
    put_secret(vault, "governor/acme/dev/payments/db", {"password": "x-value"})
    resolve_secrets({"DB_PASSWORD": REF}, cast.acme, environment=cast.dev, team=cast.payments)
    client = secrets._authenticated_client()
    assert client.token != vault.root_token
    me = vault.root_client().auth.token.lookup(client.token)["data"]
    assert me["policies"] == ["governor"]
    assert me["ttl"] > 0


def test_the_approle_policy_cannot_read_outside_the_tenant_prefixes(vault, cast):
    put_secret(vault, "platform/root-ca", {"key": "platform-only"})
    client = secrets._authenticated_client()
    assert_cannot_read(client, "platform/root-ca")
    with pytest.raises(hvac.exceptions.Forbidden):
        client.sys.create_or_update_policy(name="escalate", policy='path "*" { capabilities = ["sudo"] }')


def test_a_tenant_missing_from_the_policies_is_denied_with_a_clear_reason(vault, cast):
    initech = Tenant.objects.create(slug="initech", name="Initech")
    team = Team.objects.create(tenant=initech, slug="payroll", name="Payroll")
    env = Environment.objects.create(tenant=initech, slug="dev", name="Dev")
    put_secret(vault, "governor/initech/dev/db", {"password": "initech-pw"})
    with pytest.raises(SecretError, match="denied") as info:
        resolve_secrets(
            {"DB_PASSWORD": "vault:secret/governor/initech/dev/db#password"}, initech, environment=env, team=team
        )
    assert not info.value.transient
    assert "initech-pw" not in str(info.value)


def test_traversal_into_another_tenant_is_refused_before_vault_is_asked(vault, cast):
    put_secret(vault, "governor/globex/db", {"password": "globex-pw"})
    with pytest.raises(SecretError, match="'..'"):
        resolve_secrets(
            {"X": "vault:secret/governor/acme/dev/../../globex/dev/db#password"},
            cast.acme,
            environment=cast.dev,
            team=cast.payments,
        )
    with pytest.raises(SecretError, match="must live under"):
        resolve_secrets(
            {"X": "vault:secret/governor/globex/db#password"}, cast.acme, environment=cast.dev, team=cast.payments
        )
    assert not AuditEvent.objects.filter(action=AuditAction.SECRET_READ).exists()


def test_a_missing_secret_or_key_fails_with_the_path_named(vault, cast):
    with pytest.raises(SecretError, match="no secret for reading vault:secret/governor/acme/dev/nothing#k"):
        resolve_secrets(
            {"X": "vault:secret/governor/acme/dev/nothing#k"}, cast.acme, environment=cast.dev, team=cast.payments
        )
    put_secret(vault, "governor/acme/dev/payments/db", {"user": "ledger"})
    with pytest.raises(SecretError, match="has no key 'password'"):
        resolve_secrets({"X": REF}, cast.acme, environment=cast.dev, team=cast.payments)


def test_an_empty_value_is_refused_rather_than_run_with(vault, cast):
    put_secret(vault, "governor/acme/dev/payments/db", {"password": ""})
    with pytest.raises(SecretError, match="empty"):
        resolve_secrets({"X": REF}, cast.acme, environment=cast.dev, team=cast.payments)


def test_unreachable_vault_fails_closed_as_transient(vault, cast, settings):
    from tests.vault import free_port

    settings.VAULT_ADDR = f"http://127.0.0.1:{free_port()}"
    secrets.reset_client()
    with pytest.raises(SecretError, match="unreachable") as info:
        resolve_secrets({"X": REF}, cast.acme, environment=cast.dev, team=cast.payments)
    assert info.value.transient


def test_a_sealed_vault_fails_closed_as_transient(cast, settings, tmp_path):
    server = start_bao(tmp_path)
    try:
        settings.VAULT_ADDR = server.addr
        credentials = secrets.setup_approle(server.root_client(), secrets.current_scopes())
        settings.VAULT_ROLE_ID, settings.VAULT_SECRET_ID = credentials["role_id"], credentials["secret_id"]
        put_secret(server, "governor/acme/dev/payments/db", {"password": "pw-before-seal"})
        secrets.reset_client()
        assert resolve_secrets({"X": REF}, cast.acme, environment=cast.dev, team=cast.payments) == {
            "X": "pw-before-seal"
        }
        server.root_client().sys.seal()
        with pytest.raises(SecretError, match="sealed") as info:
            resolve_secrets({"X": REF}, cast.acme, environment=cast.dev, team=cast.payments)
        assert info.value.transient
    finally:
        server.stop()
        secrets.reset_client()


def test_an_expired_or_revoked_token_with_no_way_to_log_in_again_fails_closed(vault, cast, settings):
    put_secret(vault, "governor/acme/dev/payments/db", {"password": "pw"})
    resolve_secrets({"X": REF}, cast.acme, environment=cast.dev, team=cast.payments)
    root = vault.root_client()
    root.auth.token.revoke(secrets._authenticated_client().token)
    root.auth.approle.destroy_secret_id(role_name=secrets.ROLE_NAME, secret_id=settings.VAULT_SECRET_ID)
    with pytest.raises(SecretError, match="denied") as info:
        resolve_secrets({"X": REF}, cast.acme, environment=cast.dev, team=cast.payments)
    assert "expired" in str(info.value)


def test_a_revoked_token_is_replaced_by_a_fresh_approle_login(vault, cast):
    put_secret(vault, "governor/acme/dev/payments/db", {"password": "pw"})
    resolve_secrets({"X": REF}, cast.acme, environment=cast.dev, team=cast.payments)
    old = secrets._authenticated_client().token
    vault.root_client().auth.token.revoke(old)
    assert resolve_secrets({"X": REF}, cast.acme, environment=cast.dev, team=cast.payments) == {"X": "pw"}
    assert secrets._authenticated_client().token != old


def test_vault_setup_command_writes_private_credentials(vault, cast, settings, tmp_path):
    import json
    import os
    from io import StringIO

    from django.core.management import call_command

    target = tmp_path / "approle.json"
    out = StringIO()
    call_command("vault_setup", "--root-token", vault.root_token, "--output", str(target), stdout=out)
    assert os.stat(target).st_mode & 0o777 == 0o600
    credentials = json.loads(target.read_text())
    assert credentials["secret_id"] not in out.getvalue()
    assert vault.root_client().sys.read_policy(name="governor")["data"]["rules"] == secrets.APPROLE_POLICY
    policies = vault.root_client().sys.list_acl_policies()["data"]["keys"]
    assert {"governor-run.acme.dev", "governor-run.acme.prod", "governor-run.globex.prod"} <= set(policies)
    assert "2 tenant(s) in 4 scope(s)" in out.getvalue()
    settings.VAULT_ROLE_ID = settings.VAULT_SECRET_ID = ""
    settings.VAULT_APPROLE_FILE = str(target)
    secrets.reset_client()
    put_secret(vault, "governor/acme/dev/payments/db", {"password": "from-file"})
    assert resolve_secrets({"X": REF}, cast.acme, environment=cast.dev, team=cast.payments) == {"X": "from-file"}
