"""The alert rules in the monitor loop and on a finished run: evaluate, then hand the result to
incidents (``raise_alert`` for what fires, ``resolve_fingerprint`` for what stopped holding)."""

from __future__ import annotations

import datetime as dt
import logging

from django.utils import timezone

from jobs.models import Run, RunStatus

from . import gates, incidents
from .models import DurationSamples, RuleKind
from .rule_params import MAX_SAMPLES
from .rules import DEFAULT_RULES, Evaluation, evaluate

log = logging.getLogger("governor.monitor")


def deliver(result: Evaluation, now: dt.datetime) -> None:
    """Each signal and clear on its own: one that fails is logged and the others still go."""
    for signal in result.signals:
        try:
            incidents.raise_alert(signal)
        except Exception:
            log.exception("raising %s failed", signal.fingerprint)
    for clear in result.clears:
        try:
            incidents.resolve_fingerprint(clear.tenant_id, clear.fingerprint, at=now, reason=clear.reason)
        except Exception:
            log.exception("resolving %s failed", clear.fingerprint)


def evaluate_rules(now: dt.datetime) -> Evaluation:
    """The monitor loop's step (registered as ``alert_rules`` in ``MonitoringConfig.ready``)."""
    result = evaluate(now)
    deliver(result, now)
    return result


def _durations_matter(run: Run) -> bool:
    # The run's own definition names the criticality it ran with: no read of the job.
    definition = run.definition if isinstance(run.definition, dict) else {}
    criticality = definition.get("criticality") or run.job.criticality
    return criticality in DEFAULT_RULES or run.tenant_id in gates.tenants_with_rules()


def record_duration(run: Run) -> None:
    """Keep the job's last successful durations (newest first) for the p90/p95 of its rules."""
    rows = (
        Run.objects.filter(
            job_id=run.job_id,
            status=RunStatus.SUCCEEDED,
            parent__isnull=True,
            started_at__isnull=False,
            finished_at__isnull=False,
        )
        .order_by("-scheduled_for", "-id")
        .values_list("started_at", "finished_at")[:MAX_SAMPLES]
    )
    seconds = [round((finished - started).total_seconds(), 3) for started, finished in rows if started and finished]
    DurationSamples.objects.update_or_create(job_id=run.job_id, defaults={"seconds": seconds})


def on_run_finished(run: Run) -> Evaluation | None:
    """A run ended: a failure (after retries) alerts at once, not on the next cycle; a success
    refreshes the duration samples and clears the job's run-failed alerts. Never raises: the other
    parts listening to the same run (recovery, incidents) still hear of it."""
    try:
        return _on_run_finished(run)
    except Exception:
        log.exception("alert rules for finished run %s failed", run.pk)
        return None


def _on_run_finished(run: Run) -> Evaluation | None:
    if run.parent_id is not None:
        return None  # a partition: its parent run reports for the slot
    if run.status == RunStatus.SUCCEEDED:
        # Durations feed the defaults of critical and high jobs and the tenant's own rules; the
        # run-failed alerts a success ends are cleared by the next cycle (and the incidents by
        # incident_listeners at once).
        if _durations_matter(run):
            record_duration(run)
        return None
    if run.status not in (RunStatus.FAILED, RunStatus.TIMED_OUT):
        return None
    now = timezone.now()
    if run.finished_at is not None and run.finished_at > now:
        now = run.finished_at
    result = evaluate(now, job_ids=[run.job_id], kinds=[RuleKind.RUN_FAILED])
    deliver(result, now)
    return result
