"""The reviewer's queue (dashboard, change list tab, nav badge) and the API's awaiting_my_review
filter list exactly the requests the person may approve: a team-limited approver is not shown
window, calendar, pool or policy changes that only whole-environment approvers review."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from approvals.services import approve_change, awaiting_review, propose_config_change
from conftest import PASSWORD
from governance.actors import SYSTEM
from governance.models import Role
from governance.services import AccessDenied, grant_role
from tests.api_support import client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def payments_approver(cast):
    user = get_user_model().objects.create_user("acme-payments-approver", password=PASSWORD)
    grant_role(user, Role.APPROVER, tenant=cast.acme, team=cast.payments, actor=SYSTEM)
    return user


@pytest.fixture
def pending(cast):
    window = propose_config_change(
        actor=cast.admin,
        kind="maintenance_window",
        action="create",
        environment=cast.prod,
        definition={"name": "db upgrade", "cron": "0 2 * * SUN", "timezone": "UTC", "duration_minutes": 60},
        justification="quarterly database upgrade",
    )
    job = cast.propose_job(justification="new job")
    return window, job


def test_a_team_approver_sees_only_the_job_change_it_may_approve(cast, payments_approver, pending):
    window, job = pending
    assert list(awaiting_review(payments_approver)) == [job]
    assert set(awaiting_review(cast.approver)) == {window, job}
    with pytest.raises(AccessDenied):  # the rule the queue mirrors
        approve_change(window, actor=payments_approver)


def test_the_ui_queue_and_the_api_filter_agree(client, cast, payments_approver, pending):
    window, job = pending
    client.login(username=payments_approver.username, password=PASSWORD)
    page = client.get("/").content.decode()
    assert f"CR-{job.pk}" in page or f"/changes/{job.pk}/" in page
    assert f"/changes/{window.pk}/" not in page
    api = client_for(payments_approver)
    listed = api.get("/api/v1/change-requests/?awaiting_my_review=true").json()
    ids = [row["id"] for row in listed.get("results", listed)]
    assert ids == [job.pk]
