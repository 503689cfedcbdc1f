"""Who may review is one rule (approvals.policies): ``review_refusal`` for one request and
``reviewable`` as a queryset answer alike for everyone, and every place that lets someone act as a
reviewer (approving, the review after the fact of an emergency change, commenting) applies it.
A team-limited approver may not act on window, calendar, pool or policy changes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from approvals import policies
from approvals.models import ChangeRequest, ChangeStatus, PostReview
from approvals.services import (
    comment_on_change,
    complete_post_review,
    create_freeze_window,
    open_post_reviews,
    propose_change,
    propose_config_change,
    propose_policy_change,
)
from conftest import PASSWORD
from governance.actors import SYSTEM
from governance.models import Role
from governance.services import AccessDenied, grant_role

pytestmark = pytest.mark.django_db


@pytest.fixture
def payments_approver(cast):
    user = get_user_model().objects.create_user("acme-payments-approver", password=PASSWORD)
    grant_role(user, Role.APPROVER, tenant=cast.acme, team=cast.payments, actor=SYSTEM)
    return user


@pytest.fixture
def emergency_window(cast):
    """A dev window created as an emergency during a freeze: applied at once, reviewed after the fact."""
    now = timezone.now()
    create_freeze_window(
        actor=cast.admin,
        tenant=cast.acme,
        starts_at=now - timedelta(hours=1),
        ends_at=now + timedelta(hours=2),
        reason="year-end close",
    )
    change = propose_config_change(
        actor=cast.admin,
        kind="maintenance_window",
        action="create",
        environment=cast.dev,
        definition={"name": "hotfix", "cron": "0 2 * * SUN", "timezone": "UTC", "duration_minutes": 30},
        justification="hotfix window",
        emergency=True,
    )
    assert change.status == ChangeStatus.APPLIED
    return PostReview.objects.get(change_request=change)


def test_a_team_approver_may_not_review_a_window_change_after_the_fact(cast, payments_approver, emergency_window):
    assert not open_post_reviews(payments_approver).exists()
    with pytest.raises(AccessDenied, match="whole environment"):
        complete_post_review(emergency_window, actor=payments_approver, notes="looked fine")
    emergency_window.refresh_from_db()
    assert emergency_window.reviewed_at is None
    # An approver of the whole environment does it.
    assert list(open_post_reviews(cast.approver)) == [emergency_window]
    complete_post_review(emergency_window, actor=cast.approver, notes="looked fine")
    emergency_window.refresh_from_db()
    assert emergency_window.reviewer == cast.approver


def test_the_author_never_reviews_an_emergency_change_after_the_fact(cast, emergency_window):
    assert not open_post_reviews(cast.admin).exists()
    with pytest.raises(AccessDenied, match="own change"):
        complete_post_review(emergency_window, actor=cast.admin, notes="mine, fine")


def test_a_team_approver_may_not_comment_on_a_policy_change(cast, payments_approver):
    change = propose_policy_change(
        actor=cast.admin,
        environment=cast.prod,
        rule={"criticality": "", "required_approvals": 3, "separation_of_duties": False},
        justification="stricter prod",
    )
    with pytest.raises(AccessDenied):
        comment_on_change(change, actor=payments_approver, body="fine by me")
    assert not change.comments.exists()
    comment_on_change(change, actor=cast.approver, body="fine by me")


def test_both_forms_of_the_rule_answer_alike_for_everyone(cast, payments_approver):
    propose_change(
        actor=cast.author,
        action="create",
        team=cast.payments,
        environment=cast.prod,
        definition=cast.definition(),
        justification="new job",
    )
    propose_config_change(
        actor=cast.admin,
        kind="holiday_calendar",
        action="create",
        tenant=cast.acme,
        definition={"name": "holidays", "dates": ["2027-01-01"]},
        justification="tenant-wide calendar",
    )
    propose_config_change(
        actor=cast.admin,
        kind="pool",
        action="create",
        environment=cast.prod,
        definition={"name": "db", "slots": 2},
        justification="database pool",
    )
    propose_policy_change(
        actor=cast.admin,
        environment=cast.staging,
        rule={"criticality": "", "required_approvals": 2, "separation_of_duties": False},
        justification="stricter staging",
    )
    changes = list(ChangeRequest.objects.all())
    assert len(changes) == 4
    users = [
        cast.admin,
        cast.author,
        cast.approver,
        cast.approver2,
        cast.operator,
        cast.viewer,
        cast.outsider,
        cast.superuser,
        cast.globex_approver,
        payments_approver,
    ]
    for user in users:
        expected = {c.pk for c in changes if policies.review_refusal(user, c) is None}
        assert set(policies.reviewable(user).values_list("pk", flat=True)) == expected, user.username
    # The rule is not vacuous: someone may review each, and the team approver only the job change.
    assert {c.target_kind for c in policies.reviewable(payments_approver)} == {"job"}
    assert set(policies.reviewable(cast.approver)) == set(changes)
