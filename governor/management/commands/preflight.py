"""``manage.py preflight``: refuse to start a node that could not do its work.

Checks, in order, that ``DATABASE_URL`` names a writable node, that Redis answers when ``REDIS_URL``
makes it the broker, and that production's static build exists. Each failure is one line on stderr
naming the setting, and the exit status is 1; nothing is started or written. ``scripts/serve.sh`` and
the systemd units of docs/operations.md run it before starting anything.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from governor.health import broker_problem, database_problem, static_problem

CHECKS = {"database": database_problem, "broker": broker_problem, "static": static_problem}


class Command(BaseCommand):
    help = "Refuse (exit 1, one line per problem naming the setting) unless this node can serve."
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--only", choices=sorted(CHECKS), action="append", help="Run only this check (repeatable).")

    def handle(self, *args, **options):
        names = options["only"] or list(CHECKS)
        problems = [problem for name in names if (problem := CHECKS[name]()) is not None]
        for problem in problems:
            self.stderr.write(f"Governor refuses to start: {problem.line()}")
        if problems:
            raise SystemExit(1)
        self.stdout.write(f"preflight: {', '.join(names)} ok")
