"""A tenant admin narrowed to one environment or team administers that slice only: it may not
widen its own role, hand out roles or service accounts beyond it, freeze the whole tenant, or
propose approval policies for environments (or teams) it does not fully administer."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from approvals.models import FreezeWindow
from approvals.services import create_freeze_window, propose_policy_change
from governance.access import Action, can_in
from governance.actors import SYSTEM
from governance.models import Role, ScopeUserRole
from governance.services import AccessDenied, grant_role, revoke_role
from governance.tokens import create_service_account

pytestmark = pytest.mark.django_db


@pytest.fixture
def dev_admin(cast):
    user = get_user_model().objects.create_user("acme-dev-admin", password="x")
    grant_role(user, Role.TENANT_ADMIN, tenant=cast.acme, environment=cast.dev, actor=SYSTEM)
    return user


@pytest.fixture
def payments_admin(cast):
    user = get_user_model().objects.create_user("acme-payments-admin", password="x")
    grant_role(user, Role.TENANT_ADMIN, tenant=cast.acme, team=cast.payments, actor=SYSTEM)
    return user


def _roles(user) -> int:
    return ScopeUserRole.objects.filter(user=user).count()


def test_an_environment_admin_cannot_make_itself_tenant_admin(cast, dev_admin):
    # The hole this closes: a dev-only admin passes can_in() for tenant-level targets.
    assert can_in(dev_admin, Action.ADMINISTER, cast.acme.pk)
    before = _roles(dev_admin)
    with pytest.raises(AccessDenied, match="whole scope"):
        grant_role(dev_admin, Role.TENANT_ADMIN, tenant=cast.acme, actor=dev_admin)
    with pytest.raises(AccessDenied):
        grant_role(dev_admin, Role.APPROVER, tenant=cast.acme, environment=cast.prod, actor=dev_admin)
    with pytest.raises(AccessDenied):
        revoke_role(cast.approver, Role.APPROVER, tenant=cast.acme, actor=dev_admin)
    assert _roles(dev_admin) == before
    assert not can_in(dev_admin, Action.REVIEW, cast.acme.pk, cast.payments.pk, cast.prod.pk)


def test_an_environment_admin_still_administers_its_own_environment(cast, dev_admin):
    grant_role(cast.viewer, Role.OPERATOR, tenant=cast.acme, environment=cast.dev, actor=dev_admin)
    assert can_in(cast.viewer, Action.TRIGGER, cast.acme.pk, cast.payments.pk, cast.dev.pk)
    assert not can_in(cast.viewer, Action.TRIGGER, cast.acme.pk, cast.payments.pk, cast.prod.pk)
    revoke_role(cast.viewer, Role.OPERATOR, tenant=cast.acme, environment=cast.dev, actor=dev_admin)
    assert not can_in(cast.viewer, Action.TRIGGER, cast.acme.pk, cast.payments.pk, cast.dev.pk)


def test_a_team_admin_cannot_grant_across_the_tenant(cast, payments_admin):
    with pytest.raises(AccessDenied):
        grant_role(cast.viewer, Role.AUTHOR, tenant=cast.acme, actor=payments_admin)
    with pytest.raises(AccessDenied):
        grant_role(cast.viewer, Role.AUTHOR, tenant=cast.acme, team=cast.data, actor=payments_admin)
    grant_role(cast.viewer, Role.AUTHOR, tenant=cast.acme, team=cast.payments, actor=payments_admin)
    assert can_in(cast.viewer, Action.PROPOSE, cast.acme.pk, cast.payments.pk, cast.dev.pk)
    assert not can_in(cast.viewer, Action.PROPOSE, cast.acme.pk, cast.data.pk, cast.dev.pk)


def test_a_service_account_cannot_reach_past_its_creators_scope(cast, dev_admin):
    users_before = get_user_model().objects.count()
    for scope in ({}, {"environment": cast.prod}):
        with pytest.raises(AccessDenied, match="narrowed"):
            create_service_account(actor=dev_admin, tenant=cast.acme, name=f"ci-{len(scope)}", role="operator", **scope)
    assert get_user_model().objects.count() == users_before  # nothing half-created
    account = create_service_account(
        actor=dev_admin, tenant=cast.acme, name="ci-dev", role="operator", environment=cast.dev
    )
    assert can_in(account.user, Action.TRIGGER, cast.acme.pk, cast.payments.pk, cast.dev.pk)
    assert not can_in(account.user, Action.TRIGGER, cast.acme.pk, cast.payments.pk, cast.prod.pk)


def test_an_environment_admin_freezes_its_environment_but_not_the_tenant(cast, dev_admin):
    start = timezone.now() + timedelta(hours=1)
    end = start + timedelta(hours=2)
    with pytest.raises(AccessDenied, match="whole tenant"):
        create_freeze_window(actor=dev_admin, tenant=cast.acme, starts_at=start, ends_at=end, reason="release")
    with pytest.raises(AccessDenied):
        create_freeze_window(
            actor=dev_admin, tenant=cast.acme, environment=cast.prod, starts_at=start, ends_at=end, reason="release"
        )
    assert not FreezeWindow.objects.exists()
    freeze = create_freeze_window(
        actor=dev_admin, tenant=cast.acme, environment=cast.dev, starts_at=start, ends_at=end, reason="release"
    )
    assert freeze.environment == cast.dev
    # A whole-tenant admin may freeze everything.
    create_freeze_window(actor=cast.admin, tenant=cast.acme, starts_at=start, ends_at=end, reason="year end")
    assert FreezeWindow.objects.count() == 2


def test_a_team_admin_cannot_propose_an_environment_wide_policy(cast, payments_admin):
    with pytest.raises(AccessDenied):
        propose_policy_change(
            actor=payments_admin,
            environment=cast.prod,
            rule={"criticality": "high", "required_approvals": 1},
            justification="fewer reviews",
        )


# A narrowed admin manages the tokens of a service account only when its grant covers everything the
# account reaches; otherwise it could mint itself a tenant-wide (or other team's) identity.
# (admin, the account's scope, may it issue and revoke the account's tokens?)
SERVICE_ACCOUNT_TOKEN_ROWS = [
    ("payments_admin", {}, False),
    ("payments_admin", {"team": "data"}, False),
    ("payments_admin", {"environment": "prod"}, False),
    ("payments_admin", {"team": "payments"}, True),
    ("payments_admin", {"team": "payments", "environment": "prod"}, True),
    ("dev_admin", {}, False),
    ("dev_admin", {"environment": "prod"}, False),
    ("dev_admin", {"team": "payments"}, False),
    ("dev_admin", {"environment": "dev"}, True),
    ("dev_admin", {"team": "payments", "environment": "dev"}, True),
]


@pytest.mark.parametrize(("admin", "scope", "allowed"), SERVICE_ACCOUNT_TOKEN_ROWS)
def test_a_narrowed_admin_manages_tokens_only_of_accounts_inside_its_slice(request, cast, admin, scope, allowed):
    from governance.models import ApiToken, AuditAction, AuditEvent
    from governance.tokens import issue_token
    from tests.api_support import client_for

    actor = request.getfixturevalue(admin)
    where = {field: getattr(cast, slug) for field, slug in scope.items()}
    account = create_service_account(actor=cast.admin, tenant=cast.acme, name="bot", role="author", **where)
    token, _ = issue_token(account.user, actor=cast.admin)
    client = client_for(actor)
    last = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()

    minted = client.post(f"/api/v1/service-accounts/{account.pk}/tokens/", {}, format="json")
    revoked = client.delete(f"/api/v1/auth/tokens/{token.pk}/")
    token.refresh_from_db()
    events = AuditEvent.objects.filter(id__gt=last)
    if allowed:
        assert (minted.status_code, revoked.status_code) == (201, 204)
        assert token.revoked_at is not None
        assert {AuditAction.TOKEN_ISSUED, AuditAction.TOKEN_REVOKED} <= set(events.values_list("action", flat=True))
    else:
        assert (minted.status_code, revoked.status_code) == (403, 403)
        assert token.revoked_at is None and ApiToken.objects.filter(user=account.user).count() == 1
        assert list(events.values_list("action", "tenant_id")) == [(AuditAction.ACCESS_DENIED, cast.acme.pk)] * 2
