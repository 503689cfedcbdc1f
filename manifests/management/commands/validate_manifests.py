"""Validate manifest files for CI: every error with file, line and column."""

import json

from django.core.management.base import BaseCommand

from manifests.loader import read_paths
from manifests.validate import check


class Command(BaseCommand):
    help = (
        "Validate job manifests (files or directories of *.yaml). Offline by default: tenants, teams and "
        "environments come from the manifests' kind: Tenant documents. Exit 0 when clean, 1 on errors."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH", help="Manifest files or directories.")
        parser.add_argument(
            "--against-server",
            action="store_true",
            help="Check against this server's tenants, teams, environments and live jobs instead.",
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object for machines.")

    def handle(self, *args, paths, against_server, json: bool, **options):
        mset = read_paths(paths)
        checked = check(mset, against_server=against_server)
        problems = checked.problems
        definitions = len(checked.resolved)
        if json:
            self.stdout.write(
                _json.dumps(
                    {
                        "ok": not problems,
                        "errors": [p.as_dict() for p in problems],
                        "files": len(mset.files),
                        "jobs": len(mset.entries),
                        "definitions": definitions,
                    },
                    indent=2,
                )
            )
        else:
            for problem in problems:
                self.stdout.write(str(problem))
            if problems:
                self.stdout.write(f"{len(problems)} error(s) in {len(mset.files)} file(s).")
            else:
                self.stdout.write(
                    f"OK: {len(mset.files)} file(s), {len(mset.entries)} job(s), "
                    f"{definitions} environment definition(s)."
                )
        if problems:
            raise SystemExit(1)


_json = json
