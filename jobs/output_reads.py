"""Who reads a job's output: the run page (and the API's run detail) note when a person opened one
of the job's runs, at most once an hour per job, for the Insights "outputs nobody reads" review."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from .models import Job, Run

# One write per job and hour at most: reading a run page must not turn into a write per request.
VIEW_THROTTLE = timedelta(hours=1)


def note_output_viewed(run: Run, *, now: datetime | None = None) -> bool:
    """Record that ``run``'s output was viewed; True when it wrote. ``run.job`` is usually loaded
    already (select_related), so a recent mark costs no query at all; otherwise one conditional UPDATE,
    which two concurrent readers cannot both win within the hour."""
    now = now or timezone.now()
    stale = now - VIEW_THROTTLE
    job = run.job
    if job.last_output_view_at is not None and job.last_output_view_at > stale:
        return False
    written = (
        Job.objects.filter(pk=job.pk)
        .filter(Q(last_output_view_at__isnull=True) | Q(last_output_view_at__lte=stale))
        .update(last_output_view_at=now)
    )
    if written:
        job.last_output_view_at = now
    return bool(written)
