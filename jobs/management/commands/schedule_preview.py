"""Print the next fire instants of a cron expression in a zone, local and UTC, with DST notes."""

import json

from django.core.management.base import BaseCommand, CommandError

from jobs import firing, preview, schedule
from jobs.models import GapPolicy, Job, OverlapPolicy

OPTION_OF = {"timezone": "tz"}


class Command(BaseCommand):
    help = (
        "Preview the next fire instants of a schedule (local and UTC; DST transitions marked); with --job, "
        "the deferrals and skips its calendar and windows cause."
    )

    def add_arguments(self, parser):
        parser.add_argument("--cron", help="5-field cron expression, e.g. '30 2 * * *'.")
        parser.add_argument("--tz", help="IANA time zone, e.g. Europe/Berlin.")
        parser.add_argument("--after", help="Start after this instant (ISO 8601 with Z or offset); default now.")
        parser.add_argument("--count", type=int, default=preview.DEFAULT_COUNT, help="How many instants (1-1000).")
        parser.add_argument("--gap", choices=GapPolicy.values, help="DST gap policy (default shift).")
        parser.add_argument("--overlap", choices=OverlapPolicy.values, help="DST overlap policy (default once).")
        parser.add_argument(
            "--job", type=int, help="Preview for this job id: H is hashed from it; its schedule fills in."
        )
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print a JSON array of UTC instants ending in Z."
        )

    def handle(self, *args, cron, tz, after, count, gap, overlap, job, as_json: bool, **options):
        found = None
        if job is not None:
            found = Job.objects.filter(pk=job).first()
            if found is None:
                raise CommandError(f"--job: no job with id {job}.")
        query = preview.ScheduleQuery.of(found, cron=cron, tz=tz, gap=gap, overlap=overlap)
        cron, tz = query.cron, query.tz
        if not cron:
            raise CommandError("--cron is required (or --job).")
        if not tz:
            raise CommandError("--tz is required (or --job).")
        try:
            start = preview.parse_instant(after) if after else None
            entries = query.preview(after=start, count=count)
        except schedule.ScheduleError as exc:
            raise CommandError(f"--{OPTION_OF.get(exc.field, exc.field)}: {exc}") from None
        if as_json:
            self.stdout.write(json.dumps([e["utc"] for e in entries]))
            return
        for e in entries:
            line = f"{e['local']} {e['zone']:<6} ({e['offset']})  {e['utc']}"
            if e["dst"]:
                line += f"  ! {e['dst']}"
            if e["decision"] != firing.FIRE:
                line += f"  -> {e['reason']}"
            self.stdout.write(line)
        marked = sum(1 for e in entries if e["dst"])
        summary = f"{len(entries)} fire(s) of '{cron}' in {tz}; {marked} shaped by DST."
        held = sum(1 for e in entries if e["decision"] != firing.FIRE)
        if held:
            summary += f" {held} deferred or skipped."
        if query.concurrency:
            summary += f" {query.concurrency.capitalize()}."
        self.stdout.write(summary)
