"""Incidents in a real Chromium: an operator acknowledges and resolves one from the incidents page,
and the team page's on-call panel shows the right person on each side of a handoff (a rotation built
so that its handoff falls a few seconds after the page first loads)."""

from __future__ import annotations

import datetime as dt
import time
from datetime import UTC

import pytest
from django.utils import timezone

from monitoring.incidents import raise_alert
from monitoring.models import Incident, IncidentState
from tests.incident_support import rotation, signal
from tests.test_browser_review_flow import ARTIFACTS, browser, signed_in  # noqa: F401 (browser is a fixture)

pytestmark = pytest.mark.browser


def test_operator_acknowledges_and_resolves_an_incident(browser, live_server, tcast):  # noqa: F811
    cast = tcast
    ARTIFACTS.mkdir(exist_ok=True)
    job = cast.make_job(cast.prod)
    incident = raise_alert(signal(job, run_id=1, at=timezone.now(), summary="ledger export missing"))
    page = signed_in(browser, live_server, cast.operator.username)
    assert page.inner_text("[data-testid=open-incidents]") == "1"
    page.click("text=Incidents")
    page.click(f"text=INC-{incident.pk}")
    assert page.inner_text("[data-testid=incident-state]") == "Triggered"
    page.click("[data-testid=acknowledge]")
    page.wait_for_selector("[data-testid=incident-state]:has-text('Acknowledged')")
    assert page.locator("[data-testid=acknowledge]").count() == 0
    # A reason is required before anything is sent.
    page.click("[data-testid=resolve]")
    assert Incident.objects.get().state == IncidentState.ACKNOWLEDGED
    page.fill("#id_resolve_reason", "export re-run by hand, INC-7 in the ticket system")
    page.click("[data-testid=resolve]")
    page.wait_for_selector("[data-testid=incident-state]:has-text('Resolved')")
    timeline = page.inner_text("[data-testid=timeline]")
    assert "Acknowledged by acme-operator." in timeline
    assert "Resolved by acme-operator: export re-run by hand" in timeline
    assert page.locator("[data-testid=open-incidents]").count() == 0
    page.screenshot(path=str(ARTIFACTS / "incident-resolved.png"), full_page=True)
    incident.refresh_from_db()
    assert (incident.state, incident.acknowledged_by, incident.resolved_by) == (
        IncidentState.RESOLVED,
        cast.operator,
        cast.operator,
    )
    page.context.close()


def test_the_on_call_panel_shows_the_right_person_across_a_handoff(browser, live_server, tcast):  # noqa: F811
    cast = tcast
    # A daily UTC rotation of [operator, admin] whose third handoff (to the operator) is 4 s away.
    handoff = (timezone.now() + dt.timedelta(seconds=4)).astimezone(UTC).replace(microsecond=0)
    rotation(
        cast.payments,
        [cast.operator, cast.admin],
        starts_on=handoff.date() - dt.timedelta(days=2),
        days=1,
        handoff=handoff.time(),
        zone="UTC",
    )
    page = signed_in(browser, live_server, cast.viewer.username)
    page.goto(f"{live_server.url}/teams/{cast.payments.pk}/")
    assert page.inner_text("[data-testid=oncall-now]") == "acme-admin"
    following = page.inner_text("[data-testid=oncall-next]")
    assert "acme-operator" in following and handoff.strftime("%Y-%m-%d %H:%M:%S UTC") in following
    page.screenshot(path=str(ARTIFACTS / "team-oncall-before-handoff.png"), full_page=True)
    time.sleep(max(0.0, (handoff - timezone.now()).total_seconds()) + 0.2)
    page.reload()
    assert page.inner_text("[data-testid=oncall-now]") == "acme-operator"
    after = page.inner_text("[data-testid=oncall-next]")
    next_day = handoff + dt.timedelta(days=1)
    assert "acme-admin" in after and next_day.strftime("%Y-%m-%d %H:%M:%S UTC") in after
    page.context.close()
