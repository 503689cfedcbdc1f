"""Insights review pages: right-sizing, zombie jobs, overhead and efficiency (pages, CSV, API) over a
few hundred jobs with a month of history (tests/insights_review_world.py): each finds exactly the
planted cases, only in the caller's tenant and part of it; bad parameters answer 400 naming them."""

from __future__ import annotations

import csv
import io
import re
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client
from django.urls import reverse

from conftest import Cast
from governance.actors import SYSTEM
from governance.models import Role
from governance.services import grant_role
from tests.insights_review_world import (
    ACME_OVERSIZED,
    ACME_ZOMBIES,
    GLOBEX_OVERSIZED,
    GLOBEX_ZOMBIES,
    LAG_SECONDS,
    build,
)

PAGES = {"rightsizing": "insights_rightsizing", "zombies": "insights_zombies", "overhead": "insights_overhead"}
APIS = {
    "rightsizing": "api-insights-rightsizing",
    "zombies": "api-insights-zombies",
    "overhead": "api-insights-overhead",
}


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """Built once for the module inside a transaction rolled back at its end (tests only read)."""
    with django_db_blocker.unblock(), transaction.atomic():
        cast = Cast()
        built = build(cast)
        User = get_user_model()
        # Narrowed viewers: one to the prod environment, one to team data.
        cast.prod_viewer = User.objects.create_user("acme-prod-viewer")
        grant_role(cast.prod_viewer, Role.VIEWER, tenant=cast.acme, environment=cast.prod, actor=SYSTEM)
        cast.data_viewer = User.objects.create_user("acme-data-viewer")
        grant_role(cast.data_viewer, Role.VIEWER, tenant=cast.acme, team=cast.data, actor=SYSTEM)
        yield SimpleNamespace(cast=cast, built=built)
        transaction.set_rollback(True)


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def recommendations(payload: dict) -> set[tuple]:
    return {
        (j["job"], r["resource"], r["current"], r["recommended"]) for j in payload["jobs"] for r in j["recommendations"]
    }


def findings(payload: dict) -> set[tuple]:
    return {(f["job"], f["kind"]) for f in payload["findings"]}


# --- each page finds exactly the planted cases ------------------------------------------------------


def test_rightsizing_page_lists_exactly_the_oversized_limits_with_their_evidence(world, db):
    response = client_for(world.cast.viewer).get(reverse("insights_rightsizing"))
    assert response.status_code == 200
    found = {(s.job.name, r.resource, r.current, r.recommended) for s, r in response.context["result"].recommendations}
    assert found == ACME_OVERSIZED
    html = response.content.decode()
    assert "memory limit 4096 → 512 MB" in html
    assert "timeout 3600 → 300 s" in html
    # The evidence: the figures the recommendation comes from, and how many runs.
    assert re.search(r"max RSS (28\d|29\d|300) MB \(p95 \d+ MB\) over 30 runs since", html)
    assert "ops.plant" not in html
    # The chart: an SVG with a title and a description naming every bar, and its numbers as text.
    assert 'role="img"' in html and "<desc" in html and "4096 → 512 MB" in html


def test_rightsizing_api_answers_the_same_per_tenant(world, db):
    acme = client_for(world.cast.viewer).get(reverse("api-insights-rightsizing"))
    assert acme.status_code == 200
    assert recommendations(acme.json()) == ACME_OVERSIZED
    assert acme.json()["jobs_examined"] == len([j for j in world.built.jobs if not j.startswith("ops.")])
    oversized = next(j for j in acme.json()["jobs"] if j["job"] == "payments.plant.oversized")
    assert oversized["samples"] == 30 and 280 <= oversized["max_rss_mb"]["max"] <= 300
    assert oversized["recommendations"][0]["direction"] == "lower"
    globex = client_for(world.cast.globex_admin).get(reverse("api-insights-rightsizing"))
    assert recommendations(globex.json()) == GLOBEX_OVERSIZED
    root = client_for(world.cast.superuser).get(reverse("api-insights-rightsizing"))
    assert recommendations(root.json()) == ACME_OVERSIZED | GLOBEX_OVERSIZED
    nobody = client_for(world.cast.outsider).get(reverse("api-insights-rightsizing"))
    assert nobody.status_code == 200 and nobody.json()["jobs"] == [] and nobody.json()["jobs_examined"] == 0


