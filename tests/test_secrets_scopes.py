"""Secrets are scoped to the job's tenant and environment (and team, where the tenant says so):
refused when a change is proposed (API, manifests), again when a run starts, and by Vault itself,
whose per-run token reads only the run's own prefix (real OpenBao)."""

import io
import json

import hvac
import pytest
from django.core.management import call_command

from approvals.models import ChangeRequest
from governance import secrets
from governance.models import AuditAction, AuditEvent, Environment
from jobs.executor import execute_run
from jobs.models import AlertKind, Job, RunStatus
from jobs.services import trigger_run
from manifests.loader import read_text
from manifests.plan import make_plan
from tests.api_support import client_for
from tests.vault import assert_cannot_read, put_secret

PY = "/usr/bin/python3"
# What the author of the reported hole ran: masking catches only the exact value.
PRINT_REVERSED = "import os; print('got', os.environ['DB_PASSWORD'][::-1])"
PROD_REF = "vault:secret/governor/acme/prod/db#password"
DEV_REF = "vault:secret/governor/acme/dev/db#password"
PROD_VALUE = "prod-password-4711"


def _propose(cast, environment, secrets_map, *, team=None, user=None):
    body = {
        "action": "create",
        "team": (team or cast.payments).pk,
        "environment": environment.pk,
        "justification": "secrets",
        "definition": cast.definition(secrets=secrets_map, timezone="UTC"),
    }
    return client_for(user or cast.author).post("/api/v1/change-requests/", body, format="json")


def _nothing_written():
    assert not ChangeRequest.objects.exists() and not Job.objects.exists()
    # The cast's own role grants, and nothing since (the project records no access.denied for a 400).
    assert not AuditEvent.objects.exclude(action__in=[AuditAction.ROLE_GRANTED, AuditAction.ACCESS_DENIED]).exists()


# --- at proposal ------------------------------------------------------------------------------


def test_a_dev_job_naming_the_tenants_prod_secret_is_refused_by_the_api(cast):
    response = _propose(cast, cast.dev, {"DB_PASSWORD": PROD_REF})
    assert response.status_code == 400
    assert response.json() == {
        "secrets.DB_PASSWORD": ["Secrets of acme/dev jobs must live under 'secret/governor/acme/dev/...'."]
    }
    _nothing_written()


def test_a_dev_job_naming_its_own_environments_secret_is_accepted_and_applies_at_once(cast):
    response = _propose(cast, cast.dev, {"DB_PASSWORD": DEV_REF})
    assert response.status_code == 201, response.json()
    assert Job.objects.get().secrets == {"DB_PASSWORD": DEV_REF}


def test_a_staging_job_may_not_borrow_dev_or_prod_secrets_either(cast):
    for ref in (DEV_REF, PROD_REF, "vault:secret/governor/acme/db#password"):
        response = _propose(cast, cast.staging, {"DB_PASSWORD": ref})
        assert response.status_code == 400
        assert "secret/governor/acme/staging/..." in response.json()["secrets.DB_PASSWORD"][0]
    _nothing_written()


def test_a_reference_into_another_tenant_answers_like_any_path_outside_the_prefix(cast):
    other_tenant = _propose(cast, cast.prod, {"DB_PASSWORD": "vault:secret/governor/globex/prod/db#password"})
    no_tenant = _propose(cast, cast.prod, {"DB_PASSWORD": "vault:secret/governor/nosuch/prod/db#password"})
    traversal = _propose(cast, cast.prod, {"DB_PASSWORD": "vault:secret/governor/acme/prod/../../globex/prod/db#pw"})
    assert other_tenant.status_code == no_tenant.status_code == traversal.status_code == 400
    assert other_tenant.json() == no_tenant.json()
    assert "'..'" in traversal.json()["secrets.DB_PASSWORD"][0]
    _nothing_written()


