"""One pass of periodic change-control and lifecycle work (cron / scheduler / django-q2 hook)."""

import json

from django.core.management.base import BaseCommand

from approvals.tasks import sweep


class Command(BaseCommand):
    help = "Expire old change requests, apply due ones, and enforce job lifecycle dates. Run every minute."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the result as JSON.")

    def handle(self, *args, **options):
        result = sweep()
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            self.stdout.write("lifecycle_sweep: " + ", ".join(f"{k} {_count(v)}" for k, v in result.items()))


def _count(value) -> int:
    return len(value) if isinstance(value, list) else int(value)
