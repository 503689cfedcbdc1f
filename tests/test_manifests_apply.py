"""Plan, apply and export of manifests against live jobs and change control."""

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from approvals.models import ChangeRequest, ChangeStatus, Review
from approvals.services import approve_change
from jobs.models import Job, JobStatus, Run
from manifests.export import export_tenant
from manifests.loader import read_text, read_texts
from manifests.plan import apply_plan, make_plan

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = [(str(p.relative_to(ROOT)), p.read_text()) for p in sorted((ROOT / "examples").rglob("*.yaml"))]

RECONCILE = """\
apiVersion: governor/v1
kind: Jobs
tenant: acme
team: payments
jobs:
  - name: payments.ledger.reconcile
    environments: [dev, prod]
    description: Reconcile the ledger.
    command: [/bin/echo, reconcile]
    cron: "{cron}"
    timezone: Europe/Berlin
    timeout_seconds: 60
"""


def manifest(cron="*/5 * * * *"):
    return read_text(RECONCILE.format(cron=cron), "payments.yaml")


def apply(mset, actor, **options):
    prune = options.pop("prune", False)
    plan = make_plan(mset, actor=actor, prune=prune, for_apply=True)
    assert not plan.problems, [str(p) for p in plan.problems]
    return apply_plan(plan, actor=actor, **options)


def approve_all(cast):
    for change in ChangeRequest.objects.filter(status=ChangeStatus.SUBMITTED).order_by("pk"):
        for approver in (cast.approver, cast.approver2)[: change.required_approvals]:
            change = approve_change(change, actor=approver)
        assert change.status == ChangeStatus.APPLIED, change.failure_reason


def test_plan_lists_creates_with_their_fields_and_changes_nothing(cast):
    plan = make_plan(manifest(), actor=cast.viewer)
    assert not plan.problems
    assert [(c.action, c.environment.slug, c.name) for c in plan.changes] == [
        ("create", "dev", "payments.ledger.reconcile"),
        ("create", "prod", "payments.ledger.reconcile"),
    ]
    assert {"field": "cron", "before": None, "after": "*/5 * * * *"} in plan.changes[0].diff
    assert plan.summary() == "2 to create, 0 to change, 0 to delete, 0 unchanged, 0 awaiting review."
    assert not Job.objects.exists() and not ChangeRequest.objects.exists()


def test_apply_changes_dev_at_once_and_opens_a_change_request_for_prod(cast):
    done = apply(manifest(), cast.author, commit="abc123", pipeline_url="https://ci.example/p/7")
    assert [(c.environment.slug, c.change_request.status) for c in done] == [
        ("dev", ChangeStatus.APPLIED),
        ("prod", ChangeStatus.SUBMITTED),
    ]
    assert Job.objects.get().environment == cast.dev
    prod_request = done[1].change_request
    assert "Commit: abc123" in prod_request.justification
    assert "Pipeline: https://ci.example/p/7" in prod_request.justification
    assert prod_request.author == cast.author
    assert prod_request.proposed["cron"] == "*/5 * * * *"


def test_applying_the_same_manifests_twice_opens_nothing(cast):
    apply(manifest(), cast.author)
    requests = ChangeRequest.objects.count()
    plan = make_plan(manifest(), actor=cast.author, for_apply=True)
    assert [c.action for c in plan.changes] == ["unchanged", "pending"]
    assert apply_plan(plan, actor=cast.author) == []
    assert ChangeRequest.objects.count() == requests
    approve_all(cast)
    assert apply(manifest(), cast.author) == []
    assert ChangeRequest.objects.count() == requests
    assert {j.version for j in Job.objects.all()} == {1}


def test_a_changed_manifest_plans_an_update_with_a_diff(cast):
    apply(manifest(), cast.author)
    approve_all(cast)
    plan = make_plan(manifest(cron="0 * * * *"), actor=cast.author)
    assert [(c.action, c.environment.slug) for c in plan.changes] == [("update", "dev"), ("update", "prod")]
    assert plan.changes[0].diff == [{"field": "cron", "before": "*/5 * * * *", "after": "0 * * * *"}]


