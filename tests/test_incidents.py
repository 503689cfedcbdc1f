"""Incidents: alerts deduplicated by fingerprint, opened from jobs' own alerts, resolved by the next
success, acknowledged and resolved by operators (not viewers, not other tenants), every transition audited."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from conftest import PASSWORD
from governance import audit
from governance.models import AuditAction, AuditEvent
from jobs import hooks
from jobs.alerts import create_alert
from jobs.models import Alert, AlertKind, Run, RunStatus
from monitoring.incidents import acknowledge, raise_alert, resolve, resolve_fingerprint
from monitoring.models import Incident, IncidentEvent, IncidentState
from notifications.models import Notification
from tests.api_support import client_for
from tests.incident_support import T0, policy, signal, with_email


def _run(job, status, *, at=T0):
    return Run.objects.create(
        job=job,
        tenant_id=job.tenant_id,
        scheduled_for=at,
        started_at=at,
        finished_at=at + dt.timedelta(seconds=5),
        status=status,
        job_version=job.version,
        definition=job.definition(),
    )


def test_alerts_with_one_fingerprint_join_one_open_incident(cast):
    job = cast.make_job(cast.dev)
    first = raise_alert(signal(job, run_id=1))
    second = raise_alert(signal(job, run_id=2, at=T0 + dt.timedelta(minutes=5)))
    again = raise_alert(signal(job, run_id=2, at=T0 + dt.timedelta(minutes=5)))  # the same alert twice
    assert first.pk == second.pk == again.pk
    incident = Incident.objects.get()
    assert incident.alert_count == 2 and incident.last_alert_at == T0 + dt.timedelta(minutes=5)
    # Nobody routed, nobody on call: the timeline says so once.
    assert list(incident.events.values_list("kind", flat=True)) == ["opened", "unrouted", "alert"]
    # Another rule's fingerprint is another incident.
    assert raise_alert(signal(job, rule_id=8, run_id=1)).pk != first.pk


def test_a_resolved_fingerprint_opens_a_new_incident_but_the_same_runs_alert_does_not(cast):
    job = cast.make_job(cast.dev)
    first = raise_alert(signal(job, run_id=1))
    resolve_fingerprint(job.tenant_id, first.fingerprint, at=T0 + dt.timedelta(minutes=1), reason="rule cleared")
    assert raise_alert(signal(job, run_id=1)).pk == first.pk  # already seen: stays resolved
    second = raise_alert(signal(job, run_id=3, at=T0 + dt.timedelta(minutes=2)))
    assert second.pk != first.pk and second.state == IncidentState.TRIGGERED
    assert Incident.objects.filter(state=IncidentState.RESOLVED).get().pk == first.pk


def test_a_jobs_alert_opens_an_incident_of_its_job(cast, django_capture_on_commit_callbacks):
    job = cast.make_job(cast.prod, criticality="critical", rationale="Critical without a heartbeat: test.")
    run = _run(job, RunStatus.LOST)
    with django_capture_on_commit_callbacks(execute=True):
        create_alert(run, AlertKind.LOST_RUN, "worker died")
    incident = Incident.objects.get()
    assert (incident.job, incident.team, incident.environment, incident.kind) == (
        job,
        job.team,
        cast.prod,
        AlertKind.LOST_RUN,
    )
    assert incident.severity == "critical" and "worker died" in incident.summary
    assert incident.fingerprint == f"alert:lost_run:job:{job.pk}"
    # A second lost run of the job joins the incident.
    with django_capture_on_commit_callbacks(execute=True):
        create_alert(_run(job, RunStatus.LOST, at=T0 + dt.timedelta(hours=1)), AlertKind.LOST_RUN, "again")
    assert Incident.objects.get().alert_count == 2


def test_the_next_successful_run_resolves_the_jobs_incidents_and_alerts(cast, django_capture_on_commit_callbacks):
    job = cast.make_job(cast.dev)
    other = cast.make_job(cast.dev, name="payments.ledger.other")
    failed = _run(job, RunStatus.LOST)
    with django_capture_on_commit_callbacks(execute=True):
        create_alert(failed, AlertKind.LOST_RUN, "worker died")
    raise_alert(signal(job, run_id=failed.pk))
    unrelated = raise_alert(signal(other, run_id=99))
    now = timezone.now()
    hooks.run_finished(_run(job, RunStatus.FAILED, at=now))
    assert Incident.objects.filter(state=IncidentState.RESOLVED).count() == 0
    succeeded = _run(job, RunStatus.SUCCEEDED, at=now + dt.timedelta(seconds=10))
    hooks.run_finished(succeeded)
    # The lost run's alert, the signal raised above, and the job's default run_failed rule (a high job).
    resolved = Incident.objects.filter(job=job)
    assert {i.state for i in resolved} == {IncidentState.RESOLVED} and resolved.count() == 3
    for incident in resolved:
        assert incident.resolved_by is None and incident.resolution == f"run #{succeeded.pk} succeeded"
        assert incident.events.last().message == f"Resolved automatically: run #{succeeded.pk} succeeded"
    assert Alert.objects.get(job=job).resolved_at == succeeded.finished_at
    unrelated.refresh_from_db()
    assert unrelated.state == IncidentState.TRIGGERED


def test_every_transition_is_audited_and_the_chain_verifies(cast):
    job = cast.make_job(cast.dev)
    with_email(cast.operator)
    policy(cast.acme, cast.payments, [{"users": [cast.operator]}])
    incident = raise_alert(signal(job, run_id=1))
    acknowledge(incident, actor=cast.operator)
    resolve(incident, actor=cast.operator, reason="disk freed")
    events = AuditEvent.objects.filter(object_type="monitoring.incident", object_id=str(incident.pk)).order_by("seq")
    assert [(e.action, e.actor) for e in events] == [
        (AuditAction.INCIDENT_OPENED, None),
        (AuditAction.INCIDENT_NOTIFIED, None),
        (AuditAction.INCIDENT_ACKNOWLEDGED, cast.operator),
        (AuditAction.INCIDENT_RESOLVED, cast.operator),
    ]
    assert all(e.team_id == cast.payments.pk and e.tenant_id == cast.acme.pk for e in events)
    assert events.last().data["reason"] == "disk freed"
    assert audit.verify_chain(cast.acme.pk)[2] == ""
    kinds = list(IncidentEvent.objects.filter(incident=incident).values_list("kind", flat=True))
    assert kinds == ["opened", "notified", "acknowledged", "resolved"]


# --- access: operators act, viewers read, other tenants see nothing ---------------------------------


@pytest.fixture
def incident(cast):
    return raise_alert(signal(cast.make_job(cast.dev), run_id=1))


@pytest.fixture
def globex_incident(cast):
    return raise_alert(signal(cast.make_job(cast.globex_prod), run_id=1))


def test_an_operator_acknowledges_and_resolves_through_the_api(cast, incident):
    api = client_for(cast.operator)
    response = api.post(f"/api/v1/incidents/{incident.pk}/acknowledge/")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "acknowledged" and response.json()["acknowledged_by"] == "acme-operator"
    response = api.post(f"/api/v1/incidents/{incident.pk}/resolve/", {"reason": "fixed the disk"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "resolved" and [e["kind"] for e in body["timeline"]][-2:] == ["acknowledged", "resolved"]


def test_bad_transitions_answer_400_naming_the_field_and_change_nothing(cast, incident):
    api = client_for(cast.operator)
    no_reason = api.post(f"/api/v1/incidents/{incident.pk}/resolve/", {}, format="json")
    assert no_reason.status_code == 400 and "reason" in no_reason.json()
    assert api.post(f"/api/v1/incidents/{incident.pk}/resolve/", {"reason": "ok"}, format="json").status_code == 200
    before = AuditEvent.objects.count()
    again = api.post(f"/api/v1/incidents/{incident.pk}/resolve/", {"reason": "twice"}, format="json")
    assert again.status_code == 400 and again.json() == {"state": ["The incident is already resolved."]}
    ack = api.post(f"/api/v1/incidents/{incident.pk}/acknowledge/")
    assert ack.status_code == 400 and "state" in ack.json()
    incident.refresh_from_db()
    assert incident.resolution == "ok" and incident.acknowledged_at is None
    assert AuditEvent.objects.count() == before


def test_a_viewer_reads_but_cannot_acknowledge_or_resolve(cast, incident, client):
    api = client_for(cast.viewer)
    assert api.get(f"/api/v1/incidents/{incident.pk}/").status_code == 200
    assert api.post(f"/api/v1/incidents/{incident.pk}/acknowledge/").status_code == 403
    assert api.post(f"/api/v1/incidents/{incident.pk}/resolve/", {"reason": "x"}, format="json").status_code == 403
    client.login(username=cast.viewer.username, password=PASSWORD)
    page = client.get(reverse("incident_detail", args=[incident.pk]))
    assert page.status_code == 200 and b'data-testid="acknowledge"' not in page.content
    assert client.post(reverse("incident_acknowledge", args=[incident.pk])).status_code == 403
    incident.refresh_from_db()
    assert incident.state == IncidentState.TRIGGERED
    assert AuditEvent.objects.filter(action=AuditAction.ACCESS_DENIED, actor=cast.viewer).count() == 3


def test_another_tenants_incident_is_a_404_everywhere(cast, globex_incident, client):
    api = client_for(cast.admin)
    assert api.get("/api/v1/incidents/").json()["count"] == 0
    for path in ("", "acknowledge/", "resolve/"):
        method = api.get if not path else api.post
        assert method(f"/api/v1/incidents/{globex_incident.pk}/{path}").status_code == 404
    client.login(username=cast.admin.username, password=PASSWORD)
    assert client.get(reverse("incident_detail", args=[globex_incident.pk])).status_code == 404
    assert client.post(reverse("incident_acknowledge", args=[globex_incident.pk])).status_code == 404
    assert client.post(reverse("incident_resolve", args=[globex_incident.pk]), {"reason": "x"}).status_code == 404
    assert client.get(reverse("team_detail", args=[cast.ops.pk])).status_code == 404
    globex_incident.refresh_from_db()
    assert globex_incident.state == IncidentState.TRIGGERED
    # Probes of an existing foreign incident are on the record, in its tenant's chain.
    assert AuditEvent.objects.filter(action=AuditAction.ACCESS_DENIED, tenant=cast.globex, actor=cast.admin).exists()


def test_the_incidents_page_lists_open_first_and_filters(cast, client):
    job = cast.make_job(cast.dev)
    data_job = cast.make_job(cast.dev, team=cast.data)
    old = raise_alert(signal(job, run_id=1, at=T0, severity="low", summary="old one"))
    resolve(old, actor=cast.operator, reason="done")
    newer = raise_alert(signal(job, rule_id=9, run_id=2, at=T0 - dt.timedelta(hours=1), summary="open one"))
    data = raise_alert(signal(data_job, run_id=3, severity="critical", summary="data one"))
    client.login(username=cast.viewer.username, password=PASSWORD)
    page = client.get(reverse("incident_list"))
    assert [i.pk for i in page.context["incidents"]] == [data.pk, newer.pk, old.pk]
    assert b'data-testid="open-incidents">2<' in page.content  # the nav count
    assert [i.pk for i in client.get(reverse("incident_list"), {"state": "open"}).context["incidents"]] == [
        data.pk,
        newer.pk,
    ]
    assert [i.pk for i in client.get(reverse("incident_list"), {"severity": "critical"}).context["incidents"]] == [
        data.pk
    ]
    assert [i.pk for i in client.get(reverse("incident_list"), {"team": cast.data.pk}).context["incidents"]] == [
        data.pk
    ]
    api = client_for(cast.viewer)
    assert [i["id"] for i in api.get("/api/v1/incidents/", {"open": "true"}).json()["results"]] == [data.pk, newer.pk]


def test_the_ui_acknowledges_and_resolves_with_a_reason(cast, incident, client):
    client.login(username=cast.operator.username, password=PASSWORD)
    assert client.post(reverse("incident_acknowledge", args=[incident.pk])).status_code == 302
    refused = client.post(reverse("incident_resolve", args=[incident.pk]), {"reason": ""})
    assert refused.status_code == 400
    incident.refresh_from_db()
    assert incident.state == IncidentState.ACKNOWLEDGED
    assert client.post(reverse("incident_resolve", args=[incident.pk]), {"reason": "fixed"}).status_code == 302
    incident.refresh_from_db()
    assert (incident.state, incident.resolved_by, incident.resolution) == ("resolved", cast.operator, "fixed")
    again = client.post(reverse("incident_resolve", args=[incident.pk]), {"reason": "again"})
    assert again.status_code == 400 and b"already resolved" in again.content
    assert Notification.objects.count() == 0  # nobody routed, nobody on call
