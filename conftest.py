"""The named cast shared by every test: two tenants, each role, plus builders."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from governance.actors import SYSTEM
from governance.models import Environment, Role, Team, Tenant
from governance.services import grant_role

# A real OpenBao dev server for the secrets tests (fixtures bao_server, vault).
pytest_plugins = ["tests.vault"]

PASSWORD = "correct horse battery staple"


def pytest_configure(config):
    from django.conf import settings

    # Hashing a dozen passwords per test with PBKDF2 costs seconds; tests do not need it slow.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


class Cast:
    """acme (teams payments, data; envs dev/staging/prod) and globex (team ops), with one user per role."""

    def __init__(self) -> None:
        User = get_user_model()
        self.acme = Tenant.objects.create(slug="acme", name="Acme")
        self.globex = Tenant.objects.create(slug="globex", name="Globex")
        self.payments = Team.objects.create(tenant=self.acme, slug="payments", name="Payments")
        self.data = Team.objects.create(tenant=self.acme, slug="data", name="Data")
        self.ops = Team.objects.create(tenant=self.globex, slug="ops", name="Ops")
        self.dev = Environment.objects.create(tenant=self.acme, slug="dev", name="Dev", order=0, required_approvals=0)
        self.staging = Environment.objects.create(
            tenant=self.acme, slug="staging", name="Staging", order=1, required_approvals=1
        )
        self.prod = Environment.objects.create(
            tenant=self.acme, slug="prod", name="Prod", order=2, required_approvals=2
        )
        self.globex_prod = Environment.objects.create(
            tenant=self.globex, slug="prod", name="Prod", order=2, required_approvals=1
        )

        def user(name: str, **extra):
            u = User.objects.create_user(name, password=PASSWORD, **extra)
            return u

        self.admin = user("acme-admin")
        self.author = user("acme-author")
        self.author2 = user("acme-author2")
        self.approver = user("acme-approver")
        self.approver2 = user("acme-approver2")
        self.operator = user("acme-operator")
        self.viewer = user("acme-viewer")
        self.outsider = user("nobody")
        self.superuser = user("root", is_superuser=True, is_staff=True)
        self.globex_admin = user("globex-admin")
        self.globex_author = user("globex-author")
        self.globex_approver = user("globex-approver")
        for u, role in [
            (self.admin, Role.TENANT_ADMIN),
            (self.author, Role.AUTHOR),
            (self.author2, Role.AUTHOR),
            (self.approver, Role.APPROVER),
            (self.approver2, Role.APPROVER),
            (self.operator, Role.OPERATOR),
            (self.viewer, Role.VIEWER),
        ]:
            grant_role(u, role, tenant=self.acme, actor=SYSTEM)
        for u, role in [
            (self.globex_admin, Role.TENANT_ADMIN),
            (self.globex_author, Role.AUTHOR),
            (self.globex_approver, Role.APPROVER),
        ]:
            grant_role(u, role, tenant=self.globex, actor=SYSTEM)
        # The superuser also authors in acme, so self-approval by a superuser can be attacked.
        grant_role(self.superuser, Role.AUTHOR, tenant=self.acme, actor=SYSTEM)

    def definition(self, **overrides) -> dict:
        base = {
            "name": "payments.ledger.reconcile",
            "description": "Reconcile the ledger.",
            "runbook": "Re-run it.",
            "criticality": "high",
            "command": ["/bin/echo", "hello"],
            "cron": "*/5 * * * *",
            "timezone": "Europe/Berlin",
            "timeout_seconds": 60,
        }
        base.update(overrides)
        return base

    def make_job(self, environment=None, team=None, **overrides):
        """A live job, created through change control (approved by both approvers when governed)."""
        from approvals.services import approve_change, propose_change

        environment = environment or self.dev
        team = team or (self.ops if environment.tenant_id == self.globex.pk else self.payments)
        author = self.globex_author if environment.tenant_id == self.globex.pk else self.author
        approvers = (
            [self.globex_approver] if environment.tenant_id == self.globex.pk else [self.approver, self.approver2]
        )
        if team == self.ops and "name" not in overrides:
            overrides["name"] = "ops.backup.snapshot"
        if team == self.data and "name" not in overrides:
            overrides["name"] = "data.warehouse.load"
        change = propose_change(
            actor=author,
            action="create",
            team=team,
            environment=environment,
            definition=self.definition(**overrides),
            justification="test job",
        )
        for approver in approvers[: change.required_approvals]:
            change = approve_change(change, actor=approver)
        assert change.status == "applied", change.failure_reason
        change.job.refresh_from_db()
        return change.job

    def propose_job(self, environment=None, team=None, *, actor=None, definition=None, **fields):
        """A change request to create a job, through the real service: by acme-author, for team
        payments in prod (in globex: globex-author, team ops), with the base definition, unless told otherwise (``fields``: the rest of
        ``propose_change``'s arguments, e.g. ``justification``, ``submit=False``)."""
        from approvals.services import propose_change

        environment = environment or self.prod
        globex = environment.tenant_id == self.globex.pk
        fields.setdefault("justification", "a new job")
        return propose_change(
            actor=actor or (self.globex_author if globex else self.author),
            action="create",
            team=team or (self.ops if globex else self.payments),
            environment=environment,
            definition=self.definition() if definition is None else definition,
            **fields,
        )

    def bulk_job(self, i: int, **fields):
        """Job number ``i`` of a bulk set, written straight to the table (no change control, for
        pages that must cost as many queries with 30 rows as with 5): acme, team payments, in dev,
        staging and prod in turn."""
        from jobs.models import Job

        return Job.objects.create(
            tenant=self.acme,
            team=self.payments,
            environment=[self.dev, self.staging, self.prod][i % 3],
            **self.definition(name=f"payments.bulk.job-{i}"),
            **fields,
        )

    def propose_update(self, job, definition: dict, *, actor=None, **fields):
        """A change request to update ``job`` with the ``definition`` changes, through the real
        service, by acme-author unless told (``fields``: e.g. ``justification``, ``ticket``)."""
        from approvals.services import propose_change

        fields.setdefault("justification", "tune")
        return propose_change(actor=actor or self.author, action="update", job=job, definition=definition, **fields)

    def update_job(self, job, **fields):
        """Change a live acme job through change control (proposed by acme-author with ``fields`` as
        the definition's changes, approved as its environment needs); the job, refreshed."""
        from approvals.services import approve_change

        change = self.propose_update(job, fields)
        for approver in (self.approver, self.approver2)[: change.required_approvals]:
            change = approve_change(change, actor=approver)
        assert change.status == "applied", change.failure_reason
        job.refresh_from_db()
        return job

    def freeze(self, *, environment=None, hours_from=-1, hours_to=5, reason="quarter close", tenant=None):
        """A freeze window from ``hours_from`` to ``hours_to`` hours from now (tenant-wide unless
        ``environment``), created by the tenant's admin."""
        from datetime import timedelta

        from django.utils import timezone

        from approvals.services import create_freeze_window

        now = timezone.now()
        return create_freeze_window(
            actor=self.globex_admin if tenant == self.globex else self.admin,
            tenant=tenant or self.acme,
            environment=environment,
            starts_at=now + timedelta(hours=hours_from),
            ends_at=now + timedelta(hours=hours_to),
            reason=reason,
        )

    def queued_run(self, job, **fields):
        """A run of ``job`` waiting for a worker, as the scheduler leaves it: the job's definition
        snapshot, due now (``fields`` override any column)."""
        from django.utils import timezone

        from jobs.models import Run, RunStatus

        now = timezone.now()
        values = {
            "scheduled_for": now.replace(microsecond=0),
            "queued_at": now,
            "job_version": job.version,
            "definition": job.definition(),
            **fields,
        }
        return Run.objects.create(job=job, tenant_id=job.tenant_id, status=RunStatus.QUEUED, **values)

    def make_config(self, kind: str, *, tenant=None, environment=None, target=None, action=None, **definition):
        """Create, update (``target``) or delete (``action="delete"``) a maintenance window, holiday
        calendar or pool through change control: proposed by the tenant admin, approved as the policy needs."""
        from approvals.config_changes import kind_of
        from approvals.services import approve_change, propose_config_change

        if target is not None and action is None:
            definition = {**kind_of(kind).definition(target), **definition}

        tenant = tenant or (environment.tenant if environment is not None else None) or (target and target.tenant)
        tenant = tenant or self.acme
        globex = tenant.pk == self.globex.pk
        change = propose_config_change(
            actor=self.globex_admin if globex else self.admin,
            kind=kind,
            action=action or ("update" if target is not None else "create"),
            tenant=tenant if target is None else None,
            environment=environment,
            target=target,
            definition=definition if action != "delete" else None,
            justification="test configuration",
        )
        for approver in ([self.globex_approver] if globex else [self.approver, self.approver2])[
            : change.required_approvals
        ]:
            change = approve_change(change, actor=approver)
        assert change.status == "applied", change.failure_reason
        if action == "delete":
            return None
        return change.changed_object()

    def make_window(self, *, tenant=None, environment=None, **definition):
        """A live maintenance window (tenant-wide unless ``environment``), through change control."""
        return self.make_config("maintenance_window", tenant=tenant, environment=environment, **definition)

    def make_pool(self, environment, name: str = "batch", **definition):
        """A live pool of the environment, through change control."""
        definition.setdefault("slots", 2)
        return self.make_config("pool", environment=environment, name=name, **definition)

    def make_calendar(self, name: str, *, tenant=None, **definition):
        """A live holiday calendar of the tenant, through change control."""
        return self.make_config("holiday_calendar", tenant=tenant, name=name, **definition)


@pytest.fixture(autouse=True)
def _fresh_process_memory():
    """What a process keeps between requests (the dashboard chart's closed hours) starts empty in
    each test: the database under it is new."""
    from jobs import run_counts

    run_counts.forget()


@pytest.fixture
def cast(db) -> Cast:
    return Cast()


@pytest.fixture
def tcast(transactional_db) -> Cast:
    """The cast, committed for real: for tests that start other processes (scheduler, workers)."""
    return Cast()


@pytest.fixture
def started(tmp_path):
    """Start Governor's commands as real processes, by name (``started("worker", "qcluster",
    environ=...)``); every one is stopped, its whole group, at the end of the test."""
    from tests import procs

    running: list[procs.Process] = []

    def start(name: str, *args: str, environ: dict[str, str]) -> procs.Process:
        process = procs.manage(name, *args, env=environ, log_dir=tmp_path)
        running.append(process)
        return process

    yield start
    for process in reversed(running):
        process.stop()


@pytest.fixture(scope="session")
def seeded_postgres():
    """A stopped PostgreSQL data directory, migrated and seeded once per test session (HA tests, marker
    ``ha``): tests start copies of it (tests.pgnodes.copy_of)."""
    import shutil as _shutil

    from tests import pgnodes

    base = pgnodes.workdir()
    try:
        yield base, pgnodes.seeded(base)
    finally:
        _shutil.rmtree(base, ignore_errors=True)
