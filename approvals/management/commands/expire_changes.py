"""Expire change requests left open past their deadline."""

import json

from django.core.management.base import BaseCommand

from approvals.services import expire_changes


class Command(BaseCommand):
    help = "Expire draft and submitted change requests older than GOVERNOR_CHANGE_EXPIRY_HOURS."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the result as JSON.")

    def handle(self, *args, **options):
        expired = expire_changes()
        if options["json"]:
            self.stdout.write(json.dumps({"expired": expired}))
        else:
            self.stdout.write(f"expire_changes: {expired} request(s) expired")
