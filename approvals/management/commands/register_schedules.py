"""Register Governor's periodic django-q2 work (idempotent: run it on every start, on any node)."""

from django.core.management.base import BaseCommand
from django_q.models import Schedule

# name -> what the cluster's own scheduler runs; update_or_create keeps one row per name.
SCHEDULES = {
    # Expire old change requests, apply due ones, warn about and disable sunset jobs.
    "governor-lifecycle-sweep": {
        "func": "approvals.tasks.sweep",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
        "repeats": -1,
    },
    # Recompute every tenant's Insights (capacity forecasts, thundering herds) once a night.
    "governor-insights-refresh": {
        "func": "insights.tasks.refresh_all",
        "schedule_type": Schedule.CRON,
        "cron": "30 1 * * *",
        "repeats": -1,
    },
}


class Command(BaseCommand):
    help = "Create or update the django-q2 schedules Governor needs (the change-control sweep every minute, the nightly Insights refresh)."

    def handle(self, *args, **options):
        for name, fields in SCHEDULES.items():
            _, created = Schedule.objects.update_or_create(name=name, defaults=fields)
            if options["verbosity"] >= 1:
                self.stdout.write(f"register_schedules: {name} {'created' if created else 'up to date'}")
