"""Reviewing changes in the browser UI (issue 17): rejections with reasons, revise and resubmit,
the reviewer's create view, the dashboard's decided requests, and a propose form that teaches."""

import re

from django.urls import reverse

from approvals.models import ChangeRequest, ChangeStatus, Review
from approvals.services import approve_change, propose_change, propose_pause_change, reject_change
from tests.api_support import counts


def propose_prod(cast, **overrides):
    return propose_change(
        actor=cast.author,
        action="create",
        team=cast.payments,
        environment=cast.prod,
        definition=cast.definition(**overrides),
        justification="nightly reconciliation",
    )


def page(client, user, change):
    client.force_login(user)
    return client.get(reverse("change_detail", args=[change.pk])).content.decode()


def test_reject_is_a_confirmation_step_that_needs_a_reason(client, cast):
    change = propose_prod(cast)
    html = page(client, cast.approver, change)
    # The reject button opens the confirmation step; the reason field is in it, required.
    assert 'data-testid="reject-box"' in html and 'data-testid="confirm-reject"' in html
    assert 'name="reason"' in html
    before = counts()
    response = client.post(reverse("change_reject", args=[change.pk]), {"revision": 1, "reason": "  "})
    assert response.status_code == 400
    html = response.content.decode()
    assert "its author reads the reason" in html
    # The step stays open with the error beside the field, linked to it.
    assert re.search(r'<details class="reject-box" data-testid="reject-box" open>', html)
    assert (
        'aria-describedby="reject_reason_helptext reject_reason_error"' in html and 'id="reject_reason_error"' in html
    )
    assert counts() == before
    assert ChangeRequest.objects.get().status == ChangeStatus.SUBMITTED


def test_the_author_sees_the_reason_and_the_badge_reads_rejected(client, cast):
    change = propose_prod(cast)
    client.force_login(cast.approver)
    response = client.post(reverse("change_reject", args=[change.pk]), {"revision": 1, "reason": "Runbook is empty."})
    assert response.status_code == 302
    html = page(client, cast.author, change)
    assert 'data-testid="rejection"' in html and "Runbook is empty." in html
    assert "Rejectd" not in html and ">Rejected</span>" in html
    assert 'data-testid="resubmit"' in html and reverse("change_revise", args=[change.pk]) in html
    # Only the author is offered to resubmit.
    assert 'data-testid="resubmit"' not in page(client, cast.approver2, change)


def test_revise_and_resubmit_in_the_form_makes_a_new_revision(client, cast):
    change = reject_change(propose_prod(cast), actor=cast.approver, reason="Timeout too short.")
    client.force_login(cast.author)
    url = reverse("change_revise", args=[change.pk])
    html = client.get(url).content.decode()
    assert "Revise and resubmit CR-" in html and "Timeout too short." in html and "Resubmit as revision 2" in html
    body = {
        "name": "payments.ledger.reconcile",
        "description": "Reconcile the ledger.",
        "criticality": "high",
        "command": "/bin/echo\nhello",
        "cron": "*/5 * * * *",
        "timezone": "Europe/Berlin",
        "timeout_seconds": "900",
        "runbook": "Re-run it.",
        "gap": "shift",
        "overlap": "once",
        "catchup": "skip",
        "catchup_limit": "10",
        "justification": "Timeout raised to 15 minutes.",
        "based_on_revision": "1",
    }
    response = client.post(url, body)
    assert response.status_code == 302, response.content.decode()[:3000]
    change.refresh_from_db()
    assert (change.status, change.revision, change.proposed["timeout_seconds"]) == ("submitted", 2, 900)
    html = page(client, cast.approver, change)
    assert "on revision 1 (reset by the resubmission)" in html and 'data-testid="approve"' in html


def test_a_state_change_is_resubmitted_with_a_new_justification(client, cast):
    from approvals.models import ApprovalPolicy

    job = cast.make_job(cast.staging)
    ApprovalPolicy.objects.filter(environment=cast.staging).update(pause_requires_change=True)
    change = propose_pause_change(job, actor=cast.operator, paused=True, justification="noisy")
    change = reject_change(change, actor=cast.approver, reason="Say which incident.")
    html = page(client, cast.operator, change)
    assert reverse("change_resubmit", args=[change.pk]) in html
    response = client.post(
        reverse("change_resubmit", args=[change.pk]), {"justification": "INC-42 floods", "based_on_revision": 1}
    )
    assert response.status_code == 302
    change.refresh_from_db()
    assert change.status == ChangeStatus.SUBMITTED and change.revision == 2


def test_resubmitting_a_request_that_is_not_rejected_is_refused_in_the_ui(client, cast):
    change = propose_prod(cast)
    client.force_login(cast.author)
    before = counts()
    response = client.post(reverse("change_resubmit", args=[change.pk]), {"justification": "x", "based_on_revision": 1})
    assert response.status_code == 409
    assert "Only a rejected request can be revised and resubmitted" in response.content.decode()
    assert counts() == before


def test_the_dashboard_lists_my_recently_decided_requests(client, cast):
    rejected = reject_change(propose_prod(cast), actor=cast.approver, reason="Use the data team's prefix.")
    applied = cast.make_job(cast.dev, name="payments.ledger.tidy")
    still_open = propose_prod(cast, name="payments.ledger.open")
    client.force_login(cast.author)
    html = client.get(reverse("dashboard")).content.decode()
    section = html[html.index('data-testid="recently-decided"') :]
    section = section[: section.index("</section>")]
    assert f"CR-{rejected.pk}" in section and "Use the data team&#x27;s prefix." in section
    assert "revise and resubmit" in section and "by acme-approver" in section
    assert "payments.ledger.tidy" in section and applied.name
    assert f"CR-{still_open.pk}<" not in section
    # Another author's page lists none of them.
    client.force_login(cast.author2)
    html = client.get(reverse("dashboard")).content.decode()
    assert "None of your requests was decided" in html


