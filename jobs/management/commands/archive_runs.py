"""manage.py archive_runs: archive finished runs older than each tenant's retention, then delete them (nightly)."""

from django.core.management.base import BaseCommand, CommandError

from jobs import archive


class Command(BaseCommand):
    help = "Archive finished runs older than the tenant's run_retention_days to zstd JSON Lines, then delete them."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="only this tenant (slug)")
        parser.add_argument("--before", help="only runs scheduled before this month (YYYY-MM)")
        parser.add_argument("--dry-run", action="store_true", help="count what would be archived; write nothing")

    def handle(self, *args, tenant=None, before=None, dry_run=False, **options):
        try:
            month = archive.parse_month(before) if before else None
            report = archive.archive_runs(tenant_slug=tenant, before=month, dry_run=dry_run)
        except archive.ArchiveError as exc:
            raise CommandError(str(exc)) from exc
        for m in report.months:
            if dry_run:
                self.stdout.write(f"{m.tenant} {m.month}: {m.runs} runs would be archived to {m.manifest}")
            else:
                self.stdout.write(
                    f"{m.tenant} {m.month}: {m.runs} runs ({m.written} written), {m.deleted} deleted; "
                    f"archive holds {m.archive_count}: {m.manifest}"
                )
        if not report.months:
            self.stdout.write("Nothing to archive.")
