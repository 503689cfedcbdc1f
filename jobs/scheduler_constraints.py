"""Windows, holidays and concurrency: what a tick (jobs.scheduler) does with a runnable slot.

Holidays and windows are decided by jobs.firing (the previews decide the same way); concurrency
counts only runs that are really active (``active_runs``). Under ``forbid`` (or
``max_active_runs``) a ``catchup=all`` batch runs in turn (``release_turns``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Q, TextField, Value, When

from . import firing, schedule
from .models import CatchupPolicy, ConcurrencyPolicy, HolidayCalendar, Job, MaintenanceWindow, Run, RunStatus
from .scheduler_reconcile import this_queueing
from .scheduler_slots import SlotPlan, late_seconds, past_deadline

ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
# A catch-up run waiting for the job's earlier runs to finish: deferred, with no instant of its own.
WAITING_TURN = Q(status=RunStatus.DEFERRED, deferred_until__isnull=True)


def active_runs(now: datetime) -> Q:
    """The runs that count against a job's concurrency policy (forbid, replace, max_active_runs).

    - running, unless its worker lease has expired (the sweep declares it lost in the same loop);
      a running run with no worker lease (an external job waiting for its ping, a fan-out waiting
      for its partitions) counts;
    - queued, unless the queue reconciler has given up on it: enqueued again
      GOVERNOR_REQUEUE_MAX times and still not taken by a worker one bound
      (GOVERNOR_REQUEUE_AFTER_SECONDS) after the last time. Such a run has raised a
      ``stuck_queued`` alert; it may still run if a worker ever takes it.
    A queued run whose message was lost counts until then: the reconciler enqueues it again
    within the bound, so it is about to run, not a ghost.
    """
    bound = timedelta(seconds=settings.GOVERNOR_REQUEUE_AFTER_SECONDS)
    live_lease = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__gte=now)
    given_up = Q(requeues__gte=settings.GOVERNOR_REQUEUE_MAX, requeued_at__lt=now - bound) & this_queueing()
    return Q(status=RunStatus.RUNNING) & live_lease | Q(status=RunStatus.QUEUED) & ~given_up


def release_turns(now: datetime, limit: int = 1000) -> int:
    """Let the catch-up runs waiting their turn go, oldest slot first, as the job's earlier runs finish:
    one at a time under concurrency=forbid, up to max_active_runs otherwise. A released run becomes an
    ordinary deferred run due now, which promote_deferred then checks (pools, backpressure) and queues.
    One whose slot has meanwhile passed its starting deadline is skipped, saying so."""
    waiting = list(
        Run.objects.filter(WAITING_TURN)
        .select_related("job")
        .only(
            "id",
            "job_id",
            "scheduled_for",
            "job__concurrency",
            "job__max_active_runs",
            "job__starting_deadline_seconds",
        )
        .order_by("job_id", "scheduled_for", "pk")[:limit]
    )
    if not waiting:
        return 0
    job_ids = {run.job_id for run in waiting}
    busy: dict[int, int] = {}
    # Really active runs, and released ones not queued yet (a pool may hold them): each takes a turn.
    ahead = Run.objects.filter(job_id__in=job_ids).filter(
        active_runs(now) | Q(status=RunStatus.DEFERRED, deferred_until__isnull=False)
    )
    for job_id in ahead.values_list("job_id", flat=True):
        busy[job_id] = busy.get(job_id, 0) + 1
    release: list[int] = []
    skipped: dict[int, str] = {}
    for run in waiting:
        job = run.job
        if past_deadline(job, now, run.scheduled_for):
            skipped[run.pk] = (
                f"Missed: reached {late_seconds(now, run.scheduled_for)} s after its time while waiting its turn, "
                f"past the starting deadline of {job.starting_deadline_seconds} s."
            )
            continue
        if job.concurrency == ConcurrencyPolicy.FORBID:
            turns = 1
        elif job.max_active_runs:
            turns = job.max_active_runs
        else:
            turns = None  # the policy was relaxed since: no reason to wait any more
        if turns is not None and busy.get(job.pk, 0) >= turns:
            continue
        busy[job.pk] = busy.get(job.pk, 0) + 1
        release.append(run.pk)
    with transaction.atomic():
        if release:
            Run.objects.filter(WAITING_TURN, pk__in=release).update(
                deferred_until=now, reason="Released: the job's earlier runs have finished (catch-up, in turn)."
            )
        if skipped:
            Run.objects.filter(WAITING_TURN, pk__in=list(skipped)).update(
                status=RunStatus.SKIPPED, finished_at=now, reason=reasons_case(skipped)
            )
    return len(release)


MAX_WINDOW_CHAIN = firing.MAX_WINDOW_CHAIN
_STATUS_OF = {firing.SKIP: RunStatus.SKIPPED, firing.DEFER: RunStatus.DEFERRED}


class Constraints:
    """What a tick needs to know besides the jobs: windows, calendars and active runs, read once per tick."""

    def __init__(self, jobs: list[Job], now: datetime) -> None:
        tenant_ids = {job.tenant_id for job in jobs}
        self.windows: dict[int, list[MaintenanceWindow]] = {}
        for window in MaintenanceWindow.objects.filter(tenant_id__in=tenant_ids):
            self.windows.setdefault(window.tenant_id, []).append(window)
        names = {job.holiday_calendar for job in jobs if job.holiday_calendar}
        self.holidays: dict[tuple[int, str], set[str]] = {}
        if names:
            for cal in HolidayCalendar.objects.filter(tenant_id__in=tenant_ids, name__in=names):
                self.holidays[(cal.tenant_id, cal.name)] = set(cal.dates)
        limited = [job.pk for job in jobs if job.concurrency != ConcurrencyPolicy.ALLOW or job.max_active_runs]
        # Runs really active (see active_runs), and catch-up runs waiting their turn, per job.
        self.active: dict[int, list[int]] = {}
        self.waiting: dict[int, list[int]] = {}
        if limited:
            rows = Run.objects.filter(job_id__in=limited).filter(active_runs(now) | WAITING_TURN)
            for run_id, job_id, status in rows.values_list("pk", "job_id", "status"):
                target = self.waiting if status == RunStatus.DEFERRED else self.active
                target.setdefault(job_id, []).append(run_id)
        # This tick's own runnable slots, per job (their runs do not exist yet).
        self.pending: dict[int, list[SlotPlan]] = {}
        self.to_cancel: list[tuple[int, str]] = []

    def rules(self, job: Job) -> firing.Rules:
        """The job's calendars and windows as jobs.firing decides with them (no query)."""
        windows = firing.applicable(self.windows.get(job.tenant_id, []), job.tenant_id, job.environment_id)
        holidays: set[str] | frozenset[str] = self.holidays.get((job.tenant_id, job.holiday_calendar), frozenset())
        return firing.Rules(
            timezone=job.timezone,
            holiday_calendar=job.holiday_calendar or "",
            holidays=holidays,
            windows=job.windows or [],
            window_policy=job.window_policy,
            maintenance=windows,
        )

    def maintenance(self, job: Job, instant: datetime) -> tuple[datetime, list[MaintenanceWindow]] | None:
        """The end of the maintenance windows covering ``instant`` (back-to-back ones chained) and those windows."""
        return firing.maintenance_end(self.rules(job).maintenance, instant)


