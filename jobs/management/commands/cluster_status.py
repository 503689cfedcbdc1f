"""Health check of the worker clusters on this host: exit 0 when at least one runs whole."""

import json

from django.core.management.base import BaseCommand

from jobs import cluster


class Command(BaseCommand):
    help = (
        "Report the worker clusters started by run_workers on this host. Exit status: 0 healthy, "
        "1 a headless cluster (sentinel or workers whose leader is gone: stop those processes), "
        "2 no cluster running."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args, **options):
        status = cluster.cluster_status()
        if options.get("json"):
            self.stdout.write(
                json.dumps(
                    {
                        "healthy": status.healthy,
                        "leaders": {str(k): v for k, v in status.leaders.items()},
                        "headless": {str(k): v for k, v in status.headless.items()},
                    }
                )
            )
        else:
            for leader, pids in status.leaders.items():
                self.stdout.write(f"cluster leader {leader}: {len(pids) - 1} processes")
            for top, pids in status.headless.items():
                self.stdout.write(
                    f"HEADLESS cluster: {len(pids)} processes (top pid {top}) whose leader is gone; "
                    f"stop them: kill {' '.join(map(str, pids))}"
                )
            if not status.leaders and not status.headless:
                self.stdout.write("no worker cluster running (started with run_workers)")
        if status.headless:
            raise SystemExit(1)
        if not status.leaders:
            raise SystemExit(2)
