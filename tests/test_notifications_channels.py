"""Notification channels through the API: who creates, disables and reads them, what a valid target is
(the tenant's HTTP policy, apprise URLs, Vault references for signing secrets), and attacks from
another tenant and from narrowed admins."""

from __future__ import annotations

import pytest

from governance.access import forget_grants
from governance.actors import SYSTEM
from governance.models import AuditEvent, Role
from governance.services import grant_role
from jobs.models import EnvironmentExecutionPolicy
from notifications.models import Channel
from tests.api_support import client_for

URL = "/api/v1/notification-channels/"
REF = "vault:secret/governor/acme/prod/hooks#signing"


@pytest.fixture
def policy(cast):
    """acme may call hooks.acme.test and *.chat.acme.test (prod), and 10.1.2.3 literally (dev, private allowed)."""
    EnvironmentExecutionPolicy.objects.create(
        environment=cast.prod, http_allowed_hosts=["hooks.acme.test", "*.chat.acme.test", "10.9.9.9"]
    )
    EnvironmentExecutionPolicy.objects.create(
        environment=cast.dev, http_allowed_hosts=["10.1.2.3"], allow_private_addresses=True
    )


def webhook(cast, **overrides):
    body = {
        "tenant": cast.acme.pk,
        "name": "ops-hook",
        "kind": "webhook",
        "target": "https://10.1.2.3/hook",
        "secret": REF,
    }
    body.update(overrides)
    return body


def post(user, body):
    return client_for(user).post(URL, body, format="json")


def test_a_tenant_admin_creates_a_signed_webhook_holding_only_the_vault_reference(cast, policy):
    response = post(cast.admin, webhook(cast))

    assert response.status_code == 201, response.json()
    assert response.json()["target"] == "https://10.1.2.3/hook"
    assert response.json()["secret"] == REF
    channel = Channel.objects.get()
    assert (channel.secret, channel.created_by) == (REF, cast.admin)
    event = AuditEvent.objects.get(action="channel.created")
    assert (event.actor, event.data["name"], event.data["kind"]) == (cast.admin, "ops-hook", "webhook")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("https://evil.example/hook", "Host 'evil.example' is not on the tenant's allow-list"),
        ("https://10.9.9.9/hook", "Host '10.9.9.9' is a private or reserved address"),
        ("http://169.254.169.254/latest", "not on the tenant's allow-list"),
        ("ftp://hooks.acme.test/x", "Only http and https URLs are allowed"),
        ("https://user:pw@hooks.acme.test/x", "Credentials in the URL are not allowed"),
    ],
)
def test_a_webhook_url_the_tenants_policy_forbids_is_a_400_naming_the_target(cast, policy, target, message):
    response = post(cast.admin, webhook(cast, target=target))

    assert response.status_code == 400
    assert message in response.json()["target"][0]
    assert not Channel.objects.exists()
    assert not AuditEvent.objects.filter(action="channel.created").exists()


def test_a_host_that_resolves_to_a_private_address_is_refused(cast, policy):
    EnvironmentExecutionPolicy.objects.filter(environment=cast.prod).update(http_allowed_hosts=["localhost"])
    response = post(cast.admin, webhook(cast, target="http://localhost:8000/hook"))
    assert response.status_code == 400
    assert "resolves to" in response.json()["target"][0] and "loopback" in response.json()["target"][0]


def test_a_tenant_without_an_http_policy_allows_no_webhook(cast):
    response = post(cast.admin, webhook(cast))
    assert response.status_code == 400 and "allow-list" in response.json()["target"][0]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("slack://not-enough-tokens", "apprise cannot parse this slack:// URL"),
        ("mailto://user:pass@gmail.com", "'mailto' is not a supported chat service"),
        ("json://evil.example/hook", "Host 'evil.example' is not on the tenant's allow-list"),
        ("not a url", "'No' is not a supported chat service"),
    ],
)
def test_a_bad_or_unsupported_apprise_url_is_a_400_naming_the_target(cast, policy, target, message):
    response = post(cast.admin, {"tenant": cast.acme.pk, "name": "chat", "kind": "apprise", "target": target})
    assert response.status_code == 400
    assert message in response.json()["target"][0]
    assert not Channel.objects.exists()