def test_the_dashboard_query_count_does_not_grow_with_decided_requests(client, cast, django_assert_max_num_queries):
    reject_change(propose_prod(cast, name="payments.ledger.first"), actor=cast.approver, reason="no")
    client.force_login(cast.author)
    client.get(reverse("dashboard"))
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        client.get(reverse("dashboard"))
    for i in range(4):
        reject_change(propose_prod(cast, name=f"payments.ledger.r{i}"), actor=cast.approver, reason=f"no {i}")
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(reverse("dashboard"))


def test_the_create_view_shows_what_is_set_and_the_nonstandard_traits_first(client, cast):
    change = propose_prod(
        cast, cron="* * * * *", criticality="critical", rationale="A heartbeat is not possible for this vendor job."
    )
    html = page(client, cast.approver, change)
    top = html.index('data-testid="nonstandard"')
    fields = html.index('data-testid="create-fields"')
    assert top < fields
    assert "runs more often than every 5 minutes" in html and "is critical without a heartbeat" in html
    assert "A heartbeat is not possible for this vendor job." in html[top:fields]
    set_part = html[fields : html.index("</table>", fields)]
    assert "Cron" in set_part or "cron" in set_part.lower()
    # Defaults are folded away, in words: {} and [] read "none", max active runs 0 is explained.
    defaults = html[html.index("left at the default") :]
    assert "0 (no limit on runs active at once)" in defaults
    assert "{}" not in defaults[: defaults.index("</details>")]
    assert "[]" not in defaults[: defaults.index("</details>")]
    assert ">none<" in defaults


def test_the_propose_form_teaches(client, cast):
    client.force_login(cast.author)
    html = client.get(reverse("change_new"), {"team": cast.payments.pk, "environment": cast.dev.pk}).content.decode()
    assert 'data-prefix="payments."' in html and "must start with <code>payments.</code>" in html
    assert 'data-governed="0"' in html and 'data-governed="1"' in html
    # Dev needs no approval: the button creates.
    assert re.search(r'data-testid="submit-proposal"[^>]*>Create</button>', html)
    assert 'list="timezones"' in html and '<option value="Europe/Berlin">' in html
    assert 'data-testid="cron-preview"' in html and "/api/v1/schedule-preview/" in html
    html = client.get(reverse("change_new"), {"environment": cast.prod.pk}).content.decode()
    assert re.search(r'data-testid="submit-proposal"[^>]*>Submit for review</button>', html)


def test_propose_errors_are_summarised_and_linked_to_their_fields(client, cast):
    client.force_login(cast.author)
    before = counts()
    response = client.post(
        reverse("change_new"),
        {"team": cast.payments.pk, "environment": cast.prod.pk, "name": "", "cron": "* * * * *", "command": ""},
    )
    assert response.status_code == 400
    html = response.content.decode()
    summary = html[html.index('data-testid="error-summary"') : html.index("</ul>", html.index("error-summary"))]
    assert '<a href="#id_name">' in summary and '<a href="#id_command">' in summary
    assert 'aria-invalid="true"' in html
    assert re.search(r'id="id_name"[^>]*aria-describedby="id_name_helptext id_name_error"', html) or re.search(
        r'aria-describedby="id_name_helptext id_name_error"[^>]*id="id_name"', html
    )
    assert 'id="id_name_error"' in html
    assert counts() == before


def test_the_hints_say_non_standard_as_soon_as_the_cron_does(client, cast):
    client.force_login(cast.author)
    url = reverse("change_hints")
    every_minute = client.get(url, {"cron": "* * * * *", "timezone": "UTC", "timeout_seconds": "60"}).json()
    assert any("more often than every 5 minutes" in r for r in every_minute["nonstandard"])
    nightly = client.get(url, {"cron": "30 2 * * *", "timezone": "UTC", "timeout_seconds": "60"}).json()
    assert nightly == {"nonstandard": []}
    no_timeout = client.get(url, {"cron": "30 2 * * *", "timezone": "UTC", "timeout_seconds": "0"}).json()
    assert no_timeout["nonstandard"] == ["has no timeout"]
    broken = client.get(url, {"cron": "61 * * * *", "timezone": "UTC"}).json()
    assert broken == {"nonstandard": []}  # the cron's own error is the preview's to show


def test_hints_ignore_a_job_of_another_tenant(client, cast):
    job = cast.make_job(cast.globex_prod, cron="* * * * *", rationale="every minute by design")
    client.force_login(cast.author)
    hints = client.get(reverse("change_hints"), {"job": job.pk, "timezone": "UTC", "cron": "30 2 * * *"}).json()
    # The other tenant's job fills nothing in (its heartbeat, concurrency): only what was typed counts.
    assert hints == {"nonstandard": []}


def test_an_approval_then_a_rejection_leave_both_reviews_in_history(client, cast):
    change = approve_change(propose_prod(cast), actor=cast.approver)
    reject_change(change, actor=cast.approver2, reason="Not this week.")
    html = page(client, cast.author, change)
    assert html.count('rv-approve">Approved</span>') == 1 and html.count('rv-reject">Rejected</span>') == 1
    assert Review.objects.count() == 2
