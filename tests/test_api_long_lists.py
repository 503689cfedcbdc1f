"""The API's long lists (runs, audit events; issues 17 and 20): a count that stops at the cap,
numbered pages up to the cap, keyset pages (``?before=``/``?after=``) beyond, and the links between them.

The cap and the page size are made small here (``paging.CAP``, ``LongListPagination.page_size``), so
a few hundred rows cross every boundary: numbered pages, the last numbered page, keyset pages."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from governance import audit, paging
from governance.actors import SYSTEM
from governance.models import AuditAction, AuditEvent, Role
from governance.paging import LongListPagination, cursor_of
from governance.services import grant_role
from jobs.models import Job, Run
from tests.api_support import client_for

CAP = 30
PER_PAGE = 10
RUNS = "/api/v1/runs/"
EVENTS = "/api/v1/audit-events/"


@pytest.fixture
def small_pages(monkeypatch):
    """Pages of 10 rows and a count capped at 30: three numbered pages, then keyset pages."""
    monkeypatch.setattr(paging, "CAP", CAP)
    monkeypatch.setattr(LongListPagination, "page_size", PER_PAGE)


def team_jobs(cast, count: int) -> list[Job]:
    """``count`` jobs of acme in dev, of teams payments and data in turn, written straight to the table."""
    jobs = list(Job.objects.filter(tenant=cast.acme, name__contains=".bulk.").order_by("pk"))
    for k in range(len(jobs), count):
        team = [cast.payments, cast.data][k % 2]
        name = f"{team.slug}.bulk.job-{k}"
        jobs.append(Job.objects.create(tenant=cast.acme, team=team, environment=cast.dev, **cast.definition(name=name)))
    return jobs


def plant_runs(cast, count: int, *, same_time: int = 7) -> None:
    """``count`` runs, ``same_time`` of them (of as many jobs, of teams payments and data in turn) at each
    scheduled instant (ties across page boundaries), every third one failed."""
    jobs = team_jobs(cast, same_time)
    oldest = Run.objects.order_by("scheduled_for").values_list("scheduled_for", flat=True).first()
    base = (oldest or timezone.now()).replace(microsecond=0) - timedelta(minutes=1)
    Run.objects.bulk_create(
        Run(
            job=jobs[i % same_time],
            tenant=cast.acme,
            scheduled_for=base - timedelta(minutes=i // same_time),
            status="failed" if i % 3 == 0 else "succeeded",
            job_version=1,
            definition=jobs[i % same_time].definition(),
        )
        for i in range(count)
    )


def plant_events(cast, count: int) -> None:
    """``count`` events of team payments, team data and the tenant in turn; every fifth one a
    pause, the others triggers. Groups of four share their instant (ties)."""
    teams = [cast.payments.pk, cast.data.pk, None]
    for i in range(count):
        action = AuditAction.JOB_PAUSED if i % 5 == 0 else AuditAction.RUN_TRIGGERED
        audit.record(action, actor=cast.operator, tenant=cast.acme, team_id=teams[i % 3], data={"i": i})
    base = timezone.now().replace(microsecond=0)
    for i, pk in enumerate(AuditEvent.objects.filter(tenant=cast.acme).order_by("pk").values_list("pk", flat=True)):
        AuditEvent.objects.filter(pk=pk).update(created_at=base - timedelta(seconds=(10_000 - i) // 4))


def walk(client, url: str) -> list[dict]:
    """Every page reached from ``url`` by following ``next`` (the response bodies, in order)."""
    pages: list[dict] = []
    next_url: str | None = url
    while next_url and len(pages) < 100:
        response = client.get(next_url)
        assert response.status_code == 200, response.content
        pages.append(response.json() | {"url": next_url})
        next_url = pages[-1]["next"]
    return pages


def ids(page: dict) -> list[int]:
    return [row["id"] for row in page["results"]]


def query(url: str | None) -> dict[str, list[str]]:
    assert url is not None
    return parse_qs(urlsplit(url).query)


def expected_runs(**filters) -> list[int]:
    return list(Run.objects.filter(**filters).order_by("-scheduled_for", "-id").values_list("pk", flat=True))


def expected_events(**filters) -> list[int]:
    """The events of acme (all the tenant admin sees) matching ``filters``, newest first."""
    return list(
        AuditEvent.objects.filter(tenant__slug="acme", **filters)
        .order_by("-created_at", "-id")
        .values_list("pk", flat=True)
    )


# --- walking the whole list ---------------------------------------------------------------------


@pytest.mark.parametrize("filtered", [False, True])
def test_following_next_visits_every_run_once_in_order(cast, small_pages, filtered):
    plant_runs(cast, 230)
    url, expected = (f"{RUNS}?status=failed", expected_runs(status="failed")) if filtered else (RUNS, expected_runs())
    assert len(expected) > CAP + PER_PAGE
    pages = walk(client_for(cast.admin), url)
    assert [pk for page in pages for pk in ids(page)] == expected
    # Three numbered pages, then positions; the filter rides along on every link.
    assert [query(page["next"]).get("page") for page in pages[:2]] == [["2"], ["3"]]
    assert all("before" in query(page["next"]) for page in pages[2:-1])
    assert pages[-1]["next"] is None
    if filtered:
        assert all(query(page["next"])["status"] == ["failed"] for page in pages[:-1])
    assert all(page["count"] == CAP and page["count_capped"] is True for page in pages)


def test_following_next_visits_every_audit_event_once_in_order(cast, small_pages):
    plant_events(cast, 130)
    client = client_for(cast.admin)
    everything = walk(client, EVENTS)
    assert [pk for page in everything for pk in ids(page)] == expected_events()
    triggers = walk(client, f"{EVENTS}?action=run.triggered")
    expected = expected_events(action=AuditAction.RUN_TRIGGERED)
    assert len(expected) > CAP + PER_PAGE
    assert [pk for page in triggers for pk in ids(page)] == expected
    assert "before" in query(triggers[2]["next"]) and query(triggers[2]["next"])["action"] == ["run.triggered"]


def test_runs_sharing_one_instant_are_neither_skipped_nor_repeated(cast, small_pages):
    plant_runs(cast, 75, same_time=75)
    pages = walk(client_for(cast.admin), RUNS)
    seen = [pk for page in pages for pk in ids(page)]
    assert seen == expected_runs() and len(set(seen)) == 75
    assert len(pages) == 8


def test_previous_from_a_keyset_page_is_the_page_before(cast, small_pages):
    plant_runs(cast, 95)
    client = client_for(cast.admin)
    pages = walk(client, f"{RUNS}?team=payments")
    assert len(pages) == 6 and all(query(page["next"])["team"] == ["payments"] for page in pages[:-1])
    for before, page in zip(pages[2:-1], pages[3:], strict=True):
        assert "after" in query(page["previous"])
        back = client.get(page["previous"]).json()
        assert ids(back) == ids(before)
        assert query(back["next"])["before"] == query(page["url"])["before"]
    # From the first keyset page back onto the numbered pages' rows, and no further than the top.
    newest = client.get(f"{RUNS}?after={cursor_of(Run.objects.order_by('-scheduled_for', '-id')[3], 'scheduled_for')}")
    assert ids(newest.json()) == expected_runs()[:3] and newest.json()["previous"] is None


# --- the count and the numbered pages -----------------------------------------------------------


@pytest.mark.parametrize(("rows", "count", "capped"), [(29, 29, False), (30, 30, False), (31, 30, True)])
def test_the_count_is_exact_up_to_the_cap_and_says_when_it_stops(cast, small_pages, rows, count, capped):
    plant_runs(cast, rows)
    body = client_for(cast.admin).get(RUNS).json()
    assert (body["count"], body["count_capped"]) == (count, capped)
    last = client_for(cast.admin).get(f"{RUNS}?page=3").json()
    # A list that fits has no next page; a capped one goes on by position.
    assert (last["next"] is not None) == capped


def test_a_page_past_the_cap_says_how_to_go_further(cast, small_pages):
    plant_runs(cast, 60)
    client = client_for(cast.admin)
    response = client.get(f"{RUNS}?page=4")
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "Page 4 is past the numbered pages: they stop at 30 rows (page 3)" in detail
    assert "follow next from page 3" in detail and "?before=<cursor>" in detail
    # In another order, positions do not exist: the message says so.
    ordered = client.get(f"{RUNS}?page=4&ordering=status")
    assert ordered.status_code == 404 and "drop ordering" in ordered.json()["detail"]
    assert client.get(f"{RUNS}?page=3&ordering=status").json()["next"] is None
    # A list that fits its numbered pages refuses a page past its end as before.
    assert client.get(f"{RUNS}?status=running&page=2").json() == {"detail": "Invalid page."}


def test_page_last_is_the_last_numbered_page(cast, small_pages):
    plant_runs(cast, 60)
    runs = client_for(cast.admin).get(f"{RUNS}?page=last").json()
    assert ids(runs) == expected_runs()[20:30] and "before" in query(runs["next"])


# --- bad positions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ("before=yesterday", "before", "Not a list position"),
        ("after=2026-12-01T00:00:00Z~x", "after", "Not a list position"),
        ("before=2026-12-01T00:00:00Z~1&after=2026-12-01T00:00:00Z~2", "after", "not both"),
        ("page=2&before=2026-12-01T00:00:00Z~1", "page", "not both"),
        ("ordering=status&before=2026-12-01T00:00:00Z~1", "before", "default order only"),
        ("ordering=-scheduled_for&after=2026-12-01T00:00:00Z~1", "after", "drop ordering"),
    ],
)
def test_a_bad_position_is_a_400_naming_the_parameter(cast, small_pages, params, field, message):
    plant_runs(cast, 40)
    response = client_for(cast.admin).get(f"{RUNS}?{params}")
    assert response.status_code == 400
    assert message in response.json()[field][0]


def test_a_bad_audit_position_is_a_400(cast):
    response = client_for(cast.admin).get(f"{EVENTS}?before=2026-13-01T00:00:00Z~4")
    assert response.status_code == 400 and "before" in response.json()


# --- a narrowed user ------------------------------------------------------------------------------


@pytest.fixture
def payments_viewer(cast, django_user_model):
    narrowed = django_user_model.objects.create_user("payments-viewer", password="x")
    grant_role(narrowed, Role.VIEWER, tenant=cast.acme, team=cast.payments, actor=SYSTEM)
    return narrowed


def test_a_narrowed_user_never_sees_another_teams_runs_through_a_position(cast, small_pages, payments_viewer):
    plant_runs(cast, 120)
    client = client_for(payments_viewer)
    mine = expected_runs(job__team=cast.payments)
    assert len(mine) > CAP and len(mine) < Run.objects.count()
    pages = walk(client, RUNS)
    assert [pk for page in pages for pk in ids(page)] == mine
    # A position at a run of team data (its id and time guessed or seen elsewhere) lists only payments' runs.
    theirs = Run.objects.filter(job__team=cast.data).order_by("-scheduled_for")[5]
    for name in ("before", "after"):
        body = client.get(f"{RUNS}?{name}={cursor_of(theirs, 'scheduled_for')}").json()
        assert body["results"] and set(ids(body)) <= set(mine)
    assert (
        client_for(cast.globex_admin).get(f"{RUNS}?before={cursor_of(theirs, 'scheduled_for')}").json()["results"] == []
    )


def test_a_narrowed_user_never_sees_another_teams_events_through_a_position(cast, small_pages, payments_viewer):
    plant_events(cast, 120)
    client = client_for(payments_viewer)
    pages = walk(client, EVENTS)
    seen = [pk for page in pages for pk in ids(page)]
    assert seen and len(pages) > 3
    assert not AuditEvent.objects.filter(pk__in=seen, team=cast.data).exists()
    assert seen == [pk for pk in expected_events() if pk in set(seen)]
    theirs = AuditEvent.objects.filter(team=cast.data).order_by("-created_at")[10]
    for name in ("before", "after"):
        body = client.get(f"{EVENTS}?{name}={cursor_of(theirs, 'created_at')}").json()
        assert body["results"]
        assert not AuditEvent.objects.filter(pk__in=ids(body), team=cast.data).exists()


# --- query counts -------------------------------------------------------------------------------


def count_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(ctx.captured_queries)


@pytest.mark.parametrize(("url", "plant"), [(RUNS, plant_runs), (EVENTS, plant_events)])
def test_page_one_the_last_numbered_page_and_a_keyset_page_cost_the_same_queries(cast, small_pages, url, plant):
    client = client_for(cast.admin)
    plant(cast, 60)
    client.get(url)  # the token's first use is noted once
    first_count = count_queries(client, url)
    for rows in (60, 150):
        if rows > 60:
            plant(cast, rows - 60)
        keyset = client.get(f"{url}?page=3").json()["next"]
        assert "before" in query(keyset)
        assert [count_queries(client, page) for page in (url, f"{url}?page=3", keyset)] == [first_count] * 3, rows


# --- the audit trail's object filter ------------------------------------------------------------


def test_the_audit_object_filter_takes_a_short_type_name(cast):
    job = cast.make_job(cast.dev)
    client = client_for(cast.admin)
    expected = expected_events(object_type="jobs.job", object_id=str(job.pk))
    assert expected
    for spec in (f"job:{job.pk}", f"jobs.job:{job.pk}", f"JOB:{job.pk}"):
        assert ids(client.get(f"{EVENTS}?object={spec}").json()) == expected, spec
    assert set(ids(client.get(f"{EVENTS}?object_type=job").json())) >= set(expected)
    unknown = client.get(f"{EVENTS}?object=gadget:{job.pk}")
    assert unknown.status_code == 400 and "Unknown object type" in unknown.json()["object"][0]
    assert client.get(f"{EVENTS}?object_type=gadget").json()["object_type"][0].startswith("Unknown object type")


# --- the schema ---------------------------------------------------------------------------------


def test_the_schema_documents_the_capped_count_and_the_positions(cast):
    schema = client_for(cast.viewer).get("/api/schema/?format=json").json()
    for component, path in (
        ("PaginatedRunList", "/api/v1/runs/"),
        ("PaginatedAuditEventList", "/api/v1/audit-events/"),
    ):
        body = schema["components"]["schemas"][component]
        assert body["properties"]["count_capped"]["type"] == "boolean"
        assert "count_capped" in body["required"]
        names = {parameter["name"] for parameter in schema["paths"][path]["get"]["parameters"]}
        assert {"page", "before", "after"} <= names


def test_the_browsable_api_links_a_keyset_page_on(cast, small_pages, client):
    from django.utils.html import escape

    plant_runs(cast, 60)
    client.force_login(cast.admin)
    deep = client_for(cast.admin).get(f"{RUNS}?page=3").json()["next"]
    links = client_for(cast.admin).get(deep).json()
    response = client.get(deep, HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    html = response.content.decode()
    assert f'<a href="{escape(links["previous"])}" aria-label="Previous">' in html
    assert f'<a href="{escape(links["next"])}" aria-label="Next">' in html
