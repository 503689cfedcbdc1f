"""Apply approved change requests whose apply time has come and that no freeze holds."""

import json

from django.core.management.base import BaseCommand

from approvals.services import apply_due_changes


class Command(BaseCommand):
    help = "Apply approved change requests that are due (apply_after passed, no freeze window active)."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the result as JSON.")

    def handle(self, *args, **options):
        done = apply_due_changes()
        result = {
            "applied": [c.pk for c in done if c.status == "applied"],
            "failed": [c.pk for c in done if c.status == "failed"],
        }
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            self.stdout.write(f"apply_due_changes: {len(result['applied'])} applied, {len(result['failed'])} failed")
