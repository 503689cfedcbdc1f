"""Forward the audit trail to SIEM destinations (syslog RFC 5424 over TCP, or HTTP JSON), at least once."""

import json
import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from governance.siem import DeliveryError, forward_once, parse_destination


class Command(BaseCommand):
    help = "Deliver audit events after each destination's cursor; with --once drain and exit, else keep polling."

    def add_arguments(self, parser):
        parser.add_argument(
            "--destination",
            action="append",
            default=[],
            help="syslog+tcp://host:port or http(s)://host/path (repeatable; default GOVERNOR_SIEM_DESTINATIONS)",
        )
        parser.add_argument("--once", action="store_true", help="deliver what is pending, then exit")
        parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        urls = options["destination"] or settings.GOVERNOR_SIEM_DESTINATIONS
        if not urls:
            raise CommandError("No destination: pass --destination or set GOVERNOR_SIEM_DESTINATIONS.")
        try:
            destinations = [parse_destination(url) for url in urls]
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        if not options["once"]:
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
        delivered, errors = 0, []
        while True:
            errors = []
            for destination in destinations:
                try:
                    delivered += forward_once(destination, batch_size=options["batch_size"])
                except DeliveryError as exc:
                    errors.append(str(exc))
                    self.stderr.write(f"forward_audit: {exc} (will retry)")
            if options["once"] or stopping:
                break
            deadline = time.monotonic() + options["interval"]
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.1)
        if options["json"]:
            self.stdout.write(json.dumps({"delivered": delivered, "errors": errors}))
        else:
            self.stdout.write(f"forward_audit: delivered {delivered} event(s), {len(errors)} destination error(s)")
        if errors and options["once"]:
            raise CommandError("some destinations refused delivery", returncode=1)