def test_a_team_scoped_tenants_payments_job_naming_a_data_team_secret_is_refused(cast):
    cast.acme.secrets_by_team = True
    cast.acme.save()
    response = _propose(cast, cast.dev, {"DB_PASSWORD": "vault:secret/governor/acme/dev/data/warehouse#password"})
    assert response.status_code == 400
    assert response.json() == {
        "secrets.DB_PASSWORD": [
            "Secrets of acme/dev/payments jobs must live under 'secret/governor/acme/dev/payments/...'."
        ]
    }
    # The environment-wide prefix is no longer enough either.
    assert _propose(cast, cast.dev, {"DB_PASSWORD": DEV_REF}).status_code == 400
    _nothing_written()
    ok = _propose(cast, cast.dev, {"DB_PASSWORD": "vault:secret/governor/acme/dev/payments/db#password"})
    assert ok.status_code == 201, ok.json()


def test_promoting_a_dev_job_points_its_secrets_at_the_next_environments_prefix(cast):
    job = cast.make_job(
        cast.dev, secrets={"DB_PASSWORD": DEV_REF, "API": "vault:secret/governor/acme/dev/payments/api#token"}
    )
    response = client_for(cast.author).post(
        "/api/v1/change-requests/promote/", {"job": job.pk, "justification": "tested in dev"}, format="json"
    )
    assert response.status_code == 201, response.json()
    change = ChangeRequest.objects.get(pk=response.json()["id"])
    assert change.environment == cast.staging
    assert change.proposed["secrets"] == {
        "DB_PASSWORD": "vault:secret/governor/acme/staging/db#password",
        "API": "vault:secret/governor/acme/staging/payments/api#token",
    }


MANIFEST = """\
apiVersion: governor/v1
kind: Jobs
tenant: acme
team: payments
jobs:
  - name: payments.ledger.reconcile
    environments: [dev, prod]
    command: [/bin/true]
    cron: "0 * * * *"
    timezone: UTC
    secrets:
      DB_PASSWORD: "vault:secret/governor/acme/prod/db#password"
"""


def test_a_manifest_giving_dev_the_prod_secret_is_refused_at_plan_and_apply(cast):
    plan = make_plan(read_text(MANIFEST, "payments.yaml"), actor=cast.author, for_apply=True)
    assert [str(p) for p in plan.problems] == [
        "payments.yaml:12:20: secrets.DB_PASSWORD: Secrets of acme/dev jobs must live under "
        "'secret/governor/acme/dev/...'. (in dev)"
    ]
    client = client_for(cast.author)
    body = {"files": [{"path": "payments.yaml", "content": MANIFEST}]}
    for url in ("/api/v1/manifests/plan/", "/api/v1/manifests/apply/"):
        response = client.post(url, body, format="json")
        assert response.status_code == 400, (url, response.json())
        assert "secret/governor/acme/dev/..." in response.json()["errors"][0]["message"]
    _nothing_written()


def test_a_manifest_with_each_environments_own_secret_plans_cleanly(cast):
    text = MANIFEST + '    overrides:\n      dev:\n        secrets:\n          DB_PASSWORD: "' + DEV_REF + '"\n'
    plan = make_plan(read_text(text, "payments.yaml"), actor=cast.author, for_apply=True)
    assert not plan.problems, [str(p) for p in plan.problems]


def test_offline_validation_knows_a_team_scoped_tenant_from_its_tenant_document(db):
    from manifests.validate import check

    text = (
        "apiVersion: governor/v1\nkind: Tenant\ntenant: acme\nsecrets_by_team: true\n"
        "teams: [payments, data]\nenvironments: [dev]\n---\n"
        + MANIFEST.replace("[dev, prod]", "[dev]").replace("acme/prod/db", "acme/dev/data/db")
    )
    problems = [str(p) for p in check(read_text(text, "acme.yaml"), against_server=False).problems]
    assert problems == [
        "acme.yaml:19:20: secrets.DB_PASSWORD: Secrets of acme/dev/payments jobs must live under "
        "'secret/governor/acme/dev/payments/...'."
    ]


# --- at run start -----------------------------------------------------------------------------