def test_reapplying_an_older_manifest_opens_the_request_that_restores_it(cast):
    apply(manifest(), cast.author)
    approve_all(cast)
    apply(manifest(cron="0 * * * *"), cast.author)
    approve_all(cast)
    prod = Job.objects.get(environment=cast.prod)
    assert prod.cron == "0 * * * *" and prod.version == 2
    done = apply(manifest(), cast.author, commit="old-sha")
    rollback = next(c.change_request for c in done if c.environment == cast.prod)
    assert rollback.status == ChangeStatus.SUBMITTED and rollback.action == "update"
    assert rollback.base_version == 2 and rollback.proposed["cron"] == "*/5 * * * *"
    approve_all(cast)
    prod.refresh_from_db()
    assert prod.cron == "*/5 * * * *" and prod.version == 3


def test_prune_deletes_live_jobs_of_covered_teams_missing_from_the_manifests(cast):
    cast.make_job(cast.dev, name="payments.old.job")
    cast.make_job(cast.dev, cast.data)
    assert [c.action for c in make_plan(manifest(), actor=cast.author).changes] == ["create", "create"]
    plan = make_plan(manifest(), actor=cast.author, prune=True)
    assert [(c.action, c.name) for c in plan.changes] == [
        ("create", "payments.ledger.reconcile"),
        ("create", "payments.ledger.reconcile"),
        ("delete", "payments.old.job"),
    ]
    apply(manifest(), cast.author, prune=True)
    assert Job.objects.get(name="payments.old.job").status == JobStatus.DELETED
    # Team data is not covered by these manifests, so its job stays.
    assert Job.objects.get(name="data.warehouse.load").status == JobStatus.ENABLED


def test_an_empty_jobs_list_with_prune_deletes_all_of_the_teams_jobs(cast):
    job = cast.make_job(cast.prod)
    empty = read_text("apiVersion: governor/v1\nkind: Jobs\ntenant: acme\nteam: payments\njobs: []\n", "p.yaml")
    done = apply(empty, cast.author, prune=True)
    assert [(c.action, c.change_request.status) for c in done] == [("delete", ChangeStatus.SUBMITTED)]
    assert apply(empty, cast.author, prune=True) == []
    approve_all(cast)
    job.refresh_from_db()
    assert job.status == JobStatus.DELETED


@pytest.mark.parametrize("who", ["viewer", "operator", "approver"])
def test_apply_without_the_author_role_is_refused_and_changes_nothing(cast, who):
    plan = make_plan(manifest(), actor=getattr(cast, who), for_apply=True)
    assert [str(p) for p in plan.problems] == [
        "payments.yaml:6:11: You need the author role for team 'payments' in environment 'dev' "
        "to create 'payments.ledger.reconcile'.",
        "payments.yaml:6:11: You need the author role for team 'payments' in environment 'prod' "
        "to create 'payments.ledger.reconcile'.",
    ]
    assert all(p.forbidden for p in plan.problems)
    assert not ChangeRequest.objects.exists()


def test_author_narrowed_to_dev_cannot_apply_prod(cast):
    from governance.actors import SYSTEM
    from governance.models import Role
    from governance.services import grant_role

    narrow = type(cast.author).objects.create_user("dev-author")
    grant_role(narrow, Role.AUTHOR, tenant=cast.acme, environment=cast.dev, actor=SYSTEM)
    plan = make_plan(manifest(), actor=narrow, for_apply=True)
    assert [p.message for p in plan.problems] == [
        "You may not view team 'payments' in environment 'prod'.",
    ]
    assert not ChangeRequest.objects.exists()


@pytest.mark.parametrize("who", ["globex_author", "outsider"])
def test_another_tenant_looks_missing(cast, who):
    plan = make_plan(manifest(), actor=getattr(cast, who), for_apply=True)
    assert [str(p) for p in plan.problems] == ["payments.yaml:3:9: Unknown tenant 'acme'."]