def test_apprise_chat_urls_are_accepted_and_viewers_read_them_without_tokens(cast, policy):
    slack = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#ops"
    assert (
        post(cast.admin, {"tenant": cast.acme.pk, "name": "chat", "kind": "apprise", "target": slack}).status_code
        == 201
    )
    assert (
        post(cast.admin, webhook(cast, target="https://hooks.acme.test/T0/B0/s3cr3tpath?token=abc")).status_code == 201
    )

    listed = {c["name"]: c for c in client_for(cast.viewer).get(URL).json()["results"]}

    assert "TIiajkdnlazkcOXrIdevi7FQ" not in listed["chat"]["target"]
    assert listed["chat"]["target"].startswith("slack://")
    assert listed["ops-hook"]["target"] == "https://hooks.acme.test/…"
    assert listed["ops-hook"]["secret"] is None
    assert listed["ops-hook"]["can_manage"] is False
    admin_view = {c["name"]: c for c in client_for(cast.admin).get(URL).json()["results"]}
    assert admin_view["ops-hook"]["target"].endswith("?token=abc")


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "give the Vault reference of its signing secret"),
        ("s3cr3t-in-clear", "must lie under one of acme's environments"),
        ("vault:secret/governor/globex/prod/hooks#signing", "must lie under one of acme's environments"),
        ("vault:secret/governor/acme/prod/../../globex/prod/x#k", "may not contain empty, '.' or '..' segments"),
        ("vault:secret/governor/acme/nowhere/hooks#k", "must lie under one of acme's environments"),
    ],
)
def test_a_webhook_secret_must_be_a_vault_reference_of_the_tenant(cast, policy, secret, message):
    response = post(cast.admin, webhook(cast, secret=secret))
    assert response.status_code == 400
    assert message in response.json()["secret"][0]
    assert not Channel.objects.exists()


def test_an_email_channel_needs_an_address_and_other_kinds_no_secret(cast, policy):
    bad = post(cast.admin, {"tenant": cast.acme.pk, "name": "m", "kind": "email", "target": "not-an-address"})
    assert bad.status_code == 400 and bad.json()["target"] == ["Enter a valid email address."]
    extra = post(
        cast.admin, {"tenant": cast.acme.pk, "name": "m", "kind": "email", "target": "a@b.test", "secret": REF}
    )
    assert extra.status_code == 400 and extra.json()["secret"] == ["Only webhooks have a signing secret."]
    unknown = post(
        cast.admin, {"tenant": cast.acme.pk, "name": "m", "kind": "email", "target": "a@b.test", "enabled": False}
    )
    assert unknown.status_code == 400 and "enabled" in unknown.json()
    assert (
        post(cast.admin, {"tenant": cast.acme.pk, "name": "m", "kind": "email", "target": "a@b.test"}).status_code
        == 201
    )
    again = post(cast.admin, {"tenant": cast.acme.pk, "name": "m", "kind": "email", "target": "c@b.test"})
    assert again.status_code == 400 and "already exists" in again.json()["name"][0]


@pytest.mark.parametrize("role", ["viewer", "operator", "author", "approver"])
def test_only_admins_create_channels(cast, policy, role):
    response = post(getattr(cast, role), webhook(cast))
    assert response.status_code == 403
    assert not Channel.objects.exists()
    assert AuditEvent.objects.filter(action="access.denied").exists()


def test_a_team_admin_manages_the_teams_channels_only(cast, policy, django_user_model):
    lead = django_user_model.objects.create_user("payments-lead")
    grant_role(lead, Role.TENANT_ADMIN, tenant=cast.acme, team=cast.payments, actor=SYSTEM)
    forget_grants(lead)

    ours = post(lead, webhook(cast, team=cast.payments.pk, name="payments-hook"))
    assert ours.status_code == 201, ours.json()
    # Another team of the tenant is not even visible to a payments admin.
    theirs = post(lead, webhook(cast, team=cast.data.pk, name="data-hook"))
    assert theirs.status_code == 400 and theirs.json()["team"] == [f"No team with id {cast.data.pk}."]
    assert post(lead, webhook(cast, name="tenant-hook")).status_code == 403
    tenant_wide = post(cast.admin, webhook(cast, name="tenant-hook")).json()
    assert client_for(lead).post(f"{URL}{tenant_wide['id']}/disable/").status_code == 403
    assert client_for(lead).post(f"{URL}{ours.json()['id']}/disable/").json()["enabled"] is False