def _dev_job_now_pointing_at(cast, reference, *, team=None):
    """A dev job whose stored reference no longer validates (written before scoping, or before the
    tenant switched to team scoping): the definition check is bypassed on purpose."""
    job = cast.make_job(
        cast.dev,
        team=team,
        command=[PY, "-c", PRINT_REVERSED],
        secrets={"DB_PASSWORD": DEV_REF},
        timezone="UTC",
        **({"name": "data.warehouse.load"} if team == cast.data else {}),
    )
    Job.objects.filter(pk=job.pk).update(secrets={"DB_PASSWORD": reference})
    job.refresh_from_db()
    return job


def _run(cast, job):
    run = trigger_run(job, actor=cast.operator, reason="scope test")
    execute_run(run.pk)
    run.refresh_from_db()
    return run


def test_a_dev_run_referencing_the_prod_secret_fails_at_start_and_reads_nothing(vault, cast):
    put_secret(vault, "governor/acme/prod/db", {"password": PROD_VALUE})
    job = _dev_job_now_pointing_at(cast, PROD_REF)
    run = _run(cast, job)
    assert run.status == RunStatus.FAILED
    assert "secrets.DB_PASSWORD" in run.reason and "secret/governor/acme/dev/..." in run.reason
    assert PROD_VALUE[::-1] not in run.output and PROD_VALUE not in run.output
    assert not AuditEvent.objects.filter(action=AuditAction.SECRET_READ).exists()
    assert job.alerts.filter(kind=AlertKind.SECRETS_UNAVAILABLE).exists()


def test_a_dev_run_reads_its_own_environments_secret(vault, cast):
    put_secret(vault, "governor/acme/dev/db", {"password": "dev-password-1"})
    job = _dev_job_now_pointing_at(cast, DEV_REF)
    run = _run(cast, job)
    assert run.status == RunStatus.SUCCEEDED, run.reason
    assert "got " + "dev-password-1"[::-1] in run.output


def test_after_a_switch_to_team_scoping_an_environment_wide_reference_fails_at_start(vault, cast):
    put_secret(vault, "governor/acme/dev/db", {"password": "dev-password-1"})
    job = _dev_job_now_pointing_at(cast, DEV_REF)
    cast.acme.secrets_by_team = True
    cast.acme.save()
    vault.sync_policies()
    run = _run(cast, job)
    assert run.status == RunStatus.FAILED
    assert "secret/governor/acme/dev/payments/..." in run.reason


# --- Vault itself -----------------------------------------------------------------------------


def test_vault_refuses_a_dev_run_token_reading_prod_even_past_our_check(vault, cast):
    put_secret(vault, "governor/acme/prod/db", {"password": PROD_VALUE})
    put_secret(vault, "governor/acme/dev/db", {"password": "dev-password-1"})
    dev = secrets.SecretScope("acme", "dev")
    # The low-level read, with no check of ours: only Vault stands in the way.
    with pytest.raises(secrets.SecretError, match="Vault denied reading") as info:
        secrets.read_values(
            secrets.run_client(dev, uses=2),
            {"DB_PASSWORD": secrets.SecretRef("secret", "governor/acme/prod/db", "password")},
        )
    assert PROD_VALUE not in str(info.value)
    for other in ("governor/globex/prod/db", "governor/acme/staging/db", "governor/acme/dev-old/db"):
        with pytest.raises(secrets.SecretError, match="denied"):
            secrets.read_values(secrets.run_client(dev, uses=1), {"X": secrets.SecretRef("secret", other, "password")})
    values = secrets.read_values(
        secrets.run_client(dev, uses=1), {"X": secrets.SecretRef("secret", "governor/acme/dev/db", "password")}
    )
    assert values == {"X": "dev-password-1"}


def test_a_dev_run_with_our_check_broken_still_gets_no_prod_secret_from_vault(vault, cast, monkeypatch):
    """A bug that lets every reference through (simulated by replacing the check) still meets
    Vault: the run's token holds only the dev policy."""
    put_secret(vault, "governor/acme/prod/db", {"password": PROD_VALUE})
    job = _dev_job_now_pointing_at(cast, PROD_REF)
    real = secrets.parse_reference

    def no_check(reference, scope):
        return real(reference, secrets.SecretScope(scope.tenant, "prod"))

    monkeypatch.setattr(secrets, "parse_reference", no_check)
    run = _run(cast, job)
    assert run.status == RunStatus.FAILED
    assert "Vault denied reading vault:secret/governor/acme/prod/db#password" in run.reason
    assert PROD_VALUE[::-1] not in run.output and PROD_VALUE not in run.output
    assert not AuditEvent.objects.filter(action=AuditAction.SECRET_READ).exists()