def test_invalid_manifests_apply_nothing_at_all(cast):
    text = RECONCILE.format(cron="*/5 * * * *") + "  - name: payments.ledger.bad\n    environments: [dev]\n"
    plan = make_plan(read_text(text, "payments.yaml"), actor=cast.author, for_apply=True)
    assert [str(p) for p in plan.problems] == [
        'payments.yaml:13:5: command: Must be a non-empty list of strings (argv), e.g. ["/bin/echo", "hello"].',
        "payments.yaml:13:5: cron: This field is required.",
    ]
    assert not ChangeRequest.objects.exists() and not Job.objects.exists()


def _wipe_jobs():
    Review.objects.all().delete()
    ChangeRequest.objects.all().delete()
    Run.objects.all().delete()
    Job.objects.all().delete()


def converge(mset, cast):
    """Apply and approve until nothing is left (dependents wait a round for their upstreams)."""
    for _ in range(3):
        if not apply(mset, cast.author):
            return
        approve_all(cast)
    raise AssertionError("the manifests did not converge")


def test_export_apply_on_an_empty_tenant_export_round_trips_byte_for_byte(cast):
    converge(read_texts(EXAMPLES), cast)
    first = export_tenant(cast.acme, actor=cast.viewer)
    assert "payments.ledger.nightly-reconcile" in first and "overrides:" in first
    assert "upstream: data.warehouse.load" in first and "transient_exit_codes: [75]" in first
    assert Job.objects.filter(name="data.warehouse.report", environment=cast.prod).exists()
    _wipe_jobs()
    converge(read_text(first, "export.yaml"), cast)
    assert export_tenant(cast.acme, actor=cast.viewer) == first
    # And the export, applied to the tenant it came from, changes nothing.
    assert apply(read_text(first, "export.yaml"), cast.author) == []


def test_export_shows_only_what_the_reader_may_see(cast):
    cast.make_job(cast.dev)
    cast.make_job(cast.dev, cast.data)
    from governance.actors import SYSTEM
    from governance.models import Role
    from governance.services import grant_role

    data_viewer = type(cast.author).objects.create_user("data-viewer")
    grant_role(data_viewer, Role.VIEWER, tenant=cast.acme, team=cast.data, actor=SYSTEM)
    text = export_tenant(cast.acme, actor=data_viewer)
    assert "data.warehouse.load" in text and "payments.ledger.reconcile" not in text


