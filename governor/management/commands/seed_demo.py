"""Load the demo tenants, users and jobs. Idempotent and deterministic."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from governance.actors import SYSTEM
from governance.models import Environment, Role, Team, Tenant
from governance.services import grant_role

ENVIRONMENTS = [("dev", "Development", 0, 0), ("staging", "Staging", 1, 1), ("prod", "Production", 2, 2)]

TENANTS = {
    "acme": {"name": "Acme Corp", "teams": [("payments", "Payments"), ("data", "Data platform")]},
    "globex": {"name": "Globex", "teams": [("ops", "Operations")]},
}

# username -> [(tenant, role)]
USERS = {
    "acme-admin": [("acme", Role.TENANT_ADMIN)],
    "acme-author": [("acme", Role.AUTHOR)],
    "acme-approver": [("acme", Role.APPROVER)],
    "acme-approver2": [("acme", Role.APPROVER)],
    "acme-operator": [("acme", Role.OPERATOR)],
    "acme-viewer": [("acme", Role.VIEWER)],
    "globex-admin": [("globex", Role.TENANT_ADMIN), ("globex", Role.APPROVER)],
    "globex-author": [("globex", Role.AUTHOR)],
    "globex-approver": [("globex", Role.APPROVER)],
}

# (tenant, team, author, definition); created in every environment.
JOBS = [
    (
        "acme",
        "payments",
        "acme-author",
        {
            "name": "payments.ledger.nightly-reconcile",
            "description": "Reconcile the ledger against the bank statement of the previous day.",
            "runbook": "1. Check the bank SFTP drop arrived.\n2. Re-run after the drop; page #payments-oncall if it fails twice.",
            "criticality": "critical",
            "command": ["/bin/echo", "reconciling ledger"],
            "cron": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "timeout_seconds": 1800,
            "rationale": "The bank drop lands at 02:00 local; on the spring-forward night it runs at 03:00. "
            "No heartbeat yet: the legacy script cannot ping.",
        },
    ),
    (
        "acme",
        "payments",
        "acme-author",
        {
            "name": "payments.cards.settlement-export",
            "description": "Export card settlements for the finance team.",
            "runbook": "Safe to re-run: the export is idempotent per settlement day.",
            "criticality": "high",
            "command": ["/bin/echo", "exporting settlements"],
            "cron": "*/15 * * * *",
            "timezone": "UTC",
            "timeout_seconds": 600,
        },
    ),
    (
        "acme",
        "data",
        "acme-author",
        {
            "name": "data.warehouse.hourly-load",
            "description": "Load the last hour of events into the warehouse.",
            "runbook": "If the load fails, check the warehouse quota dashboard first.",
            "criticality": "medium",
            "command": ["/bin/echo", "loading warehouse"],
            "cron": "5 * * * *",
            "timezone": "America/New_York",
            "timeout_seconds": 3000,
            "pool": "batch",
            "priority": 3,
        },
    ),
    (
        "globex",
        "ops",
        "globex-author",
        {
            "name": "ops.backup.db-snapshot",
            "description": "Snapshot the customer database.",
            "runbook": "Snapshots older than 30 days are pruned by ops.backup.prune.",
            "criticality": "critical",
            "command": ["/bin/echo", "snapshot taken"],
            "cron": "0 3 * * *",
            "timezone": "Australia/Sydney",
            "timeout_seconds": 3600,
            "rationale": "Snapshots run after the 02:00 batch; no heartbeat yet: the snapshot tool cannot ping.",
        },
    ),
]

# (tenant, name, slots, reserved for critical jobs, description); created in every environment
# through change requests, before the jobs that name them.
POOLS = [
    ("acme", "batch", 4, 1, "Batch loads share four slots; one stays free for critical jobs."),
]

APPROVERS = {"acme": ["acme-approver", "acme-approver2"], "globex": ["globex-approver", "globex-admin"]}


class Command(BaseCommand):
    help = "Create the demo tenants (acme, globex), users, roles and example jobs. Safe to run again."

    def handle(self, *args, **options):
        from approvals.models import ChangeAction, ChangeRequest, ChangeStatus
        from approvals.services import approve_change, propose_change
        from jobs.models import Job, Pool

        User = get_user_model()
        password = settings.GOVERNOR_DEMO_PASSWORD
        created_jobs = 0
        with transaction.atomic():
            tenants: dict[str, Tenant] = {}
            for slug, spec in TENANTS.items():
                tenant, _ = Tenant.objects.get_or_create(slug=slug, defaults={"name": spec["name"]})
                tenants[slug] = tenant
                for team_slug, team_name in spec["teams"]:
                    Team.objects.get_or_create(tenant=tenant, slug=team_slug, defaults={"name": team_name})
                for env_slug, env_name, order, approvals in ENVIRONMENTS:
                    Environment.objects.get_or_create(
                        tenant=tenant,
                        slug=env_slug,
                        defaults={"name": env_name, "order": order, "required_approvals": approvals},
                    )
            users = {}
            admin, made = User.objects.get_or_create(
                username="admin", defaults={"is_staff": True, "is_superuser": True}
            )
            if made:
                admin.set_password(password)
                admin.save()
            for username, roles in USERS.items():
                user, made = User.objects.get_or_create(
                    username=username, defaults={"email": f"{username}@example.com"}
                )
                if made:
                    user.set_password(password)
                    user.save()
                users[username] = user
                for tenant_slug, role in roles:
                    grant_role(user, role, tenant=tenants[tenant_slug], actor=SYSTEM)

            # Pools, windows and calendars are governed too: created through change requests like the
            # jobs (pools first: jobs name them).
            from approvals.services import propose_config_change
            from jobs.models import HolidayCalendar, MaintenanceWindow

            acme = tenants["acme"]
            acme_prod = Environment.objects.get(tenant=acme, slug="prod")
            demo_config = [
                (
                    "pool",
                    env,
                    Pool.objects.filter(environment=env, name=name),
                    {"name": name, "slots": slots, "reserved_critical_slots": reserved, "description": description},
                )
                for tenant_slug, name, slots, reserved, description in POOLS
                for env in Environment.objects.filter(tenant=tenants[tenant_slug]).order_by("order")
            ]
            demo_config += [
                (
                    "holiday_calendar",
                    None,
                    HolidayCalendar.objects.filter(tenant=acme, name="de-bank"),
                    {"name": "de-bank", "country": "DE", "years": [2026, 2027]},
                ),
                (
                    "maintenance_window",
                    acme_prod,
                    MaintenanceWindow.objects.filter(tenant=acme, name="weekly patching"),
                    {
                        "name": "weekly patching",
                        "cron": "0 3 * * SUN",
                        "timezone": "Europe/Berlin",
                        "duration_minutes": 60,
                    },
                ),
            ]
            for kind, env, existing, definition in demo_config:
                if existing.exists():
                    continue
                tenant = env.tenant if env is not None else acme
                admin_name = f"{tenant.slug}-admin"
                change = propose_config_change(
                    actor=users[admin_name],
                    kind=kind,
                    action="create",
                    tenant=tenant,
                    environment=env,
                    definition=definition,
                    justification="Demo configuration imported from the legacy scheduler.",
                    ticket="DEMO-2",
                )
                for approver in APPROVERS[tenant.slug][: change.required_approvals]:
                    change = approve_change(change, actor=users[approver], comment="Looks good.")

            for tenant_slug, team_slug, author, definition in JOBS:
                tenant = tenants[tenant_slug]
                team = Team.objects.get(tenant=tenant, slug=team_slug)
                for env in Environment.objects.filter(tenant=tenant).order_by("order"):
                    if Job.objects.filter(tenant=tenant, environment=env, name=definition["name"]).exists():
                        continue
                    change = propose_change(
                        actor=users[author],
                        action=ChangeAction.CREATE,
                        team=team,
                        environment=env,
                        definition=definition,
                        justification="Demo job imported from the legacy crontab.",
                        ticket="DEMO-1",
                    )
                    for approver in APPROVERS[tenant_slug][: change.required_approvals]:
                        change = approve_change(change, actor=users[approver], comment="Looks good.")
                    created_jobs += 1

            # One request waiting for review, so the approvers' queue is not empty.
            prod = Environment.objects.get(tenant=tenants["acme"], slug="prod")
            job = Job.objects.get(tenant=tenants["acme"], environment=prod, name="payments.cards.settlement-export")
            if not ChangeRequest.objects.filter(job=job, status=ChangeStatus.SUBMITTED).exists():
                propose_change(
                    actor=users["acme-author"],
                    action=ChangeAction.UPDATE,
                    job=job,
                    definition={"cron": "*/10 * * * *", "timeout_seconds": 900},
                    justification="Finance wants settlements every 10 minutes during the migration.",
                    ticket="FIN-204",
                )
        self.stdout.write(
            f"seed_demo: {len(tenants)} tenants, {len(users) + 1} users, {created_jobs} jobs created "
            f"(password from GOVERNOR_DEMO_PASSWORD, default 'governor-demo')"
        )