def test_vault_refuses_a_payments_token_reading_the_data_teams_secret(vault, cast):
    cast.acme.secrets_by_team = True
    cast.acme.save()
    vault.sync_policies()
    put_secret(vault, "governor/acme/dev/data/warehouse", {"password": "data-team-pw"})
    put_secret(vault, "governor/acme/dev/payments/db", {"password": "payments-pw"})
    payments = secrets.SecretScope.of(cast.acme, cast.dev, cast.payments)
    with pytest.raises(secrets.SecretError, match="denied"):
        secrets.read_values(
            secrets.run_client(payments, uses=1),
            {"X": secrets.SecretRef("secret", "governor/acme/dev/data/warehouse", "password")},
        )
    own = {"X": secrets.SecretRef("secret", "governor/acme/dev/payments/db", "password")}
    assert secrets.read_values(secrets.run_client(payments, uses=1), own) == {"X": "payments-pw"}
    # The environment-wide policy is gone: a token for it reads nothing.
    with pytest.raises(secrets.SecretError, match="denied"):
        secrets.read_values(secrets.run_client(secrets.SecretScope("acme", "dev"), uses=1), {"X": own["X"]})


def test_a_run_token_is_short_lived_not_renewable_and_used_up(vault, cast):
    put_secret(vault, "governor/acme/dev/db", {"password": "dev-password-1"})
    client = secrets.run_client(secrets.SecretScope("acme", "dev"), uses=1)
    info = vault.root_client().auth.token.lookup(client.token)["data"]
    assert info["policies"] == ["governor-run.acme.dev"]
    assert info["renewable"] is False and 0 < info["ttl"] <= secrets.RUN_TOKEN_TTL_SECONDS
    assert info["num_uses"] == 1
    ref = {"X": secrets.SecretRef("secret", "governor/acme/dev/db", "password")}
    assert secrets.read_values(client, ref) == {"X": "dev-password-1"}
    with pytest.raises(secrets.SecretError):
        secrets.read_values(client, ref)


def test_the_approle_token_reads_no_secret_and_mints_only_scope_tokens(vault, cast):
    put_secret(vault, "governor/acme/dev/db", {"password": "dev-password-1"})
    approle = secrets._authenticated_client()
    assert_cannot_read(approle, "governor/acme/dev/db")
    for policies in (["governor"], ["root"], [secrets.POLICY_ADMIN_NAME], ["default"]):
        with pytest.raises(hvac.exceptions.InvalidRequest):
            approle.auth.token.create(policies=policies, role_name=secrets.RUN_TOKEN_ROLE, ttl="60s")
    with pytest.raises(hvac.exceptions.Forbidden):
        approle.auth.token.create(policies=["governor-run.acme.dev"], ttl="60s")


def test_a_new_environment_gets_its_policy_on_commit(vault, cast, settings, django_capture_on_commit_callbacks):
    settings.VAULT_POLICY_TOKEN = vault.root_token
    with django_capture_on_commit_callbacks(execute=True):
        qa = Environment.objects.create(tenant=cast.acme, slug="qa", name="QA", order=1)
    policies = vault.root_client().sys.list_acl_policies()["data"]["keys"]
    assert "governor-run.acme.qa" in policies
    text = vault.root_client().sys.read_acl_policy(name="governor-run.acme.qa")["data"]["policy"]
    assert text == 'path "secret/data/governor/acme/qa/*" {\n  capabilities = ["read"]\n}\n'
    event = AuditEvent.objects.get(action=AuditAction.VAULT_POLICY_APPLIED)
    assert event.tenant == cast.acme and event.data["reason"] == "environment qa created"
    with django_capture_on_commit_callbacks(execute=True):
        qa.delete()
    assert "governor-run.acme.qa" not in vault.root_client().sys.list_acl_policies()["data"]["keys"]