def test_plan_and_apply_commands(cast, tmp_path):
    path = tmp_path / "payments.yaml"
    path.write_text(RECONCILE.format(cron="*/5 * * * *"))
    out = io.StringIO()
    call_command("plan", str(path), stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "+ create payments.ledger.reconcile in acme/dev"
    assert '    cron: "*/5 * * * *"' in lines
    assert "+ create payments.ledger.reconcile in acme/prod (governed: opens a change request)" in lines
    assert lines[-1] == "Plan: 2 to create, 0 to change, 0 to delete, 0 unchanged, 0 awaiting review."
    out = io.StringIO()
    call_command("apply", str(path), "--actor", "acme-author", "--commit", "abc", stdout=out)
    lines = out.getvalue().splitlines()
    prod_request = ChangeRequest.objects.get(environment=cast.prod)
    dev_request = ChangeRequest.objects.get(environment=cast.dev)
    assert lines[0] == f"created payments.ledger.reconcile in acme/dev (CR-{dev_request.pk}, now v1)"
    assert lines[1].startswith(f"opened CR-{prod_request.pk} to create payments.ledger.reconcile in acme/prod: ")
    assert lines[1].endswith(f"/{prod_request.pk}/")
    out = io.StringIO()
    call_command("apply", str(path), "--actor", "acme-author", "--json", stdout=out)
    result = json.loads(out.getvalue())
    assert result["ok"] and result["applied"] == []
    assert result["summary"] == {"create": 0, "update": 0, "delete": 0, "unchanged": 1, "pending": 1}


def test_apply_command_refuses_a_viewer_with_exit_1(cast, tmp_path):
    path = tmp_path / "payments.yaml"
    path.write_text(RECONCILE.format(cron="*/5 * * * *"))
    out = io.StringIO()
    with pytest.raises(SystemExit) as info:
        call_command("apply", str(path), "--actor", "acme-viewer", stdout=out)
    assert info.value.code == 1
    assert out.getvalue().splitlines()[-1] == "Nothing applied: 2 error(s)."
    assert not ChangeRequest.objects.exists()


def test_export_command_writes_the_stream(cast):
    cast.make_job(cast.dev)
    out = io.StringIO()
    call_command("export_manifests", "--tenant", "acme", stdout=out)
    assert out.getvalue() == export_tenant(cast.acme, actor=cast.superuser)
    assert out.getvalue().startswith("apiVersion: governor/v1\nkind: Tenant\ntenant: acme\n")


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def _body(cron="*/5 * * * *", **extra):
    return {"files": [{"path": "payments.yaml", "content": RECONCILE.format(cron=cron)}], **extra}


def test_api_plan_returns_changes_and_diffs(cast):
    response = api(cast.viewer).post("/api/v1/manifests/plan/", _body(), format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["ok"] and body["summary"]["create"] == 2
    assert body["changes"][0]["action"] == "create" and body["changes"][0]["source"] == "payments.yaml:6:11"


def test_api_plan_accepts_a_raw_yaml_stream(cast):
    response = api(cast.viewer).generic(
        "POST", "/api/v1/manifests/plan/", RECONCILE.format(cron="61 * * * *"), content_type="application/yaml"
    )
    assert response.status_code == 400
    assert response.json()["errors"][0] == {
        "file": "request.yaml",
        "line": 10,
        "column": 11,
        "message": "cron: Invalid cron expression '61 * * * *': Bad minute '61': the minute takes 0-59, e.g. 30, 0-29, */15 or 0,30.",
    }


def test_api_apply_opens_change_requests_with_commit_and_pipeline_and_urls(cast):
    body = _body(commit="deadbeef", pipeline_url="https://ci.example/42")
    response = api(cast.author).post("/api/v1/manifests/apply/", body, format="json")
    assert response.status_code == 200, response.json()
    applied = response.json()["applied"]
    assert [a["change_request"]["status"] for a in applied] == ["applied", "submitted"]
    assert applied[1]["change_request"]["url"].startswith("http://testserver/")
    assert "Commit: deadbeef" in ChangeRequest.objects.get(environment=cast.prod).justification
    again = api(cast.author).post("/api/v1/manifests/apply/", body, format="json")
    assert again.status_code == 200 and again.json()["applied"] == []
    assert ChangeRequest.objects.count() == 2


def test_api_apply_without_the_author_role_is_403(cast):
    response = api(cast.operator).post("/api/v1/manifests/apply/", _body(), format="json")
    assert response.status_code == 403
    assert not ChangeRequest.objects.exists()


def test_api_apply_for_another_tenant_is_400_unknown_tenant(cast):
    response = api(cast.globex_author).post("/api/v1/manifests/apply/", _body(), format="json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"] == "Unknown tenant 'acme'."


def test_api_requires_authentication(cast):
    assert APIClient().post("/api/v1/manifests/plan/", _body(), format="json").status_code in (401, 403)
    assert APIClient().get("/api/v1/manifests/export/?tenant=acme").status_code in (401, 403)


def test_api_export_returns_yaml_and_hides_other_tenants(cast):
    cast.make_job(cast.dev)
    response = api(cast.viewer).get("/api/v1/manifests/export/?tenant=acme")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/yaml")
    assert response.content.decode() == export_tenant(cast.acme, actor=cast.viewer)
    assert api(cast.globex_admin).get("/api/v1/manifests/export/?tenant=acme").status_code == 404
    assert api(cast.viewer).get("/api/v1/manifests/export/?tenant=nope").status_code == 404


WORKFLOW = [
    (str(p.relative_to(ROOT)), p.read_text())
    for p in sorted((ROOT / "tests" / "manifests" / "valid" / "workflow").glob("*.yaml"))
]


def test_a_workflow_across_files_applies_upstream_first_and_dependents_wait_for_review(cast):
    done = apply(read_texts(WORKFLOW), cast.author)
    summary = [(c.environment.slug, c.name, c.change_request and c.change_request.status, c.waiting_for) for c in done]
    prod_extract = ChangeRequest.objects.get(environment=cast.prod)
    assert summary == [
        ("dev", "data.etl.extract", ChangeStatus.APPLIED, ""),
        ("dev", "data.etl.report", ChangeStatus.APPLIED, ""),
        ("prod", "data.etl.extract", ChangeStatus.SUBMITTED, ""),
        ("prod", "data.etl.report", None, f"data.etl.extract (CR-{prod_extract.pk})"),
    ]
    assert Job.objects.get(environment=cast.dev, name="data.etl.report").dependencies[0]["upstream"] == (
        "data.etl.extract"
    )
    # Applying again while the upstream awaits review still waits, and opens nothing new.
    again = apply(read_texts(WORKFLOW), cast.author)
    assert [(c.name, c.waiting_for) for c in again] == [("data.etl.report", f"data.etl.extract (CR-{prod_extract.pk})")]
    assert ChangeRequest.objects.count() == 3
    approve_all(cast)
    last = apply(read_texts(WORKFLOW), cast.author)
    assert [(c.name, c.change_request.status) for c in last] == [("data.etl.report", ChangeStatus.SUBMITTED)]
    approve_all(cast)
    assert apply(read_texts(WORKFLOW), cast.author) == []


def test_plan_reports_governed_by_the_approval_policy_for_the_jobs_criticality(cast):
    from approvals.models import ApprovalPolicy

    ApprovalPolicy.objects.create(tenant=cast.acme, environment=cast.dev, criticality="critical", required_approvals=1)
    critical = read_text(
        RECONCILE.format(cron="0 * * * *").replace(
            "timeout_seconds: 60", "criticality: critical\n    rationale: short runs"
        ),
        "p.yaml",
    )
    plan = make_plan(critical, actor=cast.author)
    assert [(c.environment.slug, c.required_approvals, c.governed) for c in plan.changes] == [
        ("dev", 1, True),
        ("prod", 2, True),
    ]
    assert [(c.environment.slug, c.governed) for c in make_plan(manifest(), actor=cast.author).changes] == [
        ("dev", False),
        ("prod", True),
    ]


def test_api_refuses_a_request_without_files_with_field_errors(cast):
    response = api(cast.author).post("/api/v1/manifests/apply/", {"files": [], "prune": "maybe"}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "files": {"non_field_errors": ["This list may not be empty."]},
        "prune": ["Must be a valid boolean."],
    }
    assert not ChangeRequest.objects.exists()


def test_plan_command_json_lists_changes_with_diffs(cast, tmp_path):
    cast.make_job(cast.dev, name="payments.ledger.reconcile", cron="*/5 * * * *")
    path = tmp_path / "payments.yaml"
    path.write_text(RECONCILE.format(cron="0 * * * *"))
    out = io.StringIO()
    call_command("plan", str(path), "--json", "--actor", "acme-viewer", stdout=out)
    result = json.loads(out.getvalue())
    assert result["ok"] and result["summary"]["update"] == 1 and result["summary"]["create"] == 1
    update = next(c for c in result["changes"] if c["action"] == "update")
    assert {"field": "cron", "before": "*/5 * * * *", "after": "0 * * * *"} in update["diff"]


def test_export_query_count_does_not_grow_with_jobs(cast, django_assert_max_num_queries):
    cast.make_job(cast.dev)
    with django_assert_max_num_queries(8) as few:
        export_tenant(cast.acme, actor=cast.viewer)
    for i in range(5):
        cast.make_job(cast.dev, name=f"payments.batch.job-{i}")
        cast.make_job(cast.prod, name=f"payments.batch.job-{i}")
    viewer = type(cast.viewer).objects.get(pk=cast.viewer.pk)
    with django_assert_max_num_queries(len(few.captured_queries)):
        text = export_tenant(cast.acme, actor=viewer)
    assert text.count("payments.batch.job-") == 5
