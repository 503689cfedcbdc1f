"""Recovery rules at work: when a run ends failed (after the job's own retries), every recovery rule
of its job (or its team) in its environment whose pattern matches acts, in rule order.

A rule matches when each criterion it names matches: the exit code is one of ``exit_codes``, the
output contains a match of ``output_pattern`` (RE2: linear time, whatever the author wrote), the
HTTP status is one of ``http_statuses``. Its action:

- ``retry``: a new run of the job (its applied definition), due after ``retry_delay_seconds ×
  retry_factor^(n-1)`` for the n-th retry; a retry that fails again is retried by the same rule
  until ``retry_attempts`` retries were made. The run's trigger reason names the rule.
- ``remediate``: a run of the named remediation job (a live job of the same tenant and environment,
  its applied definition), now.
- ``pause``: the job is paused through ``jobs.services.set_paused`` by the system with the rule as
  its authority (``RulePause``: the rule's approved change request), the reason naming the rule.
- ``page``: an alert signal to ``monitoring.incidents.raise_alert`` with the rule's severity.

At most ``max_actions`` actions per rule and job in ``window_minutes``: past the cap the rule
records that it held back. Every action, and every held-back one, is a ``RecoveryAction`` row and a
``recovery.action`` audit event naming the rule and the run, in one transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from governance import audit
from governance.actors import SYSTEM
from governance.errors import ServiceError
from governance.models import AuditAction
from governance.patterns import PatternError, compile_user_pattern
from jobs.models import Job, JobStatus, Run, RunStatus, TriggerKind
from jobs.queue import enqueue_run
from jobs.services import set_paused

from . import incidents
from .models import RecoveryAction, RecoveryActionKind, RecoveryOutcome, RecoveryRule
from .signals import AlertSignal

log = logging.getLogger(__name__)

FAILED = (RunStatus.FAILED, RunStatus.TIMED_OUT)


def rules_for(run: Run) -> list[RecoveryRule]:
    """The rules of the run's job and of its team, in its environment (one query)."""
    job = run.job
    return list(
        RecoveryRule.objects.filter(tenant_id=job.tenant_id, environment_id=job.environment_id)
        .filter(Q(job_id=job.pk) | Q(team_id=job.team_id))
        .select_related("remediation_job")
        .order_by("pk")
    )


def matches(rule: RecoveryRule, run: Run) -> bool:
    if rule.exit_codes and run.exit_code not in rule.exit_codes:
        return False
    if rule.http_statuses and run.http_status not in rule.http_statuses:
        return False
    if rule.output_pattern:
        try:
            program = compile_user_pattern(rule.output_pattern)
        except PatternError:  # validated when proposed; never fall back to a backtracking engine
            return False
        if program.search(run.output or "") is None:
            return False
    return True


def evaluate(run: Run, *, now: datetime | None = None) -> list[RecoveryAction]:
    """Act on a finished run (any state; only failures match). Called by ``listeners.run_finished``."""
    if run.status not in FAILED:
        return []
    done = []
    for rule in rules_for(run):
        if not matches(rule, run):
            continue
        try:
            action = _act(rule, run, now or timezone.now())
        except Exception:
            log.exception("recovery rule %s failed for run %s", rule.pk, run.pk)
            continue
        if action is not None:
            done.append(action)
    return done


def retry_delay(rule: RecoveryRule, number: int) -> float:
    """Seconds before the ``number``-th retry (1-based)."""
    return rule.retry_delay_seconds * rule.retry_factor ** max(0, number - 1)


def page_signal(rule: RecoveryRule, run: Run, at: datetime) -> AlertSignal:
    """What the page action reports to incidents: one fingerprint per rule and job."""
    job = run.job
    return AlertSignal(
        tenant_id=job.tenant_id,
        job_id=job.pk,
        kind="recovery_page",
        severity=rule.severity,
        fingerprint=f"recovery:{rule.pk}:job:{job.pk}",
        summary=f"{job.name}: run #{run.pk} failed ({_failure(run)}); recovery rule {rule.name} pages.",
        at=at,
        run_id=run.pk,
        details={"recovery_rule_id": rule.pk, "recovery_rule": rule.name, "exit_code": run.exit_code},
    )


def _failure(run: Run) -> str:
    if run.http_status is not None:
        return f"HTTP {run.http_status}"
    if run.exit_code is not None:
        return f"exit {run.exit_code}"
    return run.status


def _act(rule: RecoveryRule, run: Run, now: datetime) -> RecoveryAction | None:
    with transaction.atomic():
        # One evaluation of a rule at a time: the cap counts what the others did.
        rule = RecoveryRule.objects.select_for_update(of=("self",)).select_related("remediation_job").get(pk=rule.pk)
        if RecoveryAction.objects.filter(rule=rule, run=run).exists():
            return None  # the run was reported twice
        action = RecoveryAction(
            tenant_id=run.tenant_id,
            rule=rule,
            rule_name=rule.name,
            job_id=run.job_id,
            run=run,
            action=rule.action,
            at=now,
        )
        recent = RecoveryAction.objects.filter(
            rule=rule,
            job_id=run.job_id,
            outcome=RecoveryOutcome.DONE,
            at__gt=now - timedelta(minutes=rule.window_minutes),
        ).count()
        if recent >= rule.max_actions:
            action.outcome = RecoveryOutcome.CAPPED
            action.detail = (
                f"{recent} actions of this rule for this job in the last {rule.window_minutes} min "
                f"(at most {rule.max_actions}): nothing done."
            )
        else:
            try:
                with transaction.atomic():
                    _perform(rule, run, action, now)
            except (ServiceError, NotImplementedError, IntegrityError) as exc:
                action.outcome = RecoveryOutcome.FAILED
                action.detail = f"{action.detail} {exc.__class__.__name__}: {exc}".strip()
                action.started_run = None
        action.save()
        audit.record(
            AuditAction.RECOVERY_ACTION,
            actor=SYSTEM,
            obj=run,
            team_id=run.job.team_id,
            environment_id=run.job.environment_id,
            data={
                "rule": rule.name,
                "rule_id": rule.pk,
                "change_request": rule.change_request_id,
                "run": run.pk,
                "job": run.job.name,
                "action": rule.action,
                "outcome": action.outcome,
                "detail": action.detail,
                "started_run": action.started_run_id,
            },
        )
    return action


