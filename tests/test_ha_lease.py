"""The leader lease: one scheduler ticks, a follower takes over when the lease lapses."""

from datetime import timedelta

from django.utils import timezone

from jobs import scheduler_loop
from jobs.models import SchedulerLease


def test_only_one_scheduler_holds_the_lease_until_it_lapses(db):
    now = timezone.now()
    assert scheduler_loop.hold_lease("a", 10, now)
    assert not scheduler_loop.hold_lease("b", 10, now + timedelta(seconds=1))
    assert scheduler_loop.hold_lease("a", 10, now + timedelta(seconds=5))  # renewed
    assert not scheduler_loop.hold_lease("b", 10, now + timedelta(seconds=14))
    assert scheduler_loop.hold_lease("b", 10, now + timedelta(seconds=16))
    lease = SchedulerLease.objects.get()
    assert (lease.holder, lease.term) == ("b", 2)
    assert not scheduler_loop.hold_lease("a", 10, now + timedelta(seconds=17))


def test_a_clean_shutdown_hands_the_lease_over_at_once(db):
    assert scheduler_loop.hold_lease("a", 30)
    scheduler_loop.release_lease("a")
    assert scheduler_loop.hold_lease("b", 30)
    assert SchedulerLease.objects.get().holder == "b"
