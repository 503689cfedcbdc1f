"""Insights, capacity forecast and thundering herds (issue 21, items 1 and 2), over a tenant of a few
hundred jobs with generated run history (tests/insights_fixture.py): the pages and the API find
exactly the planted cases, for the readers who may see them."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import transaction
from django.test import Client
from django.utils.dateparse import parse_datetime

from approvals.models import ChangeRequest, ChangeStatus
from conftest import PASSWORD, Cast
from governance.actors import SYSTEM
from governance.models import Role
from governance.services import grant_role
from insights import forecast
from insights.herds import suggest_h
from insights.models import ForecastSeries, InsightCache
from jobs.models import Job
from tests.api_support import client_for
from tests.insights_fixture import CLOSE_JOBS, CLOSE_SLOTS, HERD, month_ends_between, plant

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """The cast and the planted tenant, built once for the module (each test runs in a savepoint
    rolled back at its end), with the forecasts computed as the nightly refresh would."""
    with django_db_blocker.unblock(), transaction.atomic():
        cast = Cast()
        planted = plant(cast)
        cast.narrowed = {
            "payments": narrowed(cast, "payments-viewer", team=cast.payments),
            "data": narrowed(cast, "data-viewer", team=cast.data),
            "dev": narrowed(cast, "dev-viewer", environment=cast.dev),
        }
        forecast.refresh([cast.acme, cast.globex])
        yield cast, planted
        transaction.set_rollback(True)


@pytest.fixture
def cast(world):
    return world[0]


@pytest.fixture
def planted(world):
    return world[1]


def narrowed(cast, name: str, **scope):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(name, password=PASSWORD)
    grant_role(user, Role.VIEWER, tenant=cast.acme, actor=SYSTEM, **scope)
    return user


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def capacity(user, **params):
    return client_for(user).get("/api/v1/insights/capacity/", params)


def herds(user, **params):
    return client_for(user).get("/api/v1/insights/herds/", params)


def test_the_forecast_finds_exactly_the_month_end_overflows_of_pool_batch(cast, planted):
    body = capacity(cast.viewer, horizon="90").json()
    start = parse_datetime(body["start"])
    expected = month_ends_between(start, start + timedelta(days=90))
    assert len(expected) >= 2
    assert sorted(o["start"][:10] for o in body["overflows"]) == expected
    close_names = {job.name for job in planted["close"]}
    for overflow in body["overflows"]:
        assert (overflow["pool"], overflow["environment"], overflow["slots"]) == ("batch", "prod", CLOSE_SLOTS)
        # All twenty close jobs run three hours at month end: each is active at the peak.
        assert {j["name"] for j in overflow["jobs"]} == close_names
        assert overflow["peak_p50"] == pytest.approx(CLOSE_JOBS, abs=0.01)
        assert overflow["start"][11:16] == "22:15"
    pools = {(p["pool"], p["environment"]): p for p in body["pools"]}
    assert pools[("quick", "prod")]["overflow_buckets"] == 0 and pools[("quick", "prod")]["peak_p50"] < 10
    batch_days = {d["date"]: d for d in pools[("batch", "prod")]["days"]}
    # Outside month ends (and the night after, which the three-hour runs reach) the pool stays far
    # below its slots: one minute a day per job.
    nights = {(parse_datetime(d + "T00:00:00Z") + timedelta(days=1)).date().isoformat() for d in expected}
    assert {day for day, d in batch_days.items() if d["over"]} == set(expected) | (nights & set(batch_days))
    assert all(d["peak_p50"] < 2 for day, d in batch_days.items() if day not in set(expected) | nights)
    assert set(expected) <= {d["date"] for d in body["peak_days"] if "month_end" in d["flags"]}
    # The 30-day horizon keeps only the month ends within 30 days.
    short = capacity(cast.viewer, horizon="30").json()
    start = parse_datetime(short["start"])
    assert sorted(o["start"][:10] for o in short["overflows"]) == month_ends_between(start, start + timedelta(days=30))


def test_the_seasonal_profile_is_learnt_from_eight_weeks_of_history(cast, planted):
    entry = forecast.compute(cast.acme, 30)[forecast.KIND]
    close = entry.data["profiles"][str(planted["close"][0].pk)]
    assert close["seasonal"] and close["p50_s"] == 60
    # Five days of history is not enough for a seasonal profile.
    assert str(planted["herd"][0].pk) not in entry.data["profiles"]
    profile = forecast.learn([(planted["now"] - timedelta(days=d), 60.0) for d in range(1, 30)])
    assert not profile.seasonal


def test_the_herds_find_exactly_the_0200_hotspot_and_the_rewrites_flatten_it(cast, planted):
    body = herds(cast.viewer).json()
    assert [h["at"] for h in body["hotspots"]] == ["02:00"]
    spot = body["hotspots"][0]
    assert spot["starts"] == HERD
    assert {j["name"] for j in spot["jobs"]} == {job.name for job in planted["herd"]}
    assert {j["suggested"] for j in spot["jobs"]} == {"H 2 * * *"}
    # Spread by H over 02:00-02:59: no minute reaches the threshold any more, no start is lost.
    assert spot["after"] < 10 and body["peak_after"] < 10
    assert all(
        i // 60 == 2 or after <= before
        for i, (before, after) in enumerate(zip(body["starts_per_minute"], body["flattened"], strict=True))
    )
    assert sum(body["flattened"]) == pytest.approx(sum(body["starts_per_minute"]), rel=1e-6)
    assert max(body["flattened"][120:180]) >= 1
    # A lower threshold finds the next busiest minutes too; a higher one none.
    assert herds(cast.viewer, threshold="200").json()["hotspots"] == []


def test_h_rewrites_of_the_minute_field():
    assert suggest_h("0 2 * * *") == "H 2 * * *"
    assert suggest_h("30 2 * * MON-FRI") == "H 2 * * MON-FRI"
    assert suggest_h("*/15 * * * *") == "H/15 * * * *"
    assert suggest_h("H 2 * * *") is None
    assert suggest_h("0,30 2 * * *") is None


def test_the_pages_show_the_planted_cases_with_csv_exports(cast, planted):
    client = browser(cast.viewer)
    page = client.get("/insights/capacity/", {"horizon": "90", "pool": "batch", "environment": "prod"})
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('data-pool="batch"') >= 2 and "payments.close.07" in html
    assert 'role="img"' in html and "Daily peaks as a table" in html
    exported = client.get(
        "/insights/capacity/", {"horizon": "30", "pool": "batch", "environment": "prod", "format": "csv"}
    )
    rows = list(csv.DictReader(io.StringIO(exported.content.decode())))
    assert exported["Content-Type"].startswith("text/csv") and len(rows) == 30 * 96
    over = [r for r in rows if r["over"] == "yes"]
    start = parse_datetime(rows[0]["bucket_start"])
    # Every overflowing quarter-hour lies in the night of a month end (22:15 to before 04:00).
    assert over and {(parse_datetime(r["bucket_start"]) - timedelta(hours=6)).date().isoformat() for r in over} == set(
        month_ends_between(start, start + timedelta(days=30))
    )
    herd_page = client.get("/insights/herds/").content.decode()
    assert "02:00 UTC: 120" in herd_page and "H 2 * * *" in herd_page
    assert 'name="job"' not in herd_page  # a viewer may not propose
    exported = client.get("/insights/herds/", {"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(exported.content.decode())))
    assert len(rows) == HERD and {r["minute_utc"] for r in rows} == {"02:00"}
    assert {r["suggested_cron"] for r in rows} == {"H 2 * * *"}
    index = client.get("/insights/").content.decode()
    assert 'href="/insights/capacity/"' in index and 'href="/insights/herds/"' in index
    assert 'href="/insights/"' in client.get("/jobs/").content.decode()


def test_another_tenant_never_sees_acme_and_cannot_ask_for_it(cast, planted):
    body = herds(cast.globex_admin).json()
    assert body["tenant"] == "globex"
    assert [(h["at"], h["starts"]) for h in body["hotspots"]] == [("04:00", 15)]
    assert capacity(cast.globex_admin).json()["overflows"] == []
    assert herds(cast.globex_admin, tenant="acme").status_code == 404
    assert browser(cast.globex_admin).get("/insights/capacity/", {"tenant": "acme"}).status_code == 404
    assert herds(cast.viewer, tenant="globex").status_code == 404
    assert "ops.snap" not in browser(cast.viewer).get("/insights/herds/", {"threshold": "1"}).content.decode()
    assert herds(cast.outsider).status_code == 404
    assert browser(cast.outsider).get("/insights/herds/").status_code == 200  # says there is nothing to show
    assert client_for(None).get("/api/v1/insights/herds/").status_code in (401, 403)


def test_narrowed_roles_see_only_their_jobs(cast, planted):
    payments, data, dev = (cast.narrowed[k] for k in ("payments", "data", "dev"))
    # The month-end overflow is made of payments jobs, the herd of data jobs.
    assert capacity(payments, horizon="90").json()["overflows"]
    assert herds(payments).json()["hotspots"] == []
    assert capacity(data, horizon="90").json()["overflows"] == []
    assert [h["at"] for h in herds(data).json()["hotspots"]] == ["02:00"]
    # The herd runs in staging, the pools are in prod: the dev viewer sees neither.
    assert herds(dev).json()["hotspots"] == []
    body = capacity(dev, horizon="90").json()
    assert body["overflows"] == [] and {p["environment"] for p in body["pools"]} == {"dev"}
    assert capacity(dev, pool="batch").status_code == 400
    assert "payments.close" not in browser(data).get("/insights/capacity/", {"horizon": "90"}).content.decode()
    # The series a data viewer sums are the data team's only.
    assert sum(p["peak_p50"] for p in capacity(data, horizon="30").json()["pools"] if p["pool"] == "batch") == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"horizon": "367"}, "horizon"),
        ({"horizon": "9999999"}, "horizon"),
        ({"horizon": "abc"}, "horizon"),
        ({"horizon": "0"}, "horizon"),
        ({"pool": "no-such-pool"}, "pool"),
        ({"environment": "moon"}, "environment"),
    ],
)
def test_bad_capacity_parameters_are_400_naming_the_parameter(cast, params, field):
    before = list(InsightCache.objects.values_list("pk", "computed_at"))
    response = capacity(cast.viewer, **params)
    assert response.status_code == 400
    assert list(response.json()) == [field]
    page = browser(cast.viewer).get("/insights/capacity/", params)
    assert page.status_code == 400
    assert f'id="f-{field}-error"' in page.content.decode()
    assert list(InsightCache.objects.values_list("pk", "computed_at")) == before


@pytest.mark.parametrize("threshold", ["lots", "nan", "-1", "0", "1e9", "inf"])
def test_a_threshold_that_does_not_parse_is_400_naming_it(cast, threshold):
    response = herds(cast.viewer, threshold=threshold)
    assert response.status_code == 400 and list(response.json()) == ["threshold"]
    page = browser(cast.viewer).get("/insights/herds/", {"threshold": threshold})
    assert page.status_code == 400 and 'id="f-threshold-error"' in page.content.decode()


def test_propose_stagger_opens_change_requests_for_review_and_changes_nothing(cast, planted):
    chosen = planted["herd"][:3]
    client = browser(cast.author)
    page = client.get("/insights/herds/").content.decode()
    assert f'name="job" value="{chosen[0].pk}"' in page
    response = client.post(
        "/insights/herds/propose/", {"tenant": "acme", "job": [j.pk for j in chosen], "justification": "Spread 02:00."}
    )
    assert response.status_code == 302
    changes = ChangeRequest.objects.filter(job__in=chosen)
    assert changes.count() == 3
    for change in changes:
        assert change.author == cast.author and change.status == ChangeStatus.SUBMITTED
        assert change.proposed["cron"] == "H 2 * * *" and "Spread 02:00." in change.justification
    assert set(Job.objects.filter(pk__in=[j.pk for j in chosen]).values_list("cron", flat=True)) == {"0 2 * * *"}


def test_a_viewer_or_another_tenant_cannot_propose_a_stagger(cast, planted):
    job = planted["herd"][0]
    browser(cast.viewer).post("/insights/herds/propose/", {"tenant": "acme", "job": [job.pk]})
    assert (
        browser(cast.globex_author).post("/insights/herds/propose/", {"tenant": "acme", "job": [job.pk]}).status_code
        == 404
    )
    browser(cast.globex_author).post("/insights/herds/propose/", {"tenant": "globex", "job": [job.pk]})
    assert not ChangeRequest.objects.filter(job=job).exists()


def test_pages_read_the_cache_until_it_is_stale_and_the_nightly_command_fills_it(cast, planted):
    InsightCache.objects.all().delete()
    call_command("refresh_insights", "--tenant", "acme", verbosity=0)
    kinds = set(InsightCache.objects.filter(tenant=cast.acme).values_list("kind", "horizon_days"))
    assert kinds == {("capacity", 30), ("capacity", 90), ("herds", 30), ("herds_view", 30)}
    assert ForecastSeries.objects.filter(cache__tenant=cast.acme, team__isnull=True, pool="batch").count() == 2
    first = InsightCache.objects.get(tenant=cast.acme, kind="capacity", horizon_days=30).computed_at
    capacity(cast.viewer)
    assert InsightCache.objects.get(tenant=cast.acme, kind="capacity", horizon_days=30).computed_at == first
    # A job change makes it stale: the next reader gets a fresh forecast.
    Job.objects.filter(pk=planted["close"][0].pk).update(updated_at=first + timedelta(seconds=1))
    capacity(cast.viewer)
    assert InsightCache.objects.get(tenant=cast.acme, kind="capacity", horizon_days=30).computed_at > first


def test_stagger_all_jobs_of_a_hotspot_at_once(cast, planted):
    response = browser(cast.author).post("/insights/herds/propose/", {"tenant": "acme", "all_at": "120"})
    assert response.status_code == 302
    herd = [job.pk for job in planted["herd"]]
    assert ChangeRequest.objects.filter(job__in=herd, proposed__cron="H 2 * * *").count() == HERD
    # Only the jobs at 02:00: no other job got a request.
    assert not ChangeRequest.objects.exclude(job__in=herd).exists()


def test_the_pages_cost_as_many_queries_with_more_jobs(cast, planted):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from jobs.models import Pool

    pages = ["/insights/capacity/?horizon=90", "/insights/herds/", "/insights/"]

    def queries(user) -> list[int]:
        client = browser(user)
        found = []
        for path in pages:
            with CaptureQueriesContext(connection) as captured:
                assert client.get(path).status_code == 200
            found.append(len(captured))
        return found

    readers = [cast.viewer, cast.narrowed["payments"]]
    before = [queries(user) for user in readers]
    Pool.objects.create(tenant=cast.acme, environment=cast.dev, name="extra", slots=2)
    Job.objects.bulk_create(
        Job(
            tenant=cast.acme,
            team=[cast.payments, cast.data][i % 2],
            environment=cast.dev,
            **cast.definition(name=f"payments.extra.{i:02d}", cron="0 2 * * *", timezone="UTC"),
            pool="extra",
        )
        for i in range(40)
    )
    forecast.refresh([cast.acme])
    assert [queries(user) for user in readers] == before


def test_a_threshold_of_the_readers_own_is_served_from_the_cache_after_its_first_ask(cast, planted):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = browser(cast.viewer)
    first = client.get("/insights/herds/?threshold=5")
    assert first.status_code == 200
    asked = InsightCache.objects.get(tenant=cast.acme, kind="herds_view_asked")
    assert asked.params["threshold"] == 5
    with CaptureQueriesContext(connection) as ctx:
        again = client.get("/insights/herds/?threshold=5")
    # The same page (but for each response's own CSRF token), read from the stored view: the
    # per-job analysis is not loaded.
    import re

    def page(response) -> str:
        return re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", response.content.decode())

    assert page(again) == page(first)
    assert not any("\"kind\" = 'herds'" in q["sql"] and '"data"' in q["sql"] for q in ctx.captured_queries)
    # Another threshold replaces it; the default one is untouched.
    assert client.get("/insights/herds/?threshold=7").status_code == 200
    assert InsightCache.objects.get(tenant=cast.acme, kind="herds_view_asked").params["threshold"] == 7