def _perform(rule: RecoveryRule, run: Run, action: RecoveryAction, now: datetime) -> None:
    job = Job.objects.get(pk=run.job_id)
    label = f"Recovery rule {rule.name} (change request #{rule.change_request_id})"
    if rule.action == RecoveryActionKind.RETRY:
        previous = RecoveryAction.objects.filter(rule=rule, started_run_id=run.pk).first()
        number = (previous.retry_number or 0) + 1 if previous else 1
        if number > rule.retry_attempts:
            action.outcome = RecoveryOutcome.EXHAUSTED
            action.detail = f"Run #{run.pk} was retry {number - 1} of {rule.retry_attempts}: no retry left."
            return
        if job.status != JobStatus.ENABLED:
            action.outcome = RecoveryOutcome.REFUSED
            action.detail = f"The job is {job.status}: not retried."
            return
        delay = retry_delay(rule, number)
        reason = (
            f"{label}: retry {number} of {rule.retry_attempts} after {delay:g} s, "
            f"run #{run.pk} failed ({_failure(run)})."
        )
        action.started_run = _start_run(job, reason=reason, at=now + timedelta(seconds=delay), now=now)
        action.retry_number = number
        action.outcome = RecoveryOutcome.DONE
        action.detail = reason
    elif rule.action == RecoveryActionKind.REMEDIATE:
        remediation = rule.remediation_job
        if remediation is None or remediation.status == JobStatus.DELETED:
            action.outcome = RecoveryOutcome.REFUSED
            action.detail = "The remediation job no longer exists."
            return
        reason = f"{label}: remediation for run #{run.pk} of {job.name}, which failed ({_failure(run)})."
        action.started_run = _start_run(remediation, reason=reason, at=now, now=now)
        action.outcome = RecoveryOutcome.DONE
        action.detail = reason
    elif rule.action == RecoveryActionKind.PAUSE:
        reason = f"{label}: run #{run.pk} failed ({_failure(run)})."
        action.detail = reason
        set_paused(job, actor=SYSTEM, paused=True, reason=reason, authority=RulePause(rule.pk, job))
        action.outcome = RecoveryOutcome.DONE
    elif rule.action == RecoveryActionKind.PAGE:
        signal = page_signal(rule, run, now)
        action.detail = signal.summary
        incidents.raise_alert(signal)
        action.outcome = RecoveryOutcome.DONE


@dataclass(frozen=True)
class RulePause:
    """The approved recovery rule as the authority to pause one job (``jobs.authority``): the system
    never pauses a job on its own. It authorises only while the rule, as stored, is live through an
    approved change request, has the pause action, and covers this job (its job, or its team) in the
    job's tenant and environment; history and audit name the rule's change request."""

    rule_id: int
    job: Job

    def _live(self) -> RecoveryRule | None:
        return (
            RecoveryRule.objects.filter(
                pk=self.rule_id,
                action=RecoveryActionKind.PAUSE,
                tenant_id=self.job.tenant_id,
                environment_id=self.job.environment_id,
                change_request_id__isnull=False,
            )
            .filter(Q(job_id=self.job.pk) | Q(team_id=self.job.team_id))
            .first()
        )

    @property
    def pk(self) -> int | None:
        rule = self._live()
        return rule.change_request_id if rule is not None else None

    @property
    def tenant_id(self) -> int:
        return self.job.tenant_id

    @property
    def team_id(self) -> int | None:
        return self.job.team_id

    @property
    def environment_id(self) -> int | None:
        return self.job.environment_id

    @property
    def job_id(self) -> int | None:
        return self.job.pk

    @property
    def action(self) -> str:
        return "pause"

    def is_applying(self) -> bool:
        return self._live() is not None


def _start_run(job: Job, *, reason: str, at: datetime, now: datetime) -> Run:
    """A run of the job's applied definition: queued now, or scheduled for the retry sweep
    (``jobs.recovery``) to queue at ``at``."""
    later = at > now
    run = Run.objects.create(
        job=job,
        tenant_id=job.tenant_id,
        scheduled_for=at,
        trigger=TriggerKind.RECOVERY,
        reason=reason,
        trigger_reason=reason,
        status=RunStatus.SCHEDULED if later else RunStatus.QUEUED,
        next_attempt_at=at if later else None,
        queued_at=None if later else now,
        job_version=job.version,
        definition=job.definition(),
    )
    if not later:
        transaction.on_commit(lambda: enqueue_run(run.pk))
    return run
