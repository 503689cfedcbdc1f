"""Run Governor's scheduler until SIGTERM or Ctrl-C."""

import logging
import signal
import threading

from django.core.management.base import BaseCommand

from jobs import scheduler, scheduler_loop

log = logging.getLogger("jobs.scheduler")


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
        _report_stale_secret_references()
        scheduler_loop.run_forever(stop, max_sleep=max_sleep, lease_seconds=lease_seconds)
        self.stdout.write("scheduler stopped")


def _report_stale_secret_references(limit: int = 20) -> None:
    """Say at start which jobs' runs will fail on their secret references (check_secrets lists all)."""
    from jobs.definitions import stored_secret_problems

    try:
        _, rows = stored_secret_problems()
    except Exception:  # never keep the scheduler from starting
        log.exception("could not check the jobs' secret references")
        return
    for row in rows[:limit]:
        log.error(
            "job %s/%s %s: %s = %s is outside %s; its runs fail at start",
            row["tenant"],
            row["environment"],
            row["job"],
            row["field"],
            row["reference"],
            row["allowed"],
        )
    if rows:
        log.error("%d secret reference(s) outside their job's prefix; run 'manage.py check_secrets'", len(rows))
