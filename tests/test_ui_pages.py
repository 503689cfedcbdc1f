"""The browser UI through Django's test client: pages, roles, tenancy and forged requests."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from approvals.models import ChangeRequest, ChangeStatus, Review
from approvals.services import approve_change
from conftest import PASSWORD
from governance.models import AuditEvent
from jobs.models import DEFINITION_FIELDS, Job, JobStatus, Run, RunStatus


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)
    return client


def make_run(job, *, status=RunStatus.SUCCEEDED, minutes_ago=5, output="ok\n"):
    when = timezone.now() - timezone.timedelta(minutes=minutes_ago)
    return Run.objects.create(
        job=job,
        tenant_id=job.tenant_id,
        scheduled_for=when,
        status=status,
        job_version=job.version,
        definition=job.definition(),
        queued_at=when,
        started_at=when,
        finished_at=when + timezone.timedelta(seconds=3),
        exit_code=0 if status == RunStatus.SUCCEEDED else 1,
        output=output,
        output_bytes=len(output),
    )


def propose_prod(cast, **overrides):
    return cast.propose_job(
        definition=cast.definition(**overrides), justification="nightly reconciliation for the audit", ticket="FIN-7"
    )


def test_login_page_signs_in_and_lands_on_the_dashboard(client, cast):
    response = client.post(reverse("login"), {"username": "acme-author", "password": PASSWORD}, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == reverse("dashboard")
    assert b"Dashboard" in response.content


def test_pages_need_a_login(client, cast):
    response = client.get(reverse("job_list"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize(
    "role",
    ["admin", "author", "approver", "operator", "viewer", "outsider", "superuser", "globex_admin"],
)
def test_dashboard_renders_for_every_role(client, cast, role):
    job = cast.make_job(cast.dev)
    make_run(job, status=RunStatus.FAILED)
    propose_prod(cast)
    response = login(client, getattr(cast, role)).get(reverse("dashboard"))
    assert response.status_code == 200
    assert b"Runs in the last 24 hours" in response.content


def test_dashboard_shows_my_review_queue_failures_and_chart(client, cast):
    job = cast.make_job(cast.dev)
    failed = make_run(job, status=RunStatus.FAILED, minutes_ago=10)
    make_run(job, status=RunStatus.SUCCEEDED, minutes_ago=70)
    change = propose_prod(cast)
    html = login(client, cast.approver).get(reverse("dashboard")).content.decode()
    assert f"CR-{change.pk}" in html
    assert reverse("run_detail", args=[failed.pk]) in html
    assert "<svg" in html and 'class="seg st-failed"' in html and 'class="seg st-succeeded"' in html


def test_dashboard_has_useful_empty_states(client, cast):
    html = login(client, cast.viewer).get(reverse("dashboard")).content.decode()
    assert "Nothing waits for you" in html
    assert "No runs in the last 24 hours" in html
    assert "No jobs visible to you yet" in html


def test_dashboard_does_not_show_another_tenants_jobs_or_requests(client, cast):
    cast.make_job(cast.globex_prod)
    cast.propose_job(
        environment=cast.globex_prod,
        definition=cast.definition(name="ops.backup.secret-thing"),
        justification="globex only",
    )
    html = login(client, cast.approver).get(reverse("dashboard")).content.decode()
    assert "ops.backup" not in html


def test_job_list_filters_by_environment_team_and_search(client, cast):
    cast.make_job(cast.dev)
    cast.make_job(cast.staging, name="payments.ledger.staging-only")
    cast.make_job(cast.dev, team=cast.data)
    login(client, cast.viewer)
    html = client.get(reverse("job_list"), {"environment": "staging"}).content.decode()
    assert "payments.ledger.staging-only" in html and "payments.ledger.reconcile" not in html
    html = client.get(reverse("job_list"), {"team": cast.data.pk}).content.decode()
    assert "data.warehouse.load" in html and "payments.ledger" not in html
    html = client.get(reverse("job_list"), {"criticality": "low"}).content.decode()
    assert "No job matches these filters" in html
    html = client.get(reverse("job_list"), {"q": "staging-only"}).content.decode()
    assert "payments.ledger.staging-only" in html and "data.warehouse.load" not in html


def test_job_list_hides_other_tenants_jobs(client, cast):
    cast.make_job(cast.globex_prod)
    cast.make_job(cast.dev)
    html = login(client, cast.viewer).get(reverse("job_list")).content.decode()
    assert "payments.ledger.reconcile" in html and "ops.backup.snapshot" not in html


def test_job_detail_shows_next_runs_in_utc_and_local_time(client, cast):
    job = cast.make_job(cast.prod, cron="30 2 * * *", timezone="Europe/Berlin", rationale="Runs in the DST hour.")
    html = login(client, cast.viewer).get(reverse("job_detail", args=[job.pk])).content.decode()
    assert "Local (Europe/Berlin)" in html
    # 02:30 in Berlin is 01:30 UTC in winter and 00:30 UTC in summer: both columns are shown.
    assert html.count("02:30 CE") == 5
    assert "01:30 UTC" in html or "00:30 UTC" in html
    assert "v1 live" in html and "governed" in html


def test_job_detail_lists_every_version_with_its_request_and_diff(client, cast):
    job = cast.make_job(cast.dev)
    change = cast.propose_update(job, {"cron": "*/10 * * * *"}, actor=cast.author2, justification="faster")
    assert change.status == ChangeStatus.APPLIED
    html = login(client, cast.viewer).get(reverse("job_detail", args=[job.pk])).content.decode()
    assert "v2" in html and "v1" in html
    assert f"CR-{change.pk}" in html and "acme-author2" in html
    assert "*/5 * * * *" in html and "*/10 * * * *" in html


def test_runbook_and_output_are_escaped(client, cast):
    job = cast.make_job(cast.dev, runbook="# Steps\n- call <script>alert('rb')</script>\n- **page** `oncall`")
    run = make_run(job, output="<img src=x onerror=alert(1)>\n")
    login(client, cast.viewer)
    html = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert "<strong>page</strong>" in html and "<code>oncall</code>" in html
    html = client.get(reverse("run_detail", args=[run.pk])).content.decode()
    assert "<img src=x" not in html and "&lt;img src=x" in html


def test_run_detail_shows_timings_exit_code_version_and_trigger(client, cast):
    job = cast.make_job(cast.dev, timezone="America/New_York")
    run = make_run(job, status=RunStatus.FAILED, output="boom\n")
    html = login(client, cast.viewer).get(reverse("run_detail", args=[run.pk])).content.decode()
    assert "Failed" in html and "boom" in html and "executed v1" in html
    assert "Local (America/New_York)" in html and " UTC" in html and ("EST" in html or "EDT" in html)
    assert "the scheduler" in html


def test_viewer_sees_no_trigger_button_and_a_forged_trigger_is_forbidden(client, cast):
    job = cast.make_job(cast.dev)
    login(client, cast.viewer)
    html = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    assert reverse("job_trigger", args=[job.pk]) not in html
    assert reverse("job_pause", args=[job.pk]) not in html
    assert reverse("change_edit", args=[job.pk]) not in html
    response = client.post(reverse("job_trigger", args=[job.pk]))
    assert response.status_code == 403
    assert not Run.objects.exists()


def test_operator_triggers_a_run_and_sees_it(client, cast, django_capture_on_commit_callbacks):
    job = cast.make_job(cast.dev)
    login(client, cast.operator)
    assert reverse("job_trigger", args=[job.pk]) in client.get(reverse("job_detail", args=[job.pk])).content.decode()
    response = client.post(reverse("job_trigger", args=[job.pk]), {"reason": "re-run after fix"})
    run = Run.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("run_detail", args=[run.pk])
    assert run.triggered_by == cast.operator and run.reason == "re-run after fix"
    html = client.get(response["Location"]).content.decode()
    assert "acme-operator" in html and "re-run after fix" in html


def test_pausing_needs_a_reason_and_changes_nothing_without_one(client, cast):
    job = cast.make_job(cast.dev)
    login(client, cast.operator)
    response = client.post(reverse("job_pause", args=[job.pk]), {"reason": "  "})
    assert response.status_code == 400
    assert "Give a reason" in response.content.decode()
    job.refresh_from_db()
    assert job.status == JobStatus.ENABLED
    response = client.post(reverse("job_pause", args=[job.pk]), {"reason": "upstream outage"})
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED
    response = client.post(reverse("job_resume", args=[job.pk]), {"reason": "outage over"})
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == JobStatus.ENABLED


def test_globex_user_gets_404_on_every_acme_page_and_action(client, cast):
    job = cast.make_job(cast.prod)
    run = make_run(job)
    change = cast.propose_update(job, {"cron": "*/10 * * * *"}, justification="x")
    login(client, cast.globex_admin)
    gets = [
        reverse("job_detail", args=[job.pk]),
        reverse("run_detail", args=[run.pk]),
        reverse("change_detail", args=[change.pk]),
        reverse("change_edit", args=[job.pk]),
        reverse("change_delete", args=[job.pk]),
    ]
    posts = [
        reverse("job_trigger", args=[job.pk]),
        reverse("job_pause", args=[job.pk]),
        reverse("job_resume", args=[job.pk]),
        reverse("run_cancel", args=[run.pk]),
        reverse("change_approve", args=[change.pk]),
        reverse("change_reject", args=[change.pk]),
        reverse("change_withdraw", args=[change.pk]),
        reverse("change_edit", args=[job.pk]),
        reverse("change_delete", args=[job.pk]),
    ]
    for url in gets:
        assert client.get(url).status_code == 404, url
    for url in posts:
        assert (
            client.post(url, {"reason": "x", "comment": "x", "justification": "x", "revision": 1}).status_code == 404
        ), url
    # A missing object looks exactly the same.
    assert client.get(reverse("job_detail", args=[999999])).status_code == 404
    change.refresh_from_db()
    assert change.status == ChangeStatus.SUBMITTED and not change.reviews.exists()
    assert Run.objects.count() == 1


def test_author_sees_no_approve_button_and_a_forged_approve_is_refused(client, cast):
    change = propose_prod(cast)
    login(client, cast.author)
    html = client.get(reverse("change_detail", args=[change.pk])).content.decode()
    assert 'data-testid="approve"' not in html and 'data-testid="reject"' not in html
    assert "someone else must review it" in html
    response = client.post(reverse("change_approve", args=[change.pk]), {"revision": 1, "comment": "lgtm, me"})
    assert response.status_code == 403
    assert "Nobody reviews their own change" in response.content.decode()
    assert not Review.objects.exists()
    change.refresh_from_db()
    assert change.status == ChangeStatus.SUBMITTED


def test_a_user_without_the_approver_role_cannot_review(client, cast):
    change = propose_prod(cast)
    login(client, cast.operator)
    html = client.get(reverse("change_detail", args=[change.pk])).content.decode()
    assert 'data-testid="approve"' not in html
    response = client.post(reverse("change_reject", args=[change.pk]), {"revision": 1, "comment": "no"})
    assert response.status_code == 403
    assert not Review.objects.exists()


def test_two_approvers_approve_in_the_ui_and_the_job_goes_live(client, cast):
    change = propose_prod(cast)
    login(client, cast.approver)
    html = client.get(reverse("change_detail", args=[change.pk])).content.decode()
    assert 'data-testid="approve"' in html and "0 of 2" in html
    response = client.post(reverse("change_approve", args=[change.pk]), {"revision": 1, "comment": "looks right"})
    assert response.status_code == 302
    html = client.get(reverse("change_detail", args=[change.pk])).content.decode()
    assert "1 of 2" in html and "looks right" in html and 'data-testid="approve"' not in html
    assert not Job.objects.exists()
    # Approving twice is refused with the reason.
    response = client.post(reverse("change_approve", args=[change.pk]), {"revision": 1})
    assert response.status_code == 409
    login(client, cast.approver2)
    client.post(reverse("change_approve", args=[change.pk]), {"revision": 1})
    job = Job.objects.get()
    html = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    assert "v1 live" in html and f"CR-{change.pk}" in html


def test_reject_with_a_reason_ends_the_request(client, cast):
    change = propose_prod(cast)
    login(client, cast.approver)
    client.post(reverse("change_reject", args=[change.pk]), {"revision": 1, "reason": "wrong team"})
    change.refresh_from_db()
    assert change.status == ChangeStatus.REJECTED
    html = client.get(reverse("change_detail", args=[change.pk])).content.decode()
    assert "wrong team" in html and "Rejected" in html


def test_author_withdraws_own_request_and_others_cannot(client, cast):
    change = propose_prod(cast)
    login(client, cast.author2)
    assert client.post(reverse("change_withdraw", args=[change.pk])).status_code == 403
    login(client, cast.author)
    html = client.get(reverse("change_detail", args=[change.pk])).content.decode()
    assert 'data-testid="withdraw"' in html
    client.post(reverse("change_withdraw", args=[change.pk]))
    change.refresh_from_db()
    assert change.status == ChangeStatus.WITHDRAWN


def test_change_detail_shows_a_side_by_side_diff_with_changed_fields_marked(client, cast):
    job = cast.make_job(cast.prod)
    change = cast.propose_update(
        job, {"cron": "*/10 * * * *", "command": ["/bin/echo", "bye"]}, justification="tune", ticket="OPS-1"
    )
    html = login(client, cast.approver).get(reverse("change_detail", args=[change.pk])).content.decode()
    assert f"2 of {len(DEFINITION_FIELDS)} fields changed" in html
    assert '<span class="removed">*/5 * * * *</span>' in html
    assert '<span class="added">*/10 * * * *</span>' in html
    assert '<span class="ln removed">hello</span>' in html and '<span class="ln added">bye</span>' in html
    assert "OPS-1" in html and "tune" in html
    assert "Next runs before vs after" in html


SCHEDULING_DEFAULTS = {"gap": "shift", "overlap": "once", "catchup": "skip", "catchup_limit": "10"}


def form_data(**fields) -> dict:
    return {**SCHEDULING_DEFAULTS, **fields}


def prefilled(form, **changes) -> dict:
    data = {k: v for k, v in form.initial.items() if k in form.fields and v is not None}
    data.update(changes)
    return data


def test_new_job_form_proposes_a_change(client, cast):
    login(client, cast.author)
    assert client.get(reverse("change_new")).status_code == 200
    response = client.post(
        reverse("change_new"),
        form_data(
            **{
                "team": cast.payments.pk,
                "environment": cast.prod.pk,
                "name": "payments.ledger.reconcile",
                "description": "d",
                "runbook": "r",
                "criticality": "high",
                "command": "/bin/echo\r\nhello world\r\n",
                "cron": "0 3 * * *",
                "timezone": "Europe/Berlin",
                "timeout_seconds": "600",
                "justification": "needed for close",
                "ticket": "FIN-1",
            }
        ),
    )
    change = ChangeRequest.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("change_detail", args=[change.pk])
    assert change.proposed["command"] == ["/bin/echo", "hello world"]
    assert change.status == ChangeStatus.SUBMITTED and change.author == cast.author


def test_invalid_new_job_form_shows_field_errors_and_writes_nothing(client, cast):
    login(client, cast.author)
    events = AuditEvent.objects.count()

    def post(justification: str):
        fields = {
            "team": cast.payments.pk,
            "environment": cast.prod.pk,
            "name": "data.wrong.prefix",
            "criticality": "high",
            "command": "/bin/echo",
            "cron": "61 * * * *",
            "timezone": "Mars/Olympus",
            "timeout_seconds": "60",
            "justification": justification,
        }
        response = client.post(reverse("change_new"), form_data(**fields))
        assert response.status_code == 400
        return response, response.context["form"].errors

    response, errors = post("")
    assert set(errors) >= {"justification"}
    html = response.content.decode()
    assert "A justification is required" in html
    assert not ChangeRequest.objects.exists() and AuditEvent.objects.count() == events
    # With a justification the service's own checks speak, per field.
    response, errors = post("because")
    assert {"name", "cron", "timezone"} <= set(errors)
    assert "must start with &#x27;payments.&#x27;" in response.content.decode()
    assert not ChangeRequest.objects.exists() and AuditEvent.objects.count() == events


def test_edit_form_is_prefilled_and_proposes_an_update(client, cast):
    job = cast.make_job(cast.prod)
    login(client, cast.author)
    response = client.get(reverse("change_edit", args=[job.pk]))
    form = response.context["form"]
    assert form.initial["cron"] == "*/5 * * * *" and form.initial["command"] == "/bin/echo\nhello"
    data = prefilled(form, cron="*/20 * * * *", justification="less often")
    response = client.post(reverse("change_edit", args=[job.pk]), data)
    change = ChangeRequest.objects.get(action="update")
    assert response.status_code == 302
    assert change.proposed["cron"] == "*/20 * * * *" and change.base_version == 1


def test_unchanged_edit_is_refused_with_a_clear_error(client, cast):
    job = cast.make_job(cast.prod)
    login(client, cast.author)
    form = client.get(reverse("change_edit", args=[job.pk])).context["form"]
    data = prefilled(form, justification="nothing")
    response = client.post(reverse("change_edit", args=[job.pk]), data)
    assert response.status_code == 400
    assert "identical to the live one" in response.content.decode()
    assert not ChangeRequest.objects.filter(action="update").exists()


def test_propose_deletion_needs_a_justification(client, cast):
    job = cast.make_job(cast.prod)
    login(client, cast.author)
    response = client.post(reverse("change_delete", args=[job.pk]), {"justification": ""})
    assert response.status_code == 400
    assert not ChangeRequest.objects.filter(action="delete").exists()
    response = client.post(reverse("change_delete", args=[job.pk]), {"justification": "retired system"})
    change = ChangeRequest.objects.get(action="delete")
    assert response.status_code == 302 and change.status == ChangeStatus.SUBMITTED


def test_viewer_cannot_open_the_proposal_forms(client, cast):
    job = cast.make_job(cast.dev)
    login(client, cast.viewer)
    assert client.get(reverse("change_new")).status_code == 403
    assert client.get(reverse("change_edit", args=[job.pk])).status_code == 403


def test_review_tab_lists_critical_and_old_requests_first(client, cast):
    low = propose_prod(cast, name="payments.ledger.low", criticality="low")
    critical = propose_prod(cast, name="payments.ledger.crit", criticality="critical", rationale="Short runs.")
    mine = cast.propose_job(
        actor=cast.author2, definition=cast.definition(name="payments.ledger.other"), justification="x"
    )
    approve_change(mine, actor=cast.approver)  # already reviewed by approver: not in the queue
    response = login(client, cast.approver).get(reverse("change_list"), {"tab": "review"})
    ids = [c.pk for c in response.context["changes"]]
    assert ids == [critical.pk, low.pk]


def test_change_list_tabs_mine_and_all(client, cast):
    mine = propose_prod(cast)
    other = cast.propose_job(
        actor=cast.author2, definition=cast.definition(name="payments.ledger.other"), justification="x"
    )
    login(client, cast.author)
    assert [c.pk for c in client.get(reverse("change_list"), {"tab": "mine"}).context["changes"]] == [mine.pk]
    all_ids = {c.pk for c in client.get(reverse("change_list"), {"tab": "all"}).context["changes"]}
    assert all_ids == {mine.pk, other.pk}


def test_audit_page_filters_by_action_actor_and_time(client, cast):
    cast.make_job(cast.dev)
    login(client, cast.admin)
    response = client.get(reverse("audit_list"), {"action": "job.created"})
    assert response.status_code == 200
    assert {e.action for e in response.context["events"]} == {"job.created"}
    job = Job.objects.get()
    assert f'href="{reverse("job_detail", args=[job.pk])}"' in response.content.decode()
    response = client.get(reverse("audit_list"), {"actor": "acme-author"})
    assert {e.actor_repr for e in response.context["events"]} == {"acme-author"}
    response = client.get(reverse("audit_list"), {"since": "2000-01-01", "until": "2000-01-02"})
    assert list(response.context["events"]) == []
    response = client.get(reverse("audit_list"), {"action": "job.created", "since": "2000-01-01"})
    link = reverse("api-audit-export") + "?action=job.created&amp;since=2000-01-01T00%3A00%3A00Z&amp;format=csv"
    assert link in response.content.decode()
    export = client.get(reverse("api-audit-export"), {"action": "job.created", "since": "2000-01-01T00:00:00Z"})
    assert export.status_code == 200 and b"job.created" in b"".join(export.streaming_content)
    response = client.get(reverse("audit_list"), {"since": "yesterday"})
    assert response.status_code == 400 and "Use a date" in response.content.decode()


def test_audit_page_hides_other_tenants_events(client, cast):
    cast.make_job(cast.globex_prod)
    response = login(client, cast.admin).get(reverse("audit_list"))
    assert all(e.tenant_id == cast.acme.pk for e in response.context["events"])


def test_an_earlier_version_can_be_proposed_again(client, cast):
    job = cast.make_job(cast.dev)
    cast.propose_update(job, {"cron": "*/9 * * * *"}, justification="x")
    login(client, cast.author)
    html = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    assert f"{reverse('change_edit', args=[job.pk])}?version=1" in html
    response = client.get(reverse("change_edit", args=[job.pk]), {"version": 1})
    form = response.context["form"]
    assert form.initial["cron"] == "*/5 * * * *" and "Roll back to v1" in form.initial["justification"]
    response = client.post(reverse("change_edit", args=[job.pk]), prefilled(form, justification="roll back"))
    job.refresh_from_db()
    assert response.status_code == 302 and job.cron == "*/5 * * * *" and job.version == 3


def test_author_edits_a_submitted_request_and_approvals_reset(client, cast):
    change = propose_prod(cast)
    approve_change(change, actor=cast.approver)
    login(client, cast.author)
    html = client.get(reverse("change_detail", args=[change.pk])).content.decode()
    assert reverse("change_revise", args=[change.pk]) in html
    form = client.get(reverse("change_revise", args=[change.pk])).context["form"]
    data = prefilled(form, cron="15 4 * * *", based_on_revision="1")
    response = client.post(reverse("change_revise", args=[change.pk]), data)
    assert response.status_code == 302
    change.refresh_from_db()
    assert change.revision == 2 and change.proposed["cron"] == "15 4 * * *"
    html = client.get(reverse("change_detail", args=[change.pk])).content.decode()
    assert "0 of 2" in html and "reset by an edit" in html
    # A stale form (edited from revision 1 again) is refused and changes nothing.
    response = client.post(reverse("change_revise", args=[change.pk]), {**data, "cron": "0 5 * * *"})
    assert response.status_code == 400 and "changed meanwhile" in response.content.decode()
    change.refresh_from_db()
    assert change.revision == 2 and change.proposed["cron"] == "15 4 * * *"


def test_others_cannot_edit_a_request(client, cast):
    change = propose_prod(cast)
    login(client, cast.author2)
    assert client.get(reverse("change_revise", args=[change.pk])).status_code == 403


def test_stale_request_offers_rebase_to_its_author(client, cast):
    job = cast.make_job(cast.prod)
    stale = cast.propose_update(job, {"cron": "*/7 * * * *"}, justification="a")
    other = cast.propose_update(job, {"timeout_seconds": 99}, actor=cast.author2, justification="b")
    approve_change(other, actor=cast.approver)
    approve_change(other, actor=cast.approver2)
    login(client, cast.author)
    html = client.get(reverse("change_detail", args=[stale.pk])).content.decode()
    assert "The job changed after this request was made" in html and 'data-testid="rebase"' in html
    response = client.post(reverse("change_rebase", args=[stale.pk]))
    assert response.status_code == 302
    stale.refresh_from_db()
    assert (
        stale.base_version == 2 and stale.proposed["timeout_seconds"] == 99 and stale.proposed["cron"] == "*/7 * * * *"
    )


def test_author_and_reviewers_comment_but_viewers_cannot(client, cast):
    change = propose_prod(cast)
    login(client, cast.approver)
    response = client.post(reverse("change_comment", args=[change.pk]), {"body": "Why 02:30?"})
    assert response.status_code == 302
    html = client.get(reverse("change_detail", args=[change.pk])).content.decode()
    assert "Why 02:30?" in html
    login(client, cast.viewer)
    assert "Add comment" not in client.get(reverse("change_detail", args=[change.pk])).content.decode()
    assert client.post(reverse("change_comment", args=[change.pk]), {"body": "me too"}).status_code == 403
    assert change.comments.count() == 1


def test_approved_change_held_by_a_freeze_says_why(client, cast):

    cast.freeze(environment=cast.prod, reason="quarter close")
    change = propose_prod(cast)
    approve_change(change, actor=cast.approver)
    approve_change(change, actor=cast.approver2)
    change.refresh_from_db()
    assert change.status == ChangeStatus.APPROVED
    html = login(client, cast.author).get(reverse("change_detail", args=[change.pk])).content.decode()
    assert "Approved, not applied yet" in html and "quarter close" in html


def test_emergency_change_during_a_freeze_gets_a_review_after_the_fact(client, cast):

    cast.freeze(environment=cast.prod, reason="quarter close")
    login(client, cast.author)
    response = client.post(
        reverse("change_new"),
        form_data(
            team=cast.payments.pk,
            environment=cast.prod.pk,
            name="payments.ledger.hotfix",
            criticality="high",
            command="/bin/echo",
            cron="0 3 * * *",
            timezone="UTC",
            timeout_seconds="60",
            justification="fix the outage",
            emergency="on",
        ),
    )
    change = ChangeRequest.objects.get()
    assert response.status_code == 302 and change.emergency
    approve_change(change, actor=cast.approver)
    approve_change(change, actor=cast.approver2)
    change.refresh_from_db()
    assert change.status == ChangeStatus.APPLIED
    login(client, cast.approver)
    html = client.get(reverse("change_detail", args=[change.pk])).content.decode()
    assert "Review after the fact" in html and "Record review" in html
    response = client.post(reverse("change_post_review", args=[change.pk]), {"notes": "checked, fine"})
    assert response.status_code == 302
    change.post_review.refresh_from_db()
    assert change.post_review.reviewer == cast.approver


def test_policy_change_request_page_renders_its_rule_diff(client, cast):
    from approvals.services import propose_policy_change

    change = propose_policy_change(
        actor=cast.admin,
        environment=cast.prod,
        rule={"criticality": "critical", "required_approvals": 3, "separation_of_duties": False},
        justification="critical jobs need three",
    )
    response = login(client, cast.approver).get(reverse("change_detail", args=[change.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Approval rule: live vs proposed" in html and "critical jobs need three" in html
    assert client.get(reverse("change_list"), {"tab": "all"}).status_code == 200
