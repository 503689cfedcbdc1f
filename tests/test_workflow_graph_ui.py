"""The job page draws the job's dependency graph as inline SVG; the run page offers rerun/settle forms."""

import re

from django.contrib.auth import get_user_model
from django.utils import timezone

from approvals.services import propose_change
from conftest import PASSWORD
from governance.actors import SYSTEM
from governance.models import Role
from governance.services import grant_role
from jobs.models import Run, RunStatus

A, B, C, D = "payments.wf.extract", "payments.wf.transform", "payments.wf.load", "payments.wf.report"


def job(cast, name, deps=None, team=None):
    return cast.make_job(cast.dev, team, name=name, command=["/bin/true"], dependencies=deps or [])


def page(client, user, job_):
    client.login(username=user.username, password=PASSWORD)
    response = client.get(f"/jobs/{job_.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def graph_of(html):
    match = re.search(r'data-testid="dependency-graph">(.*?)</section>', html, re.S)
    assert match, "the job page has a dependency section"
    return match.group(1)


def test_the_graph_shows_upstreams_downstreams_with_conditions_and_highlights_the_job(client, cast):
    a = job(cast, A)
    b = job(cast, B, [{"upstream": A, "condition": "success"}])
    c = job(cast, C, [{"upstream": B, "condition": "exit_code", "exit_codes": [0, 3]}])
    d = job(cast, D, [{"upstream": C, "condition": "always"}])
    unrelated = job(cast, "payments.wf.unrelated")
    graph = graph_of(page(client, cast.viewer, b))
    assert "<svg" in graph
    for other in (a, c, d):
        assert f'href="/jobs/{other.pk}/"' in graph
    assert unrelated.name not in graph
    assert re.search(rf'href="/jobs/{b.pk}/" class="node node-current" aria-current="page"', graph)
    assert 'class="node node-upstream"' in graph and 'class="node node-downstream"' in graph
    assert ">success</text>" in graph and ">exit ∈ {0, 3}</text>" in graph and ">always</text>" in graph
    assert f'data-upstream="{A}" data-downstream="{B}"' in graph
    assert "<script" not in graph


def test_the_graph_reaches_a_job_without_dependencies_two_steps_upstream(client, cast):
    """The page reads the jobs that have dependencies and those its own edges name; a root further up
    (no dependencies of its own, named only by an upstream's edge) is still drawn, linked."""
    a = job(cast, A)
    b = job(cast, B, [{"upstream": A}])
    c = job(cast, C, [{"upstream": B}])
    graph = graph_of(page(client, cast.viewer, c))
    assert f'href="/jobs/{a.pk}/"' in graph and f'href="/jobs/{b.pk}/"' in graph
    assert f'data-upstream="{A}" data-downstream="{B}"' in graph
    assert f'data-upstream="{B}" data-downstream="{C}"' in graph


def test_a_job_without_dependencies_shows_an_empty_state(client, cast):
    lone = job(cast, "payments.wf.alone")
    graph = graph_of(page(client, cast.viewer, lone))
    assert "<svg" not in graph
    assert "no dependencies" in graph


def test_the_graph_only_shows_jobs_the_user_may_see(client, cast):
    hidden = job(cast, "data.wf.hidden", team=cast.data)
    visible = job(cast, A, [{"upstream": hidden.name}])
    downstream = job(cast, B, [{"upstream": A}])
    payments_only = get_user_model().objects.create_user("payments-viewer", password=PASSWORD)
    grant_role(payments_only, Role.VIEWER, tenant=cast.acme, team=cast.payments, actor=SYSTEM)
    graph = graph_of(page(client, payments_only, visible))
    assert hidden.name not in graph and f"/jobs/{hidden.pk}/" not in graph
    assert f'href="/jobs/{downstream.pk}/"' in graph
    # A tenant-wide viewer sees the upstream from the other team.
    client.logout()
    assert hidden.name in graph_of(page(client, cast.viewer, visible))


def test_the_job_page_query_count_does_not_grow_with_edges(client, cast, django_assert_max_num_queries):
    centre = job(cast, "payments.wf.centre")
    client.login(username=cast.viewer.username, password=PASSWORD)
    client.get(f"/jobs/{centre.pk}/")  # warm sessions and caches
    with django_assert_max_num_queries(40) as few:
        client.get(f"/jobs/{centre.pk}/")
    baseline = len(few.captured_queries)
    upstreams = [job(cast, f"payments.wf.up{i}").name for i in range(4)]
    for i in range(4):
        job(cast, f"payments.wf.down{i}", [{"upstream": "payments.wf.centre"}])
    # The centre job gains upstream edges through a change, like any definition change.
    propose_change(
        actor=cast.author,
        job=centre,
        action="update",
        definition={**centre.definition(), "dependencies": [{"upstream": n} for n in upstreams]},
        justification="fan in",
    )
    centre.refresh_from_db()
    assert len(centre.dependencies) == 4
    with django_assert_max_num_queries(baseline):
        html = client.get(f"/jobs/{centre.pk}/").content.decode()
    assert html.count('class="node node-') == 9


def failed_run_of(cast):
    failing = job(cast, "payments.wf.flaky")
    return Run.objects.create(
        job=failing,
        tenant_id=failing.tenant_id,
        scheduled_for=timezone.now(),
        status=RunStatus.FAILED,
        job_version=failing.version,
        definition=failing.definition(),
        exit_code=1,
        finished_at=timezone.now(),
    )


def test_an_operator_reruns_and_settles_a_run_from_its_page_with_a_reason(client, cast):
    run = failed_run_of(cast)
    html = page_of_run(client, cast.operator, run)
    assert 'data-testid="run-actions"' in html and "Mark succeeded" in html
    refused = client.post(f"/runs/{run.pk}/mark-succeeded/", {"reason": " "})
    assert refused.status_code == 400 and "Give a reason" in refused.content.decode()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    done = client.post(f"/runs/{run.pk}/mark-succeeded/", {"reason": "fixed by hand INC-9"})
    assert done.status_code == 302
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and "INC-9" in run.reason
    assert client.post(f"/runs/{run.pk}/rerun/", {"reason": "once more"}).status_code == 302
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED


def test_a_viewer_gets_no_run_actions_and_is_refused(client, cast):
    run = failed_run_of(cast)
    html = page_of_run(client, cast.viewer, run)
    assert 'data-testid="run-actions"' not in html
    assert client.post(f"/runs/{run.pk}/rerun/", {"reason": "x"}).status_code == 403
    client.logout()
    client.login(username=cast.globex_admin.username, password=PASSWORD)
    assert client.post(f"/runs/{run.pk}/rerun/", {"reason": "x"}).status_code == 404
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED


def page_of_run(client, user, run):
    client.login(username=user.username, password=PASSWORD)
    response = client.get(f"/runs/{run.pk}/")
    assert response.status_code == 200
    return response.content.decode()
