"""`manage.py register_schedules` (run by scripts/run-dev.sh): the change-control sweep runs every
minute (and the Insights refresh nightly) on the workers, registered once however often the command runs."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django_q.models import Schedule

pytestmark = pytest.mark.django_db


def test_the_sweep_is_registered_once_and_edits_are_put_back():
    call_command("register_schedules", verbosity=0)
    call_command("register_schedules", verbosity=0)
    sweep = Schedule.objects.get(name="governor-lifecycle-sweep")
    assert Schedule.objects.filter(func="approvals.tasks.sweep").count() == 1
    assert (sweep.schedule_type, sweep.minutes, sweep.repeats) == (Schedule.MINUTES, 1, -1)
    Schedule.objects.filter(pk=sweep.pk).update(minutes=60, func="approvals.tasks.other")
    call_command("register_schedules", verbosity=0)
    sweep.refresh_from_db()
    assert (sweep.func, sweep.minutes) == ("approvals.tasks.sweep", 1)
    assert Schedule.objects.count() == 2


def test_the_nightly_insights_refresh_is_registered():
    call_command("register_schedules", verbosity=0)
    refresh = Schedule.objects.get(name="governor-insights-refresh")
    assert (refresh.func, refresh.schedule_type, refresh.cron) == (
        "insights.tasks.refresh_all",
        Schedule.CRON,
        "30 1 * * *",
    )
