"""Recovery rules acting on real sandboxed runs: retry with backoff until the job succeeds, a
remediation job on an output match, pause, page, the cap per window, and nothing for a failure the
rule does not match."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.models import ChangeStatus
from approvals.services import approve_change, propose_config_change
from governance.actors import SYSTEM
from governance.models import AuditEvent
from governance.services import AccessDenied
from jobs import recovery as sweeps
from jobs.executor import execute_run
from jobs.models import JobStatus, Run, RunStatus
from jobs.services import set_paused, trigger_run
from monitoring import recovery
from monitoring.models import RecoveryAction, RecoveryRule

PY = "/usr/bin/python3"
# Fails with exit 3 and "lock held" while the run is scheduled before the cutoff (argv[1], epoch s).
LOCKED_UNTIL = (
    "import os, sys, datetime as d\n"
    "at = d.datetime.fromisoformat(os.environ['GOVERNOR_SCHEDULED_FOR'].replace('Z', '+00:00')).timestamp()\n"
    "if at < float(sys.argv[1]):\n"
    "    print('ledger lock held by pid 42'); sys.exit(3)\n"
    "print('reconciled')\n"
)


def make_rule(cast, environment=None, **definition) -> RecoveryRule:
    definition.setdefault("name", "ledger-recovery")
    definition.setdefault("job", "payments.ledger.reconcile")
    change = propose_config_change(
        actor=cast.author,
        kind="recovery_rule",
        action="create",
        environment=environment or cast.dev,
        definition=definition,
        justification="Recover the ledger job.",
    )
    assert change.status == ChangeStatus.APPLIED, change.failure_reason
    return RecoveryRule.objects.get(pk=change.target_id)


def execute(django_capture_on_commit_callbacks, run: Run) -> Run:
    """Execute a queued run in the sandbox; its end is committed, so the run-finished listeners hear of it."""
    with django_capture_on_commit_callbacks(execute=True):
        execute_run(run.pk)
    run.refresh_from_db()
    return run


def trigger(cast, job, capture) -> Run:
    with capture(execute=True):
        run = trigger_run(job, actor=cast.operator, reason="test")
    return execute(capture, run)


def test_exit_3_with_matching_output_is_retried_with_backoff_until_it_succeeds(
    cast, django_capture_on_commit_callbacks
):
    cutoff = (timezone.now() + timedelta(seconds=45)).timestamp()
    job = cast.make_job(cast.dev, command=[PY, "-c", LOCKED_UNTIL, str(cutoff)])
    rule = make_rule(
        cast,
        exit_codes=[3],
        output_pattern=r"lock (held|busy)",
        action="retry",
        retry_attempts=3,
        retry_delay_seconds=30,
        retry_factor=2,
    )
    first = trigger(cast, job, django_capture_on_commit_callbacks)
    assert (first.status, first.exit_code) == (RunStatus.FAILED, 3)

    runs = [first]
    for expected_delay in (30, 60):
        retry = Run.objects.exclude(pk__in=[r.pk for r in runs]).get(job=job)
        # Not queued before its backoff: the retry sweep leaves it until next_attempt_at.
        assert retry.status == RunStatus.SCHEDULED and retry.trigger == "recovery"
        delay = (retry.next_attempt_at - runs[-1].finished_at).total_seconds()
        assert expected_delay <= delay < expected_delay + 5, delay
        assert f"Recovery rule {rule.name}" in retry.trigger_reason and f"run #{runs[-1].pk}" in retry.trigger_reason
        sweeps.sweep(now=retry.next_attempt_at - timedelta(seconds=1))
        retry.refresh_from_db()
        assert retry.status == RunStatus.SCHEDULED
        sweeps.sweep(now=retry.next_attempt_at)
        retry = execute(django_capture_on_commit_callbacks, retry)
        runs.append(retry)

    assert [(r.status, r.exit_code) for r in runs] == [
        (RunStatus.FAILED, 3),
        (RunStatus.FAILED, 3),
        (RunStatus.SUCCEEDED, 0),
    ]
    assert runs[-1].output.strip() == "reconciled"
    # Success ends it: no further run.
    assert Run.objects.filter(job=job).count() == 3
    actions = list(RecoveryAction.objects.order_by("at", "id"))
    assert [(a.action, a.outcome, a.retry_number, a.run_id, a.started_run_id) for a in actions] == [
        ("retry", "done", 1, runs[0].pk, runs[1].pk),
        ("retry", "done", 2, runs[1].pk, runs[2].pk),
    ]
    events = AuditEvent.objects.filter(action="recovery.action").order_by("seq")
    assert [(e.data["rule"], e.data["run"], e.data["started_run"]) for e in events] == [
        (rule.name, runs[0].pk, runs[1].pk),
        (rule.name, runs[1].pk, runs[2].pk),
    ]
    assert all(e.actor_id is None and e.data["change_request"] == rule.change_request_id for e in events)


def test_retries_stop_after_the_rules_attempts(cast, django_capture_on_commit_callbacks):
    job = cast.make_job(cast.dev, command=[PY, "-c", "print('lock held'); raise SystemExit(3)"])
    make_rule(cast, exit_codes=[3], action="retry", retry_attempts=1, retry_delay_seconds=0)
    first = trigger(cast, job, django_capture_on_commit_callbacks)
    retry = Run.objects.exclude(pk=first.pk).get(job=job)
    assert retry.status == RunStatus.QUEUED  # no delay: queued at once
    retry = execute(django_capture_on_commit_callbacks, retry)
    assert retry.status == RunStatus.FAILED
    assert Run.objects.filter(job=job).count() == 2
    last = RecoveryAction.objects.get(run=retry)
    assert last.outcome == "exhausted" and "no retry left" in last.detail


def test_an_output_match_runs_the_remediation_job(cast, django_capture_on_commit_callbacks):
    job = cast.make_job(cast.dev, command=[PY, "-c", "print('write failed: disk full on /data'); raise SystemExit(1)"])
    cleanup = cast.make_job(cast.dev, name="payments.disk.cleanup", command=["/bin/echo", "cleaned /data"])
    rule = make_rule(
        cast, output_pattern=r"disk (full|quota exceeded)", action="remediate", remediation_job=cleanup.name
    )
    failed = trigger(cast, job, django_capture_on_commit_callbacks)
    assert failed.status == RunStatus.FAILED
    remediation = Run.objects.get(job=cleanup)
    assert remediation.status == RunStatus.QUEUED and remediation.trigger == "recovery"
    assert remediation.trigger_reason.startswith(
        f"Recovery rule {rule.name} (change request #{rule.change_request_id})"
    )
    assert remediation.definition == cleanup.definition() and remediation.job_version == cleanup.version
    remediation = execute(django_capture_on_commit_callbacks, remediation)
    assert remediation.status == RunStatus.SUCCEEDED and remediation.output.strip() == "cleaned /data"
    action = RecoveryAction.objects.get()
    assert (action.action, action.outcome, action.run_id, action.started_run_id) == (
        "remediate",
        "done",
        failed.pk,
        remediation.pk,
    )


def test_a_matching_failure_pauses_the_job_as_the_system_naming_the_rule(cast, django_capture_on_commit_callbacks):
    # Pausing high-criticality jobs is under change control in prod; the approved rule stands for it.
    job = cast.make_job(cast.prod, command=[PY, "-c", "raise SystemExit(2)"])
    change = propose_config_change(
        actor=cast.author,
        kind="recovery_rule",
        action="create",
        environment=cast.prod,
        definition={"name": "stop-on-2", "job": job.name, "exit_codes": [2], "action": "pause"},
        justification="Stop the job on a data error.",
    )
    change = approve_change(approve_change(change, actor=cast.approver), actor=cast.approver2)
    assert change.status == ChangeStatus.APPLIED
    failed = trigger(cast, job, django_capture_on_commit_callbacks)
    assert failed.status == RunStatus.FAILED
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED
    paused = AuditEvent.objects.filter(action="job.paused").latest("seq")
    assert paused.actor_id is None and "Recovery rule stop-on-2" in paused.data["reason"]
    assert f"run #{failed.pk}" in paused.data["reason"]
    assert paused.data["change_request"] == change.pk
    assert job.history.first().history_change_reason.startswith(
        f"paused through change request #{change.pk}: Recovery rule stop-on-2"
    )


def test_a_rule_authorises_pausing_only_the_jobs_it_covers_with_its_pause_action(cast):
    job = cast.make_job(cast.dev)
    other = cast.make_job(cast.dev, name="payments.ledger.export")
    pause = make_rule(cast, exit_codes=[2], action="pause")
    retry = make_rule(cast, name="retry-it", exit_codes=[3], action="retry")
    for authority in (recovery.RulePause(pause.pk, other), recovery.RulePause(retry.pk, job)):
        with pytest.raises(AccessDenied):
            set_paused(authority.job, actor=SYSTEM, paused=True, reason="forged", authority=authority)
    # The system alone never pauses.
    with pytest.raises(AccessDenied):
        set_paused(job, actor=SYSTEM, paused=True, reason="no authority")
    job.refresh_from_db()
    other.refresh_from_db()
    assert job.status == other.status == JobStatus.ENABLED


def test_the_page_action_reports_the_rules_severity_to_incidents(cast, django_capture_on_commit_callbacks):
    job = cast.make_job(cast.dev, command=[PY, "-c", "raise SystemExit(7)"])
    rule = make_rule(cast, exit_codes=[7], action="page", severity="critical")
    failed = trigger(cast, job, django_capture_on_commit_callbacks)
    action = RecoveryAction.objects.get()
    signal = recovery.page_signal(rule, failed, action.at)
    assert (signal.tenant_id, signal.job_id, signal.run_id, signal.severity, signal.kind) == (
        cast.acme.pk,
        job.pk,
        failed.pk,
        "critical",
        "recovery_page",
    )
    assert signal.fingerprint == f"recovery:{rule.pk}:job:{job.pk}"
    assert "exit 7" in signal.summary and rule.name in signal.summary
    assert action.action == "page" and action.detail.startswith(signal.summary)


def test_the_cap_per_window_stops_the_fourth_action(cast, django_capture_on_commit_callbacks):
    job = cast.make_job(cast.dev, command=[PY, "-c", "raise SystemExit(1)"])
    cleanup = cast.make_job(cast.dev, name="payments.disk.cleanup", command=["/bin/true"])
    make_rule(cast, exit_codes=[1], action="remediate", remediation_job=cleanup.name, max_actions=3, window_minutes=60)
    for _ in range(4):
        assert trigger(cast, job, django_capture_on_commit_callbacks).status == RunStatus.FAILED
    outcomes = list(RecoveryAction.objects.order_by("at", "id").values_list("outcome", flat=True))
    assert outcomes == ["done", "done", "done", "capped"]
    assert Run.objects.filter(job=cleanup).count() == 3
    capped = AuditEvent.objects.filter(action="recovery.action").latest("seq")
    assert capped.data["outcome"] == "capped" and "at most 3" in capped.data["detail"]
    # Past the window the rule acts again (the run ends without the listeners; evaluated an hour later).
    fifth = trigger_run(job, actor=cast.operator, reason="test")
    execute_run(fifth.pk)
    fifth.refresh_from_db()
    assert not RecoveryAction.objects.filter(run=fifth).exists()
    acted = recovery.evaluate(fifth, now=timezone.now() + timedelta(minutes=61))
    assert [a.outcome for a in acted] == ["done"]
    # Reported again, the same run is acted on once per rule.
    assert recovery.evaluate(fifth, now=timezone.now() + timedelta(minutes=62)) == []


def test_a_failure_the_rule_does_not_match_does_nothing(cast, django_capture_on_commit_callbacks):
    job = cast.make_job(cast.dev, command=[PY, "-c", "print('lock held'); raise SystemExit(4)"])
    make_rule(cast, exit_codes=[3], output_pattern="lock held", action="retry", retry_delay_seconds=0)
    other = cast.make_job(cast.dev, name="payments.ledger.export", command=[PY, "-c", "raise SystemExit(3)"])
    assert trigger(cast, job, django_capture_on_commit_callbacks).status == RunStatus.FAILED
    # Exit 3 but another job, and no matching output: neither is the rule's.
    assert trigger(cast, other, django_capture_on_commit_callbacks).status == RunStatus.FAILED
    assert not RecoveryAction.objects.exists()
    assert Run.objects.count() == 2
    assert not AuditEvent.objects.filter(action="recovery.action").exists()


def test_a_team_rule_matches_http_statuses_of_its_teams_jobs(cast):
    job = cast.make_job(cast.dev)
    rule = make_rule(cast, job="", team="payments", http_statuses=[502, 503], action="page")
    run = cast.queued_run(job)
    run.status, run.http_status = RunStatus.FAILED, 503
    assert recovery.rules_for(run) == [rule] and recovery.matches(rule, run)
    run.http_status = 500
    assert not recovery.matches(rule, run)


def test_the_api_lists_what_the_rules_did_to_the_tenant_only(cast, django_capture_on_commit_callbacks):
    from tests.api_support import client_for

    job = cast.make_job(cast.dev, command=[PY, "-c", "raise SystemExit(2)"])
    make_rule(cast, exit_codes=[2], action="pause")
    failed = trigger(cast, job, django_capture_on_commit_callbacks)
    rows = client_for(cast.viewer).get("/api/v1/recovery-actions/").json()["results"]
    assert [(r["rule_name"], r["job"], r["run"], r["action"], r["outcome"]) for r in rows] == [
        ("ledger-recovery", job.name, failed.pk, "pause", "done")
    ]
    assert client_for(cast.globex_admin).get("/api/v1/recovery-actions/").json()["results"] == []