def apply_constraints(job: Job, plans: list[SlotPlan], constraints: Constraints, now: datetime) -> None:
    """Turn runnable slots into skipped or deferred ones: holidays and windows as jobs.firing
    decides them (the previews decide the same way), then concurrency against live runs."""
    rules = None
    for plan in plans:
        if plan.status != RunStatus.QUEUED:
            continue
        rules = rules or constraints.rules(job)
        decision = firing.decide(rules, plan.slot, now)
        if decision.action != firing.FIRE:
            plan.status, plan.reason = _STATUS_OF[decision.action], decision.reason
            plan.deferred_until = decision.deferred_to
            continue
        _apply_concurrency(job, plan, constraints, in_line=job.catchup == CatchupPolicy.ALL and len(plans) > 1)


def _ids(run_ids: list[int]) -> str:
    return ", ".join(f"#{i}" for i in run_ids)


def _apply_concurrency(job: Job, plan: SlotPlan, constraints: Constraints, *, in_line: bool) -> None:
    """The job's concurrency policy for one runnable slot. ``in_line``: a catch-up batch
    (catchup=all, several slots due at once), whose slots wait their turn instead of being skipped."""
    active = constraints.active.get(job.pk, [])
    waiting = constraints.waiting.get(job.pk, [])
    pending = constraints.pending.setdefault(job.pk, [])
    if job.concurrency == ConcurrencyPolicy.FORBID:
        if waiting:
            plan.status = RunStatus.SKIPPED
            plan.reason = f"Skipped: concurrency=forbid and catch-up run(s) {_ids(waiting)} still wait their turn" + (
                f" behind run(s) {_ids(active)}." if active else "."
            )
            return
        if active or pending:
            if in_line:
                _wait_turn(plan, active, pending, "concurrency=forbid runs one at a time")
                return
            plan.status = RunStatus.SKIPPED
            plan.reason = f"Skipped: concurrency=forbid and run(s) {_ids(active)} still active."
            return
    if job.concurrency == ConcurrencyPolicy.REPLACE:
        reason = f"Cancelled: replaced by the run of slot {schedule.isoz(plan.slot)} (concurrency=replace)."
        constraints.to_cancel.extend((run_id, reason) for run_id in active)
        for older in pending:
            # An older slot of this very tick: its run is never started.
            older.status, older.reason = RunStatus.SKIPPED, f"Skipped: {reason.removeprefix('Cancelled: ')}"
        constraints.active[job.pk] = active = []
        pending.clear()
    if job.max_active_runs and len(active) + len(pending) + len(waiting) >= job.max_active_runs:
        if in_line:
            _wait_turn(plan, active, pending, f"the job allows at most {job.max_active_runs} active run(s)")
            return
        plan.status = RunStatus.SKIPPED
        counted = f"{len(active)} run(s) active" + (f", {len(waiting)} waiting their turn" if waiting else "")
        plan.reason = f"Skipped: {counted}, the job allows at most {job.max_active_runs}."
        return
    pending.append(plan)


def _wait_turn(plan: SlotPlan, active: list[int], pending: list[SlotPlan], why: str) -> None:
    """A catch-up slot that starts when the job's earlier runs have finished (released by promote_deferred)."""
    ahead = [f"run {_ids(active)}"] if active else []
    ahead += [f"the run of slot {schedule.isoz(p.slot)}" for p in pending[-1:]]
    plan.status, plan.deferred_until = RunStatus.DEFERRED, None
    plan.reason = (
        f"Waiting its turn after {' and '.join(ahead)}: {why}, and catchup=all runs the missed slots one after another."
    )
    pending.append(plan)


def reasons_case(reasons: dict[int, str]) -> Case:
    """One UPDATE setting a different reason on each run."""
    return Case(*(When(pk=pk, then=Value(reason)) for pk, reason in reasons.items()), output_field=TextField())
