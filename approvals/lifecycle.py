"""Job lifecycle governance: sunset dates (warn, then disable) and periodic recertification.

Deprecating a job is an ordinary change (its ``sunset_on`` is part of the
definition, so governed environments review it); what happens at the dates is
done here by the system, recorded in the job's history and the audit trail.
"""

from __future__ import annotations

from datetime import date, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from governance import audit
from governance.access import Action, can, restrict
from governance.actors import SYSTEM, Actor, Subject
from governance.history import save_with_history
from governance.models import AuditAction
from governance.services import AccessDenied
from jobs.models import Job, JobStatus

from .services import ChangeError


def _today() -> date:
    return timezone.now().date()


def warn_sunsets(*, today: date | None = None) -> list[Job]:
    """Record one warning per deprecated job entering its warning period."""
    today = today or _today()
    horizon = today + timedelta(days=settings.GOVERNOR_SUNSET_WARNING_DAYS)
    warned = []
    candidates = Job.objects.filter(
        sunset_on__isnull=False, sunset_on__gt=today, sunset_on__lte=horizon, sunset_warned_on__isnull=True
    ).exclude(status=JobStatus.DELETED)
    for job in candidates:
        sunset_on = job.sunset_on
        assert sunset_on is not None  # the query asks for a sunset date
        with transaction.atomic():
            # The conditional update is the claim: two sweeps never warn twice.
            if not Job.objects.filter(pk=job.pk, sunset_warned_on__isnull=True).update(sunset_warned_on=today):
                continue
            audit.record(
                AuditAction.JOB_SUNSET_WARNING,
                actor=SYSTEM,
                obj=job,
                data={"sunset_on": sunset_on.isoformat(), "days_left": (sunset_on - today).days},
            )
            warned.append(job)
    return warned


def disable_sunset_jobs(*, today: date | None = None) -> list[Job]:
    """Pause enabled jobs whose sunset day has come, as a recorded system change."""
    today = today or _today()
    disabled = []
    for pk in Job.objects.filter(status=JobStatus.ENABLED, sunset_on__lte=today).values_list("pk", flat=True):
        with transaction.atomic():
            job = Job.objects.select_for_update().get(pk=pk)
            if job.status != JobStatus.ENABLED or job.sunset_on is None or job.sunset_on > today:
                continue
            job.status = JobStatus.PAUSED
            job.next_fire_at = None
            save_with_history(
                job, actor=SYSTEM, reason=f"system: sunset date {job.sunset_on.isoformat()} reached, job disabled"
            )
            audit.record(AuditAction.JOB_SUNSET, actor=SYSTEM, obj=job, data={"sunset_on": job.sunset_on.isoformat()})
            disabled.append(job)
    return disabled


def nearing_sunset(user: Subject, *, today: date | None = None) -> QuerySet[Job]:
    """Deprecated jobs the user can see whose sunset is within the warning period, soonest first."""
    today = today or _today()
    horizon = today + timedelta(days=settings.GOVERNOR_SUNSET_WARNING_DAYS)
    jobs = Job.objects.filter(sunset_on__isnull=False, sunset_on__gt=today, sunset_on__lte=horizon).exclude(
        status=JobStatus.DELETED
    )
    return restrict(jobs, user, Action.VIEW).select_related("team", "environment").order_by("sunset_on", "name")


def overdue_jobs(user: Subject, *, today: date | None = None) -> QuerySet[Job]:
    """Live jobs the user can see whose recertification is overdue, most overdue first."""
    today = today or _today()
    jobs = Job.objects.filter(review_due_on__lt=today).exclude(status=JobStatus.DELETED)
    return restrict(jobs, user, Action.VIEW).select_related("team", "environment").order_by("review_due_on", "name")


def due_for_review(user: Subject, *, today: date | None = None, within_days: int | None = None) -> QuerySet[Job]:
    """Live jobs the user can see whose review falls due within the warning period (overdue ones
    included), soonest first."""
    today = today or _today()
    days = settings.GOVERNOR_SUNSET_WARNING_DAYS if within_days is None else within_days
    jobs = Job.objects.filter(review_due_on__lte=today + timedelta(days=days)).exclude(status=JobStatus.DELETED)
    return restrict(jobs, user, Action.VIEW).select_related("team", "environment").order_by("review_due_on", "name")


def sunset_jobs(user: Subject, *, today: date | None = None) -> QuerySet[Job]:
    """Deprecated jobs the user can see whose sunset is near or already past, soonest first."""
    today = today or _today()
    horizon = today + timedelta(days=settings.GOVERNOR_SUNSET_WARNING_DAYS)
    jobs = Job.objects.filter(sunset_on__isnull=False, sunset_on__lte=horizon).exclude(status=JobStatus.DELETED)
    return restrict(jobs, user, Action.VIEW).select_related("team", "environment").order_by("sunset_on", "name")


def recertify_job(job: Job, *, actor: Actor, note: str) -> Job:
    """An owner (author of the owning team in that environment) confirms the job is still needed
    and correct; the next review falls due one review period later."""
    if not (note or "").strip():
        raise ValidationError({"note": ["Say what you checked (owner, runbook, schedule still right)."]})
    if not can(actor, Action.PROPOSE, job):
        raise AccessDenied("Only the owning team's authors can recertify this job.")
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.status == JobStatus.DELETED:
            raise ChangeError("This job is deleted; there is nothing to recertify.", conflict=True, code="deleted")
        previous = job.review_due_on
        job.review_due_on = _today() + timedelta(days=settings.GOVERNOR_REVIEW_PERIOD_DAYS)
        save_with_history(job, actor=actor, reason=f"recertified by {actor.get_username()}")
        audit.record(
            AuditAction.JOB_RECERTIFIED,
            actor=actor,
            obj=job,
            data={
                "note": note.strip(),
                "previous_due": previous.isoformat() if previous else None,
                "next_due": job.review_due_on.isoformat(),
            },
        )
    return job
