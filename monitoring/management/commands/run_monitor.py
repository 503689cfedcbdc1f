"""Run the monitor loop: alert rules, escalations and notification delivery (monitoring.loop)."""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand
from django.utils import timezone

from monitoring import loop


class Command(BaseCommand):
    help = "Evaluate alert rules, escalate incidents and deliver notifications, every --interval seconds."

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=5.0, help="Seconds between cycles (default 5).")
        parser.add_argument("--once", action="store_true", help="Run one cycle and exit.")

    def handle(self, *args, **options):
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.is_set():
            loop.run_once(timezone.now())
            if options["once"]:
                break
            stop.wait(options["interval"])
