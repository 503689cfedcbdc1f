"""A tenant (environment, team) created after vault_setup gets its Vault policy on commit (real
OpenBao), through a token that may only read and write Governor's policies; an unreachable Vault
never blocks the tenant, fails loudly in the log and the audit trail, and the scheduler's reconcile
heals it."""

import logging

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from approvals.services import propose_change
from conftest import Cast
from governance import secrets
from governance.actors import SYSTEM
from governance.models import AuditAction, AuditEvent, Environment, Role, Team, Tenant
from governance.services import grant_role
from jobs import scheduler_loop
from jobs.executor import execute_run
from jobs.models import RunStatus
from jobs.services import trigger_run
from tests.vault import assert_cannot_read, free_port, put_secret

PY = "/usr/bin/python3"
PRINT_LENGTH = "import os; print('length', len(os.environ['DB_PASSWORD']))"


def _policy_admin_token(vault) -> str:
    """What an operator hands the scheduler: a token limited to the governor policy."""
    created = vault.root_client().auth.token.create(
        policies=[secrets.POLICY_ADMIN_NAME], no_default_policy=True, ttl="1h"
    )
    return created["auth"]["client_token"]


def _tenant_with_job(cast: Cast, slug: str, secret_ref: str, capture):
    tenant = Tenant.objects.get(slug=slug)
    with capture(execute=True):
        team = Team.objects.create(tenant=tenant, slug="payroll", name="Payroll")
        env = Environment.objects.create(tenant=tenant, slug="dev", name="Dev", order=0, required_approvals=0)
    author = get_user_model().objects.create_user(f"{slug}-author")
    grant_role(author, Role.AUTHOR, tenant=tenant, actor=SYSTEM)
    change = cast.propose_job(
        actor=author,
        team=team,
        environment=env,
        definition=cast.definition(
            name="payroll.pay.run",
            command=[PY, "-c", PRINT_LENGTH],
            secrets={"DB_PASSWORD": secret_ref},
            timezone="UTC",
            criticality="medium",
        ),
        justification="payroll",
    )
    assert change.status == "applied", change.failure_reason
    return change.job, author


def _run(job, actor):
    run = trigger_run(job, actor=actor, reason="policy test")
    execute_run(run.pk)
    run.refresh_from_db()
    return run


def test_a_new_tenants_job_reads_its_own_secret_and_still_not_another_tenants(
    vault, cast, settings, django_capture_on_commit_callbacks
):
    settings.VAULT_POLICY_TOKEN = _policy_admin_token(vault)
    put_secret(vault, "governor/initech/dev/payroll/db", {"password": "initech-pw"})
    put_secret(vault, "governor/acme/dev/payments/db", {"password": "acme-password"})

    with django_capture_on_commit_callbacks(execute=True):
        initech = Tenant.objects.create(slug="initech", name="Initech")
    # No environment yet: nothing new to write.
    assert not AuditEvent.objects.filter(action=AuditAction.VAULT_POLICY_APPLIED).exists()

    job, author = _tenant_with_job(
        cast, "initech", "vault:secret/governor/initech/dev/payroll/db#password", django_capture_on_commit_callbacks
    )
    applied = AuditEvent.objects.get(action=AuditAction.VAULT_POLICY_APPLIED)
    assert applied.tenant == initech
    assert applied.data == {"reason": "team payroll created", "tenants": 3, "scopes": 5}
    policy = vault.root_client().sys.read_acl_policy(name="governor-run.initech.dev")["data"]["policy"]
    assert policy == 'path "secret/data/governor/initech/dev/*" {\n  capabilities = ["read"]\n}\n'

    run = _run(job, author)
    assert run.status == RunStatus.SUCCEEDED, run.reason
    assert "length 10" in run.output

    # Another tenant's path: refused by the definition, and by Vault for a prefix no tenant owns.
    with pytest.raises(Exception, match="must live under"):
        propose_change(
            actor=author,
            action="update",
            job=job,
            definition={"secrets": {"DB_PASSWORD": "vault:secret/governor/acme/dev/payments/db#password"}},
            justification="steal",
        )
    put_secret(vault, "governor/hooli/dev/db", {"password": "hooli-pw"})
    hooli = Tenant(slug="hooli")
    with pytest.raises(secrets.SecretError, match="denied"):
        secrets.resolve_secrets(
            {"X": "vault:secret/governor/hooli/dev/db#password"},
            hooli,
            environment=Environment(tenant=hooli, slug="dev"),
            team=Team(tenant=hooli, slug="x"),
        )


