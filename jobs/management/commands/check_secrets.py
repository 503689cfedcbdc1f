"""List the jobs whose secret references lie outside their tenant/environment(/team) prefix."""

import json

from django.core.management.base import BaseCommand

from jobs.definitions import stored_secret_problems


class Command(BaseCommand):
    help = (
        "Check every live job's secret references against the layout <prefix>/<tenant>/<environment>/ "
        "(and /<team>/ where the tenant scopes secrets by team). Rewrites nothing: lists each job, field, "
        "reference and allowed prefix to fix (move the secret in Vault, then change the job through change "
        "control). Exit 0 when every reference validates, 1 otherwise; runs of the listed jobs fail at start."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="only this tenant's jobs (slug)")
        parser.add_argument("--json", action="store_true", help="Print one JSON object for machines.")

    def handle(self, *args, tenant=None, json: bool = False, **options):
        checked, rows = stored_secret_problems(tenant=tenant)
        failing = len({(row["tenant"], row["environment"], row["job"]) for row in rows})
        if json:
            self.stdout.write(_json.dumps({"ok": not rows, "jobs_checked": checked, "problems": rows}, indent=2))
        else:
            for row in rows:
                self.stdout.write(
                    f"{row['tenant']}/{row['environment']} {row['job']}: {row['field']} = {row['reference']} "
                    f"is outside {row['allowed']}"
                )
            if rows:
                self.stdout.write(
                    f"check_secrets: {failing} of {checked} job(s) with secrets no longer validate "
                    f"({len(rows)} reference(s)); their runs fail at start until fixed."
                )
            else:
                self.stdout.write(f"check_secrets: OK, {checked} job(s) with secrets, every reference validates.")
        if rows:
            raise SystemExit(1)


_json = json
