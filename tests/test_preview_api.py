"""GET /api/v1/schedule-preview/: any signed-in user; JSON array of UTC instants, or 400 naming the field."""

import pytest
from rest_framework.test import APIClient

from jobs import schedule

URL = "/api/v1/schedule-preview/"


@pytest.fixture
def api(cast):
    client = APIClient()
    client.force_authenticate(cast.viewer)
    return client


def test_it_returns_utc_instants_for_any_signed_in_user(api):
    response = api.get(
        URL,
        {"cron": "30 2 * * *", "tz": "Europe/Berlin", "after": "2026-10-24T12:00:00Z", "count": 3, "overlap": "twice"},
    )
    assert response.status_code == 200
    assert response.json() == ["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z", "2026-10-26T01:30:00Z"]


def test_detail_marks_dst_transitions(api):
    response = api.get(
        URL,
        {"cron": "30 2 * * *", "tz": "Europe/Berlin", "after": "2026-03-28T12:00:00Z", "count": 2, "detail": "true"},
    )
    first, second = response.json()
    assert first["utc"] == "2026-03-29T01:00:00Z" and first["local"] == "2026-03-29 03:00"
    assert "does not exist" in first["dst"] and second["dst"] == ""


def test_anonymous_users_are_refused(cast):
    response = APIClient().get(URL, {"cron": "0 0 * * *", "tz": "UTC"})
    assert response.status_code in (401, 403)


@pytest.mark.parametrize(
    ("params", "field", "fragment"),
    [
        ({"cron": "0 0 * *", "tz": "UTC"}, "cron", "must have 5 fields"),
        ({"cron": "0 0 * * *", "tz": "Europe/Atlantis"}, "tz", "Unknown time zone 'Europe/Atlantis'"),
        ({"cron": "H 0 * * *", "tz": "UTC"}, "cron", "uses H"),
        ({"tz": "UTC"}, "cron", "required"),
        ({"cron": "0 0 * * *"}, "tz", "required"),
        ({"cron": "0 0 * * *", "tz": "UTC", "count": "many"}, "count", "whole number"),
        ({"cron": "0 0 * * *", "tz": "UTC", "count": "5000"}, "count", "between 1 and 1000"),
        ({"cron": "0 0 * * *", "tz": "UTC", "gap": "later"}, "gap", "gap must be one of shift, skip"),
        ({"cron": "0 0 * * *", "tz": "UTC", "overlap": "x"}, "overlap", "overlap must be one of once, twice"),
        ({"cron": "0 0 * * *", "tz": "UTC", "after": "2026-01-01"}, "after", "Must include Z"),
        ({"cron": "0 0 * * *", "tz": "UTC", "job": "abc"}, "job", "job id"),
    ],
)
def test_bad_input_answers_400_naming_the_field(api, params, field, fragment):
    response = api.get(URL, params)
    assert response.status_code == 400
    body = response.json()
    assert list(body) == [field]
    assert fragment in body[field][0]


def test_h_is_hashed_from_a_job_the_user_can_see(cast, api):
    job = cast.make_job(cast.dev, cron="H H * * *", timezone="UTC")
    response = api.get(URL, {"job": job.pk, "after": "2026-01-01T00:00:00Z", "count": 1})
    assert response.status_code == 200
    assert response.json() == [schedule.isoz(job.next_runs(schedule_after(), 1)[0])]


def test_another_tenants_job_is_not_found(cast):
    job = cast.make_job(cast.dev, cron="H H * * *", timezone="UTC")
    client = APIClient()
    client.force_authenticate(cast.globex_admin)
    response = client.get(URL, {"job": job.pk})
    assert response.status_code == 404
    assert job.cron not in response.content.decode()


def schedule_after():
    from datetime import UTC, datetime

    return datetime(2026, 1, 1, tzinfo=UTC)
