"""Run Governor's scheduler until SIGTERM or Ctrl-C."""

import signal
import threading

from django.core.management.base import BaseCommand

from jobs import scheduler


class Command(BaseCommand):
    help = "Create and enqueue the runs of due job schedules, until stopped (SIGTERM-clean)."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Run a single tick and exit.")
        parser.add_argument("--max-sleep", type=float, default=None, help="Longest sleep between ticks (s).")
        parser.add_argument(
            "--lease-seconds",
            type=float,
            default=None,
            help="Leader lease length (s): a follower takes over this long after the leader dies.",
        )

    def handle(self, *args, once: bool, max_sleep: float | None, lease_seconds: float | None, **options):
        if once:
            result = scheduler.tick()
            self.stdout.write(f"tick: {result.due} due, {result.created} runs created, {result.lost_race} taken")
            return
        stop = threading.Event()

        def request_stop(signum, frame):
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        self.stdout.write("scheduler started")
        self.stdout.flush()
        scheduler.run_forever(stop, max_sleep=max_sleep, lease_seconds=lease_seconds)
        self.stdout.write("scheduler stopped")