def test_the_policy_token_cannot_do_more_than_rewrite_governors_policies(vault, cast, settings):
    import hvac

    client = hvac.Client(url=vault.addr, token=_policy_admin_token(vault))
    put_secret(vault, "governor/acme/dev/payments/db", {"password": "acme-password"})
    assert_cannot_read(client, "governor/acme/dev/payments/db")
    for name in ("escalate", "default", "root", secrets.POLICY_ADMIN_NAME):
        with pytest.raises((hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest)):
            client.sys.create_or_update_policy(name=name, policy='path "*" { capabilities = ["sudo"] }')
    with pytest.raises(hvac.exceptions.Forbidden):
        client.auth.token.create(policies=["governor-run.acme.dev"], ttl="60s")


def test_an_unreachable_vault_never_blocks_the_tenant_and_fails_loudly_then_the_scheduler_heals_it(
    vault, cast, settings, django_capture_on_commit_callbacks, caplog
):
    settings.VAULT_POLICY_TOKEN = _policy_admin_token(vault)
    settings.VAULT_ADDR = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.INFO, logger="governance.secrets")

    with django_capture_on_commit_callbacks(execute=True):
        initech = Tenant.objects.create(slug="initech", name="Initech")
        team = Team.objects.create(tenant=initech, slug="payroll", name="Payroll")
        env = Environment.objects.create(tenant=initech, slug="dev", name="Dev")
    assert Tenant.objects.filter(pk=initech.pk).exists()
    failed = AuditEvent.objects.filter(action=AuditAction.VAULT_POLICY_FAILED)
    assert failed.count() == 3 and {event.tenant for event in failed} == {initech}
    assert all("unreachable" in event.data["error"] for event in failed)
    assert any(r.levelno == logging.ERROR and "Vault policy NOT updated" in r.getMessage() for r in caplog.records)

    # Vault is back: the scheduler's periodic reconcile writes the policy once, then leaves it alone.
    settings.VAULT_ADDR = vault.addr
    scheduler_loop.reconcile_vault_policy(0.0)
    assert AuditEvent.objects.filter(action=AuditAction.VAULT_POLICY_APPLIED, tenant=None).count() == 1
    assert "governor-run.initech.dev" in vault.root_client().sys.list_acl_policies()["data"]["keys"]
    scheduler_loop.reconcile_vault_policy(0.0)
    assert AuditEvent.objects.filter(action=AuditAction.VAULT_POLICY_APPLIED).count() == 1
    put_secret(vault, "governor/initech/dev/payroll/db", {"password": "initech-pw"})
    values = secrets.resolve_secrets(
        {"DB_PASSWORD": "vault:secret/governor/initech/dev/payroll/db#password"}, initech, environment=env, team=team
    )
    assert values == {"DB_PASSWORD": "initech-pw"}


def test_seed_demo_tenants_are_covered_as_they_are_created(vault, db, settings, django_capture_on_commit_callbacks):
    settings.VAULT_POLICY_TOKEN = _policy_admin_token(vault)
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", verbosity=0)
    policies = set(vault.root_client().sys.list_acl_policies()["data"]["keys"])
    for env in Environment.objects.select_related("tenant"):
        assert f"governor-run.{env.tenant.slug}.{env.slug}" in policies


def test_vault_setup_policy_only_rewrites_the_policy_without_a_new_secret_id(vault, cast, capsys):
    Tenant.objects.create(slug="initech", name="Initech")
    Environment.objects.create(tenant=Tenant.objects.get(slug="initech"), slug="dev", name="Dev")
    call_command("vault_setup", "--policy-only", "--root-token", vault.root_token)
    assert "policies cover 3 tenant(s) in 5 scope(s)" in capsys.readouterr().out
    assert "governor-run.initech.dev" in vault.root_client().sys.list_acl_policies()["data"]["keys"]
