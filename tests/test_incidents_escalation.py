"""Escalation on a deterministic clock: step 1 when the incident opens, step 2 after its delay without
an acknowledgement, exactly once per step and recipient; acknowledging or resolving stops it; a
silence or a maintenance window records the incident and notifies nobody."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection

from governance.actors import SYSTEM
from monitoring import oncall_services
from monitoring.escalation import escalate
from monitoring.incidents import acknowledge, raise_alert, resolve
from monitoring.loop import STEPS
from monitoring.models import Incident, IncidentState
from notifications.models import Channel, Notification
from tests.incident_support import T0, policy, rotation, signal, with_email

MIN = dt.timedelta(minutes=1)


def sent() -> list[tuple[str, str]]:
    """(dedupe key without the recipient, recipient) of every incident notification, in order (the
    change requests that set up the job notify their reviewers too)."""
    rows = Notification.objects.filter(source__startswith="incident:").order_by("id").select_related("user", "channel")
    return [(n.dedupe_key.split("|")[0], n.user.username if n.user else f"channel:{n.channel.name}") for n in rows]


@pytest.fixture
def escalating(cast):
    """payments: operator on call; step 1 the on-call person, step 2 (15 min later) approver and a webhook."""
    with_email(cast.operator, cast.approver, cast.admin)
    rotation(cast.payments, [cast.operator])
    hook = Channel.objects.create(
        tenant=cast.acme,
        team=cast.payments,
        name="pager",
        kind="webhook",
        target="https://x",
        secret="vault:secret/governor/acme/prod/hooks#pager",
    )
    policy(
        cast.acme,
        cast.payments,
        [
            {"delay_minutes": 15, "notify_on_call": True},
            {"delay_minutes": 30, "notify_on_call": False, "users": [cast.approver], "channels": [hook]},
        ],
    )
    return cast.make_job(cast.prod)


def test_step_two_is_notified_after_its_delay_without_acknowledgement_exactly_once(escalating, cast):
    incident = raise_alert(signal(escalating, run_id=1))
    key = f"incident:{incident.pk}"
    assert sent() == [(f"{key}:step:1:round:1", "acme-operator")]
    assert escalate(T0 + 14 * MIN) == 0
    assert escalate(T0 + 15 * MIN) == 1
    expected = [
        (f"{key}:step:1:round:1", "acme-operator"),
        (f"{key}:step:2:round:1", "acme-approver"),
        (f"{key}:step:2:round:1", "channel:pager"),
    ]
    assert sent() == expected
    # The same instant again, another alert joining, a later cycle before step 2's delay: nothing more.
    assert escalate(T0 + 15 * MIN) == 0
    raise_alert(signal(escalating, run_id=2, at=T0 + 20 * MIN))
    escalate(T0 + 44 * MIN)
    assert sent() == expected
    # After the last step's delay the policy has no round left: escalation ends, on the timeline.
    escalate(T0 + 45 * MIN)
    incident.refresh_from_db()
    assert incident.next_escalation_at is None and sent() == expected
    assert incident.events.last().kind == "exhausted"
    assert Notification.objects.filter(source__startswith="incident:").first().payload["incident"] == incident.pk
    assert f"/incidents/{incident.pk}/" in Notification.objects.filter(source__startswith="incident:").first().body


def test_the_monitor_loop_runs_the_escalation_step(escalating):
    step = dict(STEPS)["escalation"]  # registered by MonitoringConfig.ready()
    incident = raise_alert(signal(escalating, run_id=1))
    step(T0 + 15 * MIN)
    assert [k for k, _ in sent()].count(f"incident:{incident.pk}:step:2:round:1") == 2


def test_a_repeating_policy_starts_again_from_step_one(cast):
    with_email(cast.approver)
    policy(cast.acme, cast.payments, [{"delay_minutes": 10, "users": [cast.approver]}], repeat=1)
    incident = raise_alert(signal(cast.make_job(cast.prod), run_id=1))
    escalate(T0 + 10 * MIN)
    escalate(T0 + 20 * MIN)
    escalate(T0 + 30 * MIN)
    key = f"incident:{incident.pk}"
    assert sent() == [(f"{key}:step:1:round:1", "acme-approver"), (f"{key}:step:1:round:2", "acme-approver")]


def test_acknowledging_stops_the_escalation(escalating, cast):
    incident = raise_alert(signal(escalating, run_id=1))
    acknowledge(incident, actor=cast.operator, now=T0 + 5 * MIN)
    for minutes in (15, 60, 600):
        escalate(T0 + minutes * MIN)
    assert len(sent()) == 1
    # A new alert joining an acknowledged incident pages nobody either.
    raise_alert(signal(escalating, run_id=2, at=T0 + 20 * MIN))
    assert len(sent()) == 1


def test_resolving_stops_the_escalation(escalating, cast):
    incident = raise_alert(signal(escalating, run_id=1))
    resolve(incident, actor=cast.operator, reason="fixed", now=T0 + 5 * MIN)
    escalate(T0 + 60 * MIN)
    assert len(sent()) == 1


def test_a_silenced_job_records_the_incident_and_notifies_nobody_until_the_silence_ends(escalating, cast):
    silence = oncall_services.create_silence(
        actor=cast.admin,
        tenant=cast.acme,
        job=escalating,
        starts_at=T0 - 60 * MIN,
        ends_at=T0 + 30 * MIN,
        reason="migrating the ledger",
    )
    incident = raise_alert(signal(escalating, run_id=1))
    assert incident.state == IncidentState.TRIGGERED and sent() == []
    assert incident.silenced_until == silence.ends_at and "migrating the ledger" in incident.silence_reason
    assert [e.kind for e in incident.events.all()] == ["opened", "silenced"]
    for minutes in (15, 29):
        escalate(T0 + minutes * MIN)
    assert sent() == []
    # The silence over and nobody acknowledged: the policy starts from step 1.
    escalate(T0 + 30 * MIN)
    assert sent() == [(f"incident:{incident.pk}:step:1:round:1", "acme-operator")]


def test_a_team_silence_and_a_tag_free_team_do_not_leak_to_other_teams(escalating, cast):
    oncall_services.create_silence(
        actor=cast.admin, tenant=cast.acme, team=cast.data, starts_at=T0 - MIN, ends_at=T0 + 60 * MIN, reason="data"
    )
    raise_alert(signal(escalating, run_id=1))
    assert len(sent()) == 1  # payments is not silenced by data's silence
    oncall_services.create_silence(
        actor=cast.admin, tenant=cast.acme, team=cast.payments, starts_at=T0 - MIN, ends_at=T0 + 60 * MIN, reason="p"
    )
    raise_alert(signal(escalating, rule_id=8, run_id=1))
    assert len(sent()) == 1


def test_a_maintenance_window_silences_its_jobs_unless_the_route_pages_anyway(escalating, cast):
    cast.make_window(
        environment=cast.prod, name="db upgrade", starts_at="2026-12-01T09:00:00Z", ends_at="2026-12-01T11:00:00Z"
    )
    incident = raise_alert(signal(escalating, run_id=1))
    assert sent() == [] and "maintenance window db upgrade" in incident.silence_reason
    assert incident.next_escalation_at == dt.datetime(2026, 12, 1, 11, 0, tzinfo=dt.UTC)
    route = incident.escalation_policy.routes.get()
    oncall_services.save_route(
        actor=SYSTEM,
        tenant=cast.acme,
        team=cast.payments,
        policy=route.policy,
        page_during_maintenance=True,
        route=route,
    )
    other = raise_alert(signal(escalating, rule_id=8, run_id=1))
    assert sent() == [(f"incident:{other.pk}:step:1:round:1", "acme-operator")]


def test_routes_pick_the_most_specific_policy(cast):
    with_email(cast.approver, cast.admin, cast.operator)
    default = policy(cast.acme, None, [{"users": [cast.admin]}], name="tenant default")
    critical = oncall_services.save_policy(
        actor=SYSTEM,
        tenant=cast.acme,
        team=cast.payments,
        name="payments critical prod",
        steps=[{"delay_minutes": 5, "notify_on_call": False, "users": [cast.approver], "channels": []}],
    )
    oncall_services.save_route(
        actor=SYSTEM,
        tenant=cast.acme,
        team=cast.payments,
        policy=critical,
        criticality="critical",
        environment=cast.prod,
    )
    prod_critical = cast.make_job(cast.prod, criticality="critical", rationale="Critical without a heartbeat: test.")
    dev_job = cast.make_job(cast.dev, name="payments.ledger.dev")
    assert raise_alert(signal(prod_critical, run_id=1)).escalation_policy == critical
    assert raise_alert(signal(dev_job, run_id=1)).escalation_policy == default
    globex = raise_alert(signal(cast.make_job(cast.globex_prod), run_id=1))
    assert globex.escalation_policy is None  # acme's routes never reach globex


@pytest.mark.django_db(transaction=True)
def test_two_processes_raising_one_fingerprint_at_once_open_one_incident(tcast):
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (SQLite serialises them)")
    job = tcast.make_job(tcast.dev)
    barrier = threading.Barrier(4)
    opened: list[int] = []

    def fire(run_id: int) -> None:
        barrier.wait()
        try:
            opened.append(raise_alert(signal(job, run_id=run_id)).pk)
        finally:
            connection.close()  # this thread's own connection, or the test database cannot be dropped

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(opened)) == 1 and len(opened) == 4
    assert Incident.objects.get().alert_count == 4
