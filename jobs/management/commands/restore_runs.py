"""manage.py restore_runs <archive>: put an archive's runs back, with their ids."""

from django.core.management.base import BaseCommand, CommandError

from jobs import archive


class Command(BaseCommand):
    help = "Restore the runs of an archive (<tenant>/<YYYY-MM> or a manifest path) with their original ids."

    def add_arguments(self, parser):
        parser.add_argument("archive", help="<tenant>/<YYYY-MM> or the path of a .manifest.json")

    def handle(self, *args, **options):
        try:
            manifest = archive.restore(options["archive"])
        except archive.ArchiveError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Restored {manifest['count']} runs of {manifest['tenant']} {manifest['month']}.")
