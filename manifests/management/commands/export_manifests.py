"""Print a tenant's live job definitions as manifests (or the manifest JSON Schema)."""

import json

from django.core.management.base import BaseCommand, CommandError

from governance.models import Tenant
from manifests.export import export_tenant, json_schema

from ._manifest_cli import SHELL_OPERATOR, actor_named


class Command(BaseCommand):
    help = (
        "Export a tenant's live jobs as one YAML manifest stream (deterministic: export, apply to an empty "
        "tenant and export again gives the same bytes). --schema prints the manifest JSON Schema instead."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="Tenant slug.")
        parser.add_argument("--team", action="append", default=[], help="Only this team (repeatable).")
        parser.add_argument("--actor", help="Export only what this user may see.")
        parser.add_argument("--output", "-o", help="Write to this file instead of standard output.")
        parser.add_argument("--schema", action="store_true", help="Print the manifest JSON Schema.")

    def handle(self, *args, tenant, team, actor, output, schema, **options):
        if schema:
            text = json.dumps(json_schema(), indent=2) + "\n"
        else:
            if not tenant:
                raise CommandError("Name the tenant with --tenant.")
            row = Tenant.objects.filter(slug=tenant).first()
            if row is None:
                raise CommandError(f"Unknown tenant {tenant!r}.")
            user = actor_named(actor) if actor else SHELL_OPERATOR
            text = export_tenant(row, actor=user, teams=team or None)
        if output:
            with open(output, "w", encoding="utf-8") as handle:
                handle.write(text)
            self.stderr.write(f"wrote {output}")
        else:
            self.stdout.write(text, ending="")
