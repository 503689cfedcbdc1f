"""manage.py list_archives: run archives, searchable by tenant, job and date (from their manifests)."""

from django.core.management.base import BaseCommand, CommandError

from jobs import archive
from jobs.run_export import instant as _when


class Command(BaseCommand):
    help = "List run archives (tenant, month, runs, sha256), filtered by tenant, job name and date."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="tenant slug")
        parser.add_argument("--job", help="job name: only archives holding its runs")
        parser.add_argument("--from", dest="since", help="ISO date or date-time (UTC), inclusive")
        parser.add_argument("--to", dest="until", help="ISO date or date-time (UTC), inclusive")

    def handle(self, *args, tenant=None, job=None, since=None, until=None, **options):
        from django.core.exceptions import ValidationError

        try:
            lo = _when(since, "--from", end=False) if since else None
            hi = _when(until, "--to", end=True) if until else None
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from exc
        if lo and hi and lo > hi:
            raise CommandError("--to: must not be before --from.")
        try:
            found = archive.search(tenant_slug=tenant, job=job, since=lo, until=hi)
        except archive.ArchiveError as exc:
            raise CommandError(str(exc)) from exc
        for m in found:
            runs = m["jobs"][job]["count"] if job else m["count"]
            self.stdout.write(
                f"{m['tenant']}/{m['month']}\t{runs} runs\t{m['from']}..{m['to']}\t{m['sha256']}\t{m['path']}"
            )
        if not found:
            self.stdout.write("No archives match.")
