"""Verify every tenant's audit hash chain; exit 1 on the first broken link of any chain."""

import json
from dataclasses import asdict

from django.core.management.base import BaseCommand, CommandError

from governance.audit import verify_all


class Command(BaseCommand):
    help = "Walk each tenant's audit chain and report the first broken link (edited, deleted or reordered events)."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print one JSON object (for machines).")

    def handle(self, *args, **options):
        reports = verify_all()
        broken = [r for r in reports if not r.ok]
        total = sum(r.checked for r in reports)
        if options["json"]:
            self.stdout.write(
                json.dumps({"ok": not broken, "events_checked": total, "chains": [asdict(r) for r in reports]})
            )
        else:
            for r in broken:
                where = f" at seq {r.broken_seq} (event id {r.broken_id})" if r.broken_seq is not None else ""
                self.stderr.write(f"BROKEN {r.tenant}{where}: {r.reason}")
            self.stdout.write(f"audit: {len(reports)} chain(s), {total} event(s) verified, {len(broken)} broken")
        if broken:
            raise CommandError("audit chain verification failed", returncode=1)