# --- migrating references -------------------------------------------------------------------


def test_check_secrets_lists_every_job_left_behind_and_rewrites_nothing(cast):
    old = cast.make_job(cast.dev, secrets={"DB_PASSWORD": DEV_REF, "API": "vault:secret/governor/acme/dev/api#k"})
    Job.objects.filter(pk=old.pk).update(
        secrets={"DB_PASSWORD": "vault:secret/governor/acme/payments/db#password", "API": DEV_REF}
    )
    cast.make_job(cast.dev, team=cast.data, secrets={"TOKEN": "vault:secret/governor/acme/dev/data/t#k"})
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("check_secrets", "--json", stdout=out)
    assert exit_info.value.code == 1
    report = json.loads(out.getvalue())
    assert report["jobs_checked"] == 2 and not report["ok"]
    assert report["problems"] == [
        {
            "tenant": "acme",
            "environment": "dev",
            "team": "payments",
            "job": "payments.ledger.reconcile",
            "field": "secrets.DB_PASSWORD",
            "reference": "vault:secret/governor/acme/payments/db#password",
            "allowed": "secret/governor/acme/dev/...",
            "error": "Secrets of acme/dev jobs must live under 'secret/governor/acme/dev/...'.",
        }
    ]
    old.refresh_from_db()
    assert old.secrets["DB_PASSWORD"] == "vault:secret/governor/acme/payments/db#password"

    out = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("check_secrets", stdout=out)
    assert out.getvalue().splitlines() == [
        "acme/dev payments.ledger.reconcile: secrets.DB_PASSWORD = vault:secret/governor/acme/payments/db#password "
        "is outside secret/governor/acme/dev/...",
        "check_secrets: 1 of 2 job(s) with secrets no longer validate (1 reference(s)); "
        "their runs fail at start until fixed.",
    ]
    # Turning on team scoping: the check lists what would break before anyone runs it.
    cast.acme.secrets_by_team = True
    cast.acme.save()
    out = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("check_secrets", "--json", stdout=out)
    fields = sorted((p["job"], p["field"]) for p in json.loads(out.getvalue())["problems"])
    assert fields == [
        ("payments.ledger.reconcile", "secrets.API"),
        ("payments.ledger.reconcile", "secrets.DB_PASSWORD"),
    ]


def test_the_scheduler_names_the_jobs_left_behind_when_it_starts(cast, caplog):
    from jobs.management.commands.run_scheduler import _report_stale_secret_references

    job = cast.make_job(cast.dev, secrets={"DB_PASSWORD": DEV_REF})
    Job.objects.filter(pk=job.pk).update(secrets={"DB_PASSWORD": "vault:secret/governor/acme/payments/db#password"})
    _report_stale_secret_references()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        "job acme/dev payments.ledger.reconcile: secrets.DB_PASSWORD = "
        "vault:secret/governor/acme/payments/db#password is outside secret/governor/acme/dev/...; "
        "its runs fail at start",
        "1 secret reference(s) outside their job's prefix; run 'manage.py check_secrets'",
    ]


def test_until_vault_setup_writes_the_run_token_role_runs_fail_closed_then_read(vault, cast):
    put_secret(vault, "governor/acme/dev/db", {"password": "dev-password-1"})
    vault.root_client().adapter.delete(f"/v1/auth/token/roles/{secrets.RUN_TOKEN_ROLE}")
    refs = {"DB_PASSWORD": DEV_REF}
    with pytest.raises(secrets.SecretError, match="creating a run token for acme/dev") as info:
        secrets.resolve_secrets(refs, cast.acme, environment=cast.dev, team=cast.payments)
    assert not info.value.transient
    call_command("vault_setup", "--policy-only", "--root-token", vault.root_token, stdout=io.StringIO())
    assert secrets.resolve_secrets(refs, cast.acme, environment=cast.dev, team=cast.payments) == {
        "DB_PASSWORD": "dev-password-1"
    }