def test_a_stricter_threshold_or_more_samples_than_runs_recommends_nothing(world, db):
    client = client_for(world.cast.viewer)
    strict = client.get(reverse("api-insights-rightsizing"), {"threshold": "20"}).json()
    assert recommendations(strict) == set()
    loose = client.get(reverse("api-insights-rightsizing"), {"threshold": "10"}).json()
    assert recommendations(loose) == {("payments.plant.slow-timeout", "timeout_seconds", 3600, 300)}
    few = client.get(reverse("api-insights-rightsizing"), {"min_samples": "31"}).json()
    assert recommendations(few) == set() and few["jobs_with_too_few_runs"] == few["jobs_examined"]


def test_zombie_page_lists_exactly_the_planted_zombies_with_an_action_each(world, db):
    response = client_for(world.cast.viewer).get(reverse("insights_zombies"))
    assert response.status_code == 200
    result = response.context["result"]
    assert {(f.job.name, f.kind.slug) for f in result.findings} == ACME_ZOMBIES
    actions = {f.job.name: (f.kind.action, f.url) for f in result.findings}
    never = world.built.job("payments.plant.never")
    assert actions["payments.plant.never"] == ("sunset", reverse("change_delete", kwargs={"pk": never.pk}))
    assert actions["payments.plant.broken"][0] == "pause"
    assert actions["legacy.plant.orphan"][0] == "reassign"
    html = response.content.decode()
    for name, _kind in ACME_ZOMBIES:
        assert f'data-job="{name}"' in html
    assert "Propose deletion" in html and "Reassign" in html and "Pause" in html


def test_zombie_api_answers_the_same_per_tenant(world, db):
    acme = client_for(world.cast.viewer).get(reverse("api-insights-zombies")).json()
    assert findings(acme) == ACME_ZOMBIES
    assert acme["counts"]["always_failing"] == 1 and acme["counts"]["no_recent_success"] == 0
    globex = client_for(world.cast.globex_admin).get(reverse("api-insights-zombies")).json()
    assert findings(globex) == GLOBEX_ZOMBIES
    root = client_for(world.cast.superuser).get(reverse("api-insights-zombies")).json()
    assert findings(root) == ACME_ZOMBIES | GLOBEX_ZOMBIES


def test_fewer_periods_or_a_short_window_change_what_counts(world, db):
    client = client_for(world.cast.viewer)
    # The broken job has 30 runs in the window: it fails its last 30 periods, but 31 ask for more runs
    # than it has, which proves nothing.
    assert ("payments.plant.broken", "always_failing") in findings(
        client.get(reverse("api-insights-zombies"), {"periods": "30"}).json()
    )
    assert ("payments.plant.broken", "always_failing") not in findings(
        client.get(reverse("api-insights-zombies"), {"periods": "31"}).json()
    )


def test_overhead_page_shows_the_parts_the_lag_and_the_costliest_jobs(world, db):
    response = client_for(world.cast.viewer).get(reverse("insights_overhead"))
    assert response.status_code == 200
    result = response.context["result"]
    assert {item.environment.slug for item in result.environments} == {"dev", "staging", "prod"}
    queue = {item.environment.slug: [row["queue_wait_ms"]["p95"] for row in item.table] for item in result.environments}
    # Prod's runs waited three times as long in the queue (the history says so): the p95s show it.
    assert min(queue["prod"]) > max(queue["dev"])
    assert result.by_runtime[0]["job"].name == "payments.plant.hog"
    assert result.by_failure[0]["job"].name == "payments.plant.broken"
    assert result.by_failure[0]["failed"] == 60 and result.by_failure[0]["retries"] == 30
    assert result.lag_table and all(row["p95"] == pytest.approx(LAG_SECONDS, abs=0.01) for row in result.lag_table)
    html = response.content.decode()
    assert html.count("<svg") >= 1 + 4 * 3 + 2
    assert "Queue wait" in html and "Scheduler lag" in html and "ops.plant" not in html


