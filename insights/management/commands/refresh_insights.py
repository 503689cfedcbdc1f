"""Recompute the Insights cache now (what the nightly schedule does): every tenant, or those named."""

from django.core.management.base import BaseCommand, CommandError

from governance.models import Tenant
from insights.forecast import refresh


class Command(BaseCommand):
    help = "Recompute the capacity forecasts (30 and 90 days) and the thundering-herd analysis."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", action="append", default=[], help="Tenant slug (repeatable; default all).")

    def handle(self, *args, **options):
        tenants = Tenant.objects.order_by("pk")
        if options["tenant"]:
            tenants = tenants.filter(slug__in=options["tenant"])
            missing = set(options["tenant"]) - set(tenants.values_list("slug", flat=True))
            if missing:
                raise CommandError(f"No tenant {', '.join(sorted(missing))}.")
        for entry in refresh(list(tenants)):
            if options["verbosity"] >= 1:
                self.stdout.write(
                    f"refresh_insights: {entry.tenant_id} {entry.kind} {entry.horizon_days}d in {entry.compute_ms:.0f} ms"
                )