def test_disabling_and_enabling_are_audited_and_refused_to_viewers(cast, policy):
    channel = post(cast.admin, webhook(cast)).json()
    assert client_for(cast.viewer).post(f"{URL}{channel['id']}/disable/").status_code == 403

    assert client_for(cast.admin).post(f"{URL}{channel['id']}/disable/").json()["enabled"] is False
    assert client_for(cast.admin).post(f"{URL}{channel['id']}/enable/").json()["enabled"] is True
    assert list(
        AuditEvent.objects.filter(action__startswith="channel.").order_by("seq").values_list("action", flat=True)
    ) == ["channel.created", "channel.disabled", "channel.enabled"]


def test_another_tenant_can_neither_see_nor_use_our_channels(cast, policy):
    ours = post(cast.admin, webhook(cast)).json()
    intruder = client_for(cast.globex_admin)

    assert intruder.get(URL).json()["results"] == []
    assert intruder.get(f"{URL}{ours['id']}/").status_code == 404
    assert intruder.post(f"{URL}{ours['id']}/disable/").status_code == 404
    assert Channel.objects.get().enabled is True
    # Creating one in our tenant, for our team, or signing with our secret:
    assert intruder.post(URL, webhook(cast), format="json").status_code == 400
    assert intruder.post(URL, webhook(cast, tenant=None, team=cast.payments.pk), format="json").status_code == 400
    EnvironmentExecutionPolicy.objects.create(environment=cast.globex_prod, http_allowed_hosts=["hooks.globex.test"])
    theirs = webhook(cast, tenant=cast.globex.pk, target="https://hooks.globex.test/x")
    stolen = intruder.post(URL, theirs, format="json")
    assert stolen.status_code == 400 and "globex's environments" in stolen.json()["secret"][0]
    # acme's HTTP policy does not open hosts for globex.
    leak = intruder.post(
        URL, {**theirs, "target": "https://10.1.2.3/hook", "secret": REF.replace("acme", "globex")}, format="json"
    )
    assert leak.status_code == 400 and "not on the tenant's allow-list" in leak.json()["target"][0]
    assert Channel.objects.count() == 1


def test_the_outbox_api_shows_a_tenant_its_own_messages_only(cast, policy):
    from django.db import transaction

    from notifications.outbox import enqueue

    cast.approver.email, cast.globex_approver.email = "a@acme.test", "g@globex.test"
    for tenant, user in ((cast.acme, cast.approver), (cast.globex, cast.globex_approver)):
        with transaction.atomic():
            enqueue(tenant_id=tenant.pk, subject=f"{tenant.slug} news", body="b", dedupe_key=tenant.slug, users=[user])

    ours = client_for(cast.viewer).get("/api/v1/notifications/").json()["results"]
    theirs = client_for(cast.globex_admin).get("/api/v1/notifications/").json()["results"]

    assert [(n["subject"], n["user"], n["state"]) for n in ours] == [("acme news", "acme-approver", "pending")]
    assert [n["subject"] for n in theirs] == ["globex news"]
    assert client_for(cast.globex_admin).get(f"/api/v1/notifications/{ours[0]['id']}/").status_code == 404


def test_the_admin_applies_the_same_checks_as_the_api(client, cast, policy):
    client.force_login(cast.superuser)
    form = {"tenant": cast.acme.pk, "name": "ops-hook", "kind": "webhook", "enabled": "on", "_save": "Save"}

    refused = client.post("/admin/notifications/channel/add/", {**form, "target": "http://10.9.9.9/x", "secret": REF})
    assert refused.status_code == 200
    assert "private or reserved address" in str(refused.context["adminform"].form.errors["target"])
    unsigned = client.post("/admin/notifications/channel/add/", {**form, "target": "https://10.1.2.3/x", "secret": ""})
    assert "signing secret" in str(unsigned.context["adminform"].form.errors["secret"])
    assert not Channel.objects.exists()

    saved = client.post("/admin/notifications/channel/add/", {**form, "target": "https://10.1.2.3/x", "secret": REF})
    assert saved.status_code == 302
    assert AuditEvent.objects.filter(action="admin.created", tenant=cast.acme).exists()