def test_overhead_api_answers_the_same_per_tenant(world, db):
    acme = client_for(world.cast.viewer).get(reverse("api-insights-overhead"), {"top": "3"}).json()
    assert [r["job"] for r in acme["top_by_runtime"]][0] == "payments.plant.hog"
    assert len(acme["top_by_runtime"]) == 3
    assert acme["top_by_failure_cost"][0]["job"] == "payments.plant.broken"
    assert {o["environment"] for o in acme["overhead"]} == {"dev", "staging", "prod"}
    day = acme["overhead"][0]["days"][0]
    assert set(day) == {"day", "queue_wait_ms", "startup_ms", "execution_ms", "recording_ms"}
    assert acme["scheduler_lag"]["days"][0]["p50"] == pytest.approx(LAG_SECONDS, abs=0.01)
    globex = client_for(world.cast.globex_admin).get(reverse("api-insights-overhead")).json()
    assert {r["job"] for r in globex["top_by_runtime"]} <= {
        "ops.plant.oversized",
        "ops.plant.broken",
        "ops.fleet.steady",
    }
    assert globex["top_by_failure_cost"][0]["job"] == "ops.plant.broken"
    assert {o["tenant"] for o in globex["overhead"]} == {"globex"}


@pytest.mark.parametrize("page", list(PAGES))
def test_each_page_exports_its_rows_as_csv(world, db, page):
    response = client_for(world.cast.viewer).get(reverse(PAGES[page]), {"format": "csv", "window": "30"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    if page == "rightsizing":
        assert {(r["job"], r["resource"], int(r["current"]), int(r["recommended"])) for r in rows} == ACME_OVERSIZED
    elif page == "zombies":
        assert {(r["job"], r["kind"]) for r in rows} == ACME_ZOMBIES
    else:
        top = [r for r in rows if r["section"] == "top_runtime"]
        assert top[0]["job"] == "payments.plant.hog"
        assert {r["environment"] for r in rows if r["section"] == "overhead"} == {"dev", "staging", "prod"}
        assert {r["tenant"] for r in rows if r["tenant"]} == {"acme"}


# --- narrowed roles ----------------------------------------------------------------------------------


def test_a_viewer_narrowed_to_prod_sees_only_prods_part(world, db):
    client = client_for(world.cast.prod_viewer)
    assert recommendations(client.get(reverse("api-insights-rightsizing")).json()) == {
        ("payments.plant.oversized", "memory_mb", 4096, 512)
    }
    assert findings(client.get(reverse("api-insights-zombies")).json()) == {
        ("payments.plant.never", "no_runs"),
        ("payments.plant.silent", "never_pinged"),
    }
    overhead = client.get(reverse("api-insights-overhead")).json()
    assert {o["environment"] for o in overhead["overhead"]} == {"prod"}
    assert overhead["top_by_failure_cost"] == [] or all(
        world.built.job(r["job"]).environment_id == world.cast.prod.pk for r in overhead["top_by_failure_cost"]
    )


def test_a_viewer_narrowed_to_team_data_sees_none_of_the_other_teams_cases(world, db):
    client = client_for(world.cast.data_viewer)
    assert recommendations(client.get(reverse("api-insights-rightsizing")).json()) == set()
    assert findings(client.get(reverse("api-insights-zombies")).json()) == set()
    overhead = client.get(reverse("api-insights-overhead")).json()
    assert all(r["job"].startswith("data.") for r in overhead["top_by_runtime"])
    page = client.get(reverse("insights_zombies")).content.decode()
    assert "payments.plant" not in page and "legacy.plant" not in page


# --- bad input ---------------------------------------------------------------------------------------

BAD = [
    ("rightsizing", "window", "abc"),
    ("rightsizing", "window", "0"),
    ("rightsizing", "window", "367"),
    ("rightsizing", "min_samples", "0"),
    ("rightsizing", "threshold", "nan"),
    ("rightsizing", "threshold", "1.0"),
    ("rightsizing", "threshold", "two"),
    ("zombies", "periods", "-1"),
    ("zombies", "periods", "5.5"),
    ("zombies", "window", "1e9"),
    ("overhead", "top", "101"),
    ("overhead", "window", ""),
]


@pytest.mark.parametrize(("page", "name", "value"), BAD)
def test_a_bad_parameter_answers_400_naming_it(world, db, page, name, value):
    client = client_for(world.cast.viewer)
    api = client.get(reverse(APIS[page]), {name: value})
    if value == "":
        # Empty means the default, not an error.
        assert api.status_code == 200
        return
    assert api.status_code == 400, api.content
    assert list(api.json()) == [name] and api.json()[name][0].startswith("Must be")
    ui = client.get(reverse(PAGES[page]), {name: value})
    assert ui.status_code == 400
    html = ui.content.decode()
    assert f"<strong>{name}</strong>" in html and "Nothing was computed." in html
    assert 'aria-invalid="true"' in html


def test_an_unknown_export_format_answers_400_naming_it(world, db):
    response = client_for(world.cast.viewer).get(reverse("insights_zombies"), {"format": "xlsx"})
    assert response.status_code == 400
    assert "<strong>format</strong>" in response.content.decode()


def test_the_pages_ask_for_a_sign_in(world, db):
    for name in (*PAGES.values(),):
        response = Client().get(reverse(name))
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    for name in APIS.values():
        assert Client().get(reverse(name)).status_code in (401, 403)


# --- the cached pages --------------------------------------------------------------------------------


def run_queries(client: Client, path: str) -> list[str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return [q["sql"] for q in captured if "jobs_run" in q["sql"]]


@pytest.mark.parametrize("page", sorted(PAGES))
def test_a_tenant_wide_reader_reads_the_cached_page_until_a_job_changes(world, db, page):
    from django.utils import timezone

    from insights.models import InsightCache
    from jobs.models import Job

    client = client_for(world.cast.viewer)
    path = reverse(PAGES[page])
    assert run_queries(client, path), "the first reader works the page out from the run history"
    entry = InsightCache.objects.get(tenant=world.cast.acme, kind=f"{page}_page")
    assert run_queries(client_for(world.cast.admin if page != "rightsizing" else world.cast.viewer), path) == []
    # Other parameters, or a job changed since: worked out again.
    assert run_queries(client, path + "?window=20")
    assert run_queries(client, path + "?window=20") == []
    Job.objects.filter(tenant=world.cast.acme).update(updated_at=timezone.now())
    assert run_queries(client, path + "?window=20")
    assert InsightCache.objects.get(pk=entry.pk).computed_at > entry.computed_at


@pytest.mark.parametrize("page", sorted(PAGES))
def test_a_narrowed_reader_never_gets_the_tenant_wide_cached_page(world, db, page):
    path = reverse(PAGES[page])
    wide = client_for(world.cast.viewer).get(path).content.decode()
    assert "payments.plant" in wide
    narrowed = client_for(world.cast.data_viewer)
    assert run_queries(narrowed, path), "a narrowed reader's page is worked out for them"
    assert "payments.plant" not in narrowed.get(path).content.decode()


def test_the_cached_rightsizing_page_carries_each_readers_own_csrf_token_and_rights(world, db):
    from approvals.models import ChangeRequest

    path = reverse("insights_rightsizing")
    viewer_page = client_for(world.cast.viewer).get(path).content.decode()
    assert "Propose the new limits" not in viewer_page and "An author of this team proposes." in viewer_page
    for index, user in enumerate((world.cast.author, world.cast.admin)):
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        html = client.get(path).content.decode()
        forms = re.findall(r'<form method="post" action="(/insights/rightsizing/\d+/propose/)".*?</form>', html, re.S)
        form = re.findall(r'<form method="post" action="/insights/rightsizing/\d+/propose/".*?</form>', html, re.S)[
            index
        ]
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]+)"', form))
        assert fields["csrfmiddlewaretoken"] != "" and not fields["csrfmiddlewaretoken"].startswith("csrf-")
        response = client.post(forms[index], fields)
        assert response.status_code == 302, re.findall(r'propose-error">([^<]+)', response.content.decode())
    assert ChangeRequest.objects.filter(author__in=[world.cast.author, world.cast.admin]).count() == 2
