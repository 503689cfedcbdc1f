"""The Django admin is never a way around change control."""

from __future__ import annotations

import pytest
from django.urls import reverse

from approvals.models import ChangeRequest, Review
from approvals.services import propose_change
from conftest import PASSWORD
from governance.models import AuditEvent
from jobs.models import Job


@pytest.fixture
def root(client, cast):
    client.login(username=cast.superuser.username, password=PASSWORD)
    return client


@pytest.fixture
def staff(client, cast):
    cast.admin.is_staff = True
    cast.admin.save()
    client.login(username=cast.admin.username, password=PASSWORD)
    return client


def test_job_change_page_is_read_only_even_for_superusers(root, cast):
    job = cast.make_job(cast.prod)
    url = reverse("admin:jobs_job_change", args=[job.pk])
    html = root.get(url).content.decode()
    assert 'name="_save"' not in html
    assert "change only through change requests" in html
    response = root.post(url, {"name": "payments.ledger.hacked", "cron": "* * * * *"})
    assert response.status_code == 403
    job.refresh_from_db()
    assert job.name == "payments.ledger.reconcile"


@pytest.mark.parametrize(
    "model",
    [
        "jobs_job",
        "jobs_run",
        "approvals_changerequest",
        "approvals_review",
        "governance_auditevent",
        "governance_auditchain",
    ],
)
def test_governed_models_cannot_be_added_in_admin(root, cast, model):
    assert root.get(reverse(f"admin:{model}_add")).status_code == 403
    assert root.post(reverse(f"admin:{model}_add"), {}).status_code == 403


def test_governed_objects_cannot_be_deleted_in_admin(root, cast):
    job = cast.make_job(cast.prod)
    change = ChangeRequest.objects.get()
    for url in [
        reverse("admin:jobs_job_delete", args=[job.pk]),
        reverse("admin:approvals_changerequest_delete", args=[change.pk]),
        reverse("admin:approvals_review_delete", args=[Review.objects.first().pk]),
        reverse("admin:governance_auditevent_delete", args=[AuditEvent.objects.first().pk]),
    ]:
        assert root.post(url, {"post": "yes"}).status_code == 403, url
    assert Job.objects.filter(pk=job.pk).exists()


def test_history_revert_is_refused(root, cast):
    job = cast.make_job(cast.dev)
    propose_change(actor=cast.author, action="update", job=job, definition={"cron": "*/9 * * * *"}, justification="x")
    first = job.history.order_by("history_date").first()
    url = reverse("admin:jobs_job_simple_history", args=[job.pk, first.history_id])
    assert root.get(url).status_code == 200
    response = root.post(url, {"cron": "*/5 * * * *"})
    assert response.status_code == 403
    job.refresh_from_db()
    assert job.cron == "*/9 * * * *" and job.version == 2


def test_change_request_change_page_refuses_post(root, cast):
    change = cast.propose_job(justification="x")
    url = reverse("admin:approvals_changerequest_change", args=[change.pk])
    assert 'name="_save"' not in root.get(url).content.decode()
    assert root.post(url, {"status": "approved"}).status_code == 403
    change.refresh_from_db()
    assert change.status == "submitted"


def test_superuser_edits_environments(root, cast):
    url = reverse("admin:governance_environment_change", args=[cast.staging.pk])
    assert 'name="_save"' in root.get(url).content.decode()


def test_staff_who_are_not_superusers_only_read_tenancy(staff, cast):
    assert staff.get(reverse("admin:governance_tenant_add")).status_code == 403
    url = reverse("admin:governance_environment_change", args=[cast.prod.pk])
    response = staff.get(url)
    assert response.status_code == 200 and 'name="_save"' not in response.content.decode()
    assert staff.post(url, {"required_approvals": "0"}).status_code == 403
    cast.prod.refresh_from_db()
    assert cast.prod.required_approvals == 2


def test_staff_see_only_rows_of_their_tenant(staff, cast):
    acme_job = cast.make_job(cast.dev)
    globex_job = cast.make_job(cast.globex_prod)
    html = staff.get(reverse("admin:jobs_job_changelist")).content.decode()
    assert acme_job.name in html and globex_job.name not in html
    html = staff.get(reverse("admin:governance_tenant_changelist")).content.decode()
    assert "acme" in html and "globex" not in html
    response = staff.get(reverse("admin:jobs_job_change", args=[globex_job.pk]))
    # Django's admin answers a row outside the queryset like a missing one.
    assert response.status_code == 302 and globex_job.name not in staff.get(response["Location"]).content.decode()
    html = staff.get(reverse("admin:governance_scopeuserrole_changelist")).content.decode()
    assert "globex-author" not in html


def test_admin_registers_every_model(root):
    from django.apps import apps
    from django.contrib import admin

    for label in ("governance", "jobs", "approvals"):
        for model in apps.get_app_config(label).get_models():
            if model.__name__.startswith("Historical"):
                continue
            assert admin.site.is_registered(model), model
    assert root.get(reverse("admin:index")).status_code == 200
    for model in admin.site._registry:
        opts = model._meta
        if opts.app_label in ("governance", "jobs", "approvals"):
            url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
            assert root.get(url).status_code == 200, url
