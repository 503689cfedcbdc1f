"""Pages around the review flow, through Django's test client: approval policies, the freeze
calendar, the post-review queue, rollback and promotion forms, and the overdue-review list."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from approvals.models import ApprovalPolicy, ChangeAction, ChangeRequest, ChangeStatus, FreezeWindow, PostReview
from approvals.services import (
    approve_change,
    propose_policy_change,
)
from conftest import PASSWORD
from governance.models import AuditAction, AuditEvent
from jobs.models import Job

SCHEMA = {
    "type": "object",
    "properties": {
        "region": {"type": "string", "enum": ["eu", "us"]},
        "batch": {"type": "integer", "minimum": 1, "maximum": 500},
        "dry_run": {"type": "boolean"},
    },
    "required": ["region", "batch"],
}


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)
    return client


# Approval policies


def test_policy_page_shows_the_effective_rule_per_environment_and_criticality(client, cast):
    ApprovalPolicy.objects.create(
        tenant=cast.acme, environment=cast.prod, criticality="critical", required_approvals=3, separation_of_duties=True
    )
    response = login(client, cast.viewer).get(reverse("policy_list"))
    assert response.status_code == 200
    rows = {row["environment"].slug: row for row in response.context["rows"]}
    assert set(rows) == {"dev", "staging", "prod"}
    prod = {rule["criticality"]: rule for rule in rows["prod"]["rules"]}
    assert prod[""]["required_approvals"] == 2 and not prod[""]["separation_of_duties"]
    assert prod["critical"] == {
        "criticality": "critical",
        "explicit": True,
        "required_approvals": 3,
        "separation_of_duties": True,
        "pause_requires_change": False,
    }
    assert prod["low"]["required_approvals"] == 2 and not prod["low"]["explicit"]
    assert rows["prod"]["policy_change"]["required_approvals"] == 3
    assert rows["dev"]["policy_change"]["required_approvals"] == 1
    html = response.content.decode()
    assert "one approver from another team" in html and "inherits the default" in html
    # A viewer sees the rules but not the proposal form.
    assert "Propose a policy change" not in html
    assert client.get(reverse("policy_propose")).status_code == 403


def test_policy_page_hides_other_tenants_environments(client, cast):
    html = login(client, cast.globex_admin).get(reverse("policy_list")).content.decode()
    assert "policy-globex-prod" in html and "policy-acme-" not in html


def test_tenant_admin_proposes_a_policy_change_that_approvers_review(client, cast):
    login(client, cast.admin)
    page = client.get(reverse("policy_propose"), {"environment": cast.prod.pk, "criticality": "critical"})
    assert page.status_code == 200
    assert page.context["form"].initial == {
        "environment": cast.prod.pk,
        "criticality": "critical",
        "required_approvals": 2,
        "separation_of_duties": False,
        "pause_requires_change": False,
    }
    response = client.post(
        reverse("policy_propose"),
        {
            "environment": cast.prod.pk,
            "criticality": "critical",
            "required_approvals": "3",
            "separation_of_duties": "on",
            "justification": "critical prod jobs need a third pair of eyes",
            "ticket": "SEC-9",
        },
    )
    change = ChangeRequest.objects.get(action=ChangeAction.POLICY)
    assert response.status_code == 302 and response.url == reverse("change_detail", args=[change.pk])
    assert change.status == ChangeStatus.SUBMITTED and change.author == cast.admin
    assert change.proposed == {
        "criticality": "critical",
        "required_approvals": 3,
        "separation_of_duties": True,
        "pause_requires_change": False,
    }
    assert not ApprovalPolicy.objects.exists()
    html = client.get(reverse("policy_list")).content.decode()
    assert f"CR-{change.pk}" in html and "Pending policy change" in html
    approve_change(change, actor=cast.approver)
    approve_change(change, actor=cast.approver2)
    assert ApprovalPolicy.objects.get(environment=cast.prod, criticality="critical").required_approvals == 3


def test_policy_form_shows_errors_and_proposes_nothing(client, cast):
    login(client, cast.admin)
    response = client.post(
        reverse("policy_propose"),
        {"environment": cast.prod.pk, "criticality": "", "required_approvals": "2", "justification": "same"},
    )
    assert response.status_code == 400
    assert "identical to the live one" in response.content.decode()
    response = client.post(
        reverse("policy_propose"),
        {"environment": cast.prod.pk, "required_approvals": "11", "separation_of_duties": "on", "justification": ""},
    )
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert set(errors) == {"required_approvals", "justification"}
    assert not ChangeRequest.objects.exists()


def test_forged_policy_proposals_are_refused(client, cast):
    data = {"environment": cast.prod.pk, "required_approvals": "0", "justification": "let me through"}
    # An author is not a tenant admin anywhere.
    assert login(client, cast.author).post(reverse("policy_propose"), data).status_code == 403
    # Another tenant's admin cannot name acme's environment.
    response = login(client, cast.globex_admin).post(reverse("policy_propose"), data)
    assert response.status_code == 400 and "environment" in response.context["form"].errors
    assert not ChangeRequest.objects.exists()


# Freeze windows


def test_freeze_calendar_lists_current_upcoming_and_past_freezes(client, cast):
    cast.freeze(environment=cast.prod, reason="quarter close")
    cast.freeze(hours_from=48, hours_to=72, reason="black friday")
    FreezeWindow.objects.create(
        tenant=cast.acme,
        environment=cast.staging,
        starts_at=timezone.now() - timedelta(days=3),
        ends_at=timezone.now() - timedelta(days=2),
        reason="old release",
        created_by=cast.admin,
    )
    cast.freeze(tenant=cast.globex, reason="globex secret freeze")
    response = login(client, cast.viewer).get(reverse("freeze_list"))
    assert response.status_code == 200
    ctx = response.context
    assert [f.reason for f in ctx["current"]] == ["quarter close"]
    assert [f.reason for f in ctx["upcoming"]] == ["black friday"]
    assert [f.reason for f in ctx["past"]] == ["old release"]
    html = response.content.decode()
    assert "globex secret freeze" not in html
    # A viewer sees the calendar but not the form.
    assert "Declare a freeze" not in html
    filtered = client.get(reverse("freeze_list"), {"environment": "staging"}).context
    # Tenant-wide freezes cover every environment, so they stay under a filter.
    assert [f.reason for f in filtered["upcoming"]] == ["black friday"] and not filtered["current"]


def test_freeze_calendar_has_useful_empty_states(client, cast):
    html = login(client, cast.admin).get(reverse("freeze_list")).content.decode()
    assert "No freeze is active" in html and "No freeze planned" in html and "Declare a freeze" in html


def test_tenant_admin_declares_a_freeze_and_change_pages_show_the_banner(client, cast):
    login(client, cast.admin)
    start = (timezone.now() - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M")
    end = (timezone.now() + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")
    response = client.post(
        reverse("freeze_list"),
        {"scope": f"env:{cast.prod.pk}", "starts_at": start, "ends_at": end, "reason": "payments release"},
    )
    assert response.status_code == 302
    freeze = FreezeWindow.objects.get()
    assert freeze.environment == cast.prod and freeze.created_by == cast.admin
    assert AuditEvent.objects.filter(action=AuditAction.FREEZE_CREATED).count() == 1
    for url in (reverse("change_list"), reverse("change_new"), reverse("dashboard")):
        html = login(client, cast.author).get(url).content.decode()
        assert "Freeze active" in html and "payments release" in html, url
    # Another tenant never sees it.
    assert "payments release" not in login(client, cast.globex_author).get(reverse("change_list")).content.decode()


def test_bad_freezes_get_field_errors_and_nothing_is_saved(client, cast):
    login(client, cast.admin)
    start = timezone.now().strftime("%Y-%m-%dT%H:%M")
    response = client.post(
        reverse("freeze_list"),
        {"scope": f"tenant:{cast.acme.pk}", "starts_at": start, "ends_at": start, "reason": ""},
    )
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert "reason" in errors
    response = client.post(
        reverse("freeze_list"),
        {"scope": f"tenant:{cast.acme.pk}", "starts_at": start, "ends_at": start, "reason": "x"},
    )
    assert response.status_code == 400 and "end after it starts" in response.context["form"].errors["ends_at"][0]
    assert not FreezeWindow.objects.exists()


def test_forged_freeze_posts_are_refused(client, cast):
    start = timezone.now().strftime("%Y-%m-%dT%H:%M")
    end = (timezone.now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    data = {"scope": f"env:{cast.prod.pk}", "starts_at": start, "ends_at": end, "reason": "sneaky"}
    assert login(client, cast.author).post(reverse("freeze_list"), data).status_code == 403
    # Another tenant's admin may declare freezes, but never in acme.
    response = login(client, cast.globex_admin).post(reverse("freeze_list"), data)
    assert response.status_code == 400 and "scope" in response.context["form"].errors
    assert not FreezeWindow.objects.exists()


# Post-reviews


def _emergency_during_freeze(cast):
    cast.freeze(environment=cast.prod)
    change = cast.propose_job(
        definition=cast.definition(name="payments.ledger.hotfix"), justification="stop the bleeding", emergency=True
    )
    approve_change(change, actor=cast.approver)
    change = approve_change(change, actor=cast.approver2)
    assert change.status == ChangeStatus.APPLIED
    return change


def test_post_review_queue_shows_emergency_changes_to_approvers(client, cast):
    change = _emergency_during_freeze(cast)
    response = login(client, cast.approver).get(reverse("change_post_reviews"))
    assert response.status_code == 200
    assert [item.change_request_id for item in response.context["items"]] == [change.pk]
    assert f"CR-{change.pk}" in response.content.decode()
    # The author sees no review button for their own change; viewers and other tenants see nothing.
    html = login(client, cast.superuser).get(reverse("change_post_reviews")).content.decode()
    assert "Review</a>" in html
    assert not login(client, cast.viewer).get(reverse("change_post_reviews")).context["items"]
    assert not login(client, cast.globex_approver).get(reverse("change_post_reviews")).context["items"]
    # Once reviewed it moves to "done".
    login(client, cast.approver).post(reverse("change_post_review", args=[change.pk]), {"notes": "fine"})
    assert not client.get(reverse("change_post_reviews")).context["items"]
    done = client.get(reverse("change_post_reviews"), {"show": "done"})
    assert [item.reviewer for item in done.context["items"]] == [cast.approver]


def test_post_review_queue_has_an_empty_state(client, cast):
    html = login(client, cast.approver).get(reverse("change_post_reviews")).content.decode()
    assert "No emergency change waits for a review" in html


# Rollback


def test_rollback_page_shows_the_diff_against_live_and_proposes_the_version(client, cast):
    job = cast.make_job(cast.staging, timeout_seconds=60)
    job = cast.update_job(job, timeout_seconds=120)
    login(client, cast.author)
    html = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    assert reverse("job_rollback", args=[job.pk, 1]) in html
    page = client.get(reverse("job_rollback", args=[job.pk, 1]))
    assert page.status_code == 200
    assert [(r["field"], r["before"], r["after"]) for r in page.context["changes"]] == [("timeout_seconds", 120, 60)]
    response = client.post(
        reverse("job_rollback", args=[job.pk, 1]), {"justification": "120 s hides hangs", "ticket": "OPS-5"}
    )
    change = ChangeRequest.objects.get(status=ChangeStatus.SUBMITTED)
    assert response.status_code == 302 and response.url == reverse("change_detail", args=[change.pk])
    assert change.justification == "Roll back to v1: 120 s hides hangs" and change.ticket == "OPS-5"
    detail = client.get(response.url)
    assert [row["field"] for row in detail.context["changed_rows"]] == ["timeout_seconds"]


def test_rollback_refusals_are_specific_and_change_nothing(client, cast):
    job = cast.update_job(cast.make_job(cast.staging), timeout_seconds=120)
    login(client, cast.author)
    response = client.post(reverse("job_rollback", args=[job.pk, 1]), {"justification": ""})
    assert response.status_code == 400 and "justification" in response.context["form"].errors
    response = client.post(reverse("job_rollback", args=[job.pk, 2]), {"justification": "x"})
    assert response.status_code == 400 and "live now" in response.content.decode()
    response = client.post(reverse("job_rollback", args=[job.pk, 9]), {"justification": "x"})
    assert response.status_code == 400 and "no version 9" in response.content.decode()
    # Lesser roles: the button is absent and a forged POST is refused; another tenant gets 404.
    assert (
        "Propose this version again"
        not in login(client, cast.operator).get(reverse("job_detail", args=[job.pk])).content.decode()
    )
    assert client.post(reverse("job_rollback", args=[job.pk, 1]), {"justification": "x"}).status_code == 403
    assert login(client, cast.globex_author).get(reverse("job_rollback", args=[job.pk, 1])).status_code == 404
    assert client.post(reverse("job_rollback", args=[job.pk, 1]), {"justification": "x"}).status_code == 404
    assert not ChangeRequest.objects.filter(status=ChangeStatus.SUBMITTED).exists()


# Promotion


def test_promotion_form_prefills_the_target_values_and_proposes_there(client, cast):
    job = cast.make_job(
        cast.dev,
        parameters={
            "schema": SCHEMA,
            "values": {"dev": {"region": "eu", "batch": 5}, "staging": {"region": "us", "batch": 20}},
        },
    )
    login(client, cast.author)
    html = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    assert "Promote to Staging" in html
    page = client.get(reverse("job_promote", args=[job.pk]))
    assert page.status_code == 200
    assert page.context["form"].initial == {"param_region": "us", "param_batch": 20}
    response = client.post(
        reverse("job_promote", args=[job.pk]),
        {"param_region": "us", "param_batch": "50", "param_dry_run": "false", "justification": "tested in dev"},
    )
    change = ChangeRequest.objects.get(environment=cast.staging)
    assert response.status_code == 302 and response.url == reverse("change_detail", args=[change.pk])
    assert change.action == ChangeAction.CREATE
    assert change.proposed["parameters"]["values"]["staging"] == {"region": "us", "batch": 50, "dry_run": False}


def test_promotion_values_are_checked_against_the_schema_per_field(client, cast):
    job = cast.make_job(cast.dev, parameters={"schema": SCHEMA, "values": {"dev": {"region": "eu", "batch": 5}}})
    login(client, cast.author)
    response = client.post(
        reverse("job_promote", args=[job.pk]),
        {"param_region": "", "param_batch": "900", "justification": "tested"},
    )
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert "required" in errors["param_region"][0].lower()
    assert "900" in errors["param_batch"][0]
    response = client.post(
        reverse("job_promote", args=[job.pk]), {"param_region": "mars", "param_batch": "x", "justification": "t"}
    )
    errors = response.context["form"].errors
    assert response.status_code == 400 and set(errors) == {"param_region", "param_batch"}
    assert not ChangeRequest.objects.filter(environment=cast.staging).exists()


def test_promotion_is_refused_to_lesser_roles_other_tenants_and_the_last_environment(client, cast):
    job = cast.make_job(cast.dev)
    prod_job = cast.make_job(cast.prod, name="payments.ledger.prod-only")
    login(client, cast.operator)
    assert "Promote to" not in client.get(reverse("job_detail", args=[job.pk])).content.decode()
    assert client.post(reverse("job_promote", args=[job.pk]), {"justification": "x"}).status_code == 403
    login(client, cast.author)
    assert "Promote to" not in client.get(reverse("job_detail", args=[prod_job.pk])).content.decode()
    assert client.get(reverse("job_promote", args=[prod_job.pk])).status_code == 403
    login(client, cast.globex_author)
    assert client.get(reverse("job_promote", args=[job.pk])).status_code == 404
    assert client.post(reverse("job_promote", args=[job.pk]), {"justification": "x"}).status_code == 404
    assert not ChangeRequest.objects.filter(environment=cast.staging).exists()


# Overdue reviews and sunsets


def _due(job, days: int, **extra):
    Job.objects.filter(pk=job.pk).update(review_due_on=timezone.now().date() + timedelta(days=days), **extra)
    job.refresh_from_db()
    return job


def test_overdue_list_shows_overdue_due_soon_and_sunset_jobs(client, cast):
    late = _due(cast.make_job(cast.dev, name="payments.ledger.late"), -3)
    soon = _due(cast.make_job(cast.dev, name="payments.ledger.soon"), 2)
    _due(cast.make_job(cast.dev, name="payments.ledger.fine"), 200)
    sunset = _due(
        cast.make_job(cast.dev, name="payments.ledger.old"), 200, sunset_on=timezone.now().date() + timedelta(days=3)
    )
    hidden = _due(cast.make_job(cast.globex_prod), -10)
    response = login(client, cast.viewer).get(reverse("overdue_list"))
    assert response.status_code == 200
    ctx = response.context
    assert [j.pk for j in ctx["overdue"]] == [late.pk]
    assert [j.pk for j in ctx["due_soon"]] == [soon.pk]
    assert [j.pk for j in ctx["sunset"]] == [sunset.pk]
    html = response.content.decode()
    assert "3 days overdue" in html and hidden.name not in html
    # A viewer sees the list, not the recertify buttons; the dashboard links to it.
    assert 'data-testid="recertify"' not in html
    dashboard = client.get(reverse("dashboard")).content.decode()
    assert "1 job you can see is overdue" in dashboard and reverse("overdue_list") in dashboard


def test_overdue_list_has_useful_empty_states(client, cast):
    html = login(client, cast.viewer).get(reverse("overdue_list")).content.decode()
    assert "No job you can see is overdue" in html and "No deprecated job is near its sunset" in html


def test_owner_recertifies_an_overdue_job(client, cast):
    job = _due(cast.make_job(cast.dev), -3)
    login(client, cast.author)
    assert 'data-testid="recertify"' in client.get(reverse("overdue_list")).content.decode()
    response = client.post(reverse("job_recertify", args=[job.pk]), {"note": ""})
    assert response.status_code == 400 and "Say what you checked" in response.content.decode()
    response = client.post(reverse("job_recertify", args=[job.pk]), {"note": "runbook and owner checked"})
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.review_due_on > timezone.now().date() + timedelta(days=300)
    assert AuditEvent.objects.filter(action=AuditAction.JOB_RECERTIFIED).count() == 1
    assert job.history.first().history_change_reason == f"recertified by {cast.author.username}"
    assert not client.get(reverse("overdue_list")).context["overdue"]


def test_forged_recertify_is_refused(client, cast):
    job = _due(cast.make_job(cast.dev), -3)
    assert login(client, cast.operator).post(reverse("job_recertify", args=[job.pk]), {"note": "x"}).status_code == 403
    assert (
        login(client, cast.globex_author).post(reverse("job_recertify", args=[job.pk]), {"note": "x"}).status_code
        == 404
    )
    job.refresh_from_db()
    assert job.review_due_on < timezone.now().date()


# Navigation and query counts


def test_nav_links_to_the_new_pages(client, cast):
    html = login(client, cast.viewer).get(reverse("dashboard")).content.decode()
    for name in ("overdue_list", "freeze_list", "policy_list"):
        assert reverse(name) in html
    assert reverse("change_post_reviews") in client.get(reverse("change_list")).content.decode()


def _add_rows(cast, start: int, count: int) -> None:
    now = timezone.now()
    for i in range(start, start + count):
        job = cast.bulk_job(
            i, review_due_on=now.date() - timedelta(days=i + 1), sunset_on=now.date() + timedelta(days=2)
        )
        FreezeWindow.objects.create(
            tenant=cast.acme,
            environment=job.environment,
            starts_at=now + timedelta(days=i, hours=1),
            ends_at=now + timedelta(days=i, hours=2),
            reason=f"freeze {i}",
            created_by=cast.admin,
        )
        change = ChangeRequest.objects.create(
            tenant=cast.acme,
            team=cast.payments,
            environment=cast.prod,
            job=job,
            action="update",
            proposed=job.definition(),
            author=cast.author,
            justification=f"bulk {i}",
            status=ChangeStatus.APPLIED,
            emergency=True,
        )
        PostReview.objects.create(change_request=change)


@pytest.mark.parametrize(
    ("url", "user"),
    [
        ("policy_list", "admin"),
        ("freeze_list", "admin"),
        ("change_post_reviews", "approver"),
        ("overdue_list", "author"),
    ],
)
def test_new_pages_do_not_grow_queries_with_rows(client, cast, django_assert_max_num_queries, url, user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    login(client, getattr(cast, user))

    def add(start, count, environment, criticality, approvals, separation, justification):
        _add_rows(cast, start, count)
        rule = {"criticality": criticality, "required_approvals": approvals, "separation_of_duties": separation}
        propose_policy_change(actor=cast.admin, environment=environment, rule=rule, justification=justification)

    add(0, 3, cast.prod, "low", 1, False, "low is cheap")
    with CaptureQueriesContext(connection) as small:
        assert client.get(reverse(url)).status_code == 200
    add(3, 20, cast.staging, "high", 2, True, "high needs two")
    with django_assert_max_num_queries(len(small.captured_queries)):
        response = client.get(reverse(url))
    assert response.status_code == 200
