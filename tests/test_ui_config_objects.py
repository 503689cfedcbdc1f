"""The windows-and-calendars page, its proposal forms, the review page's diff and the read-only admin."""

from __future__ import annotations

import pytest
from django.urls import reverse

from approvals.models import ChangeRequest, ChangeStatus
from conftest import PASSWORD
from jobs.models import HolidayCalendar, MaintenanceWindow

WINDOW = {"name": "db upgrade", "starts_at": "2026-06-01T22:00:00Z", "ends_at": "2026-06-02T02:00:00Z"}


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)
    return client


def form_data(place, **overrides):
    data = {
        "place": place,
        "name": "db upgrade",
        "starts_at": "2026-06-01T22:00",
        "ends_at": "2026-06-02T02:00",
        "cron": "",
        "timezone": "UTC",
        "duration_minutes": "",
        "policy": "defer",
        "justification": "Quarterly database upgrade.",
        "ticket": "OPS-9",
    }
    data.update(overrides)
    return data


def test_the_page_lists_the_tenants_windows_and_calendars_only(client, cast):
    cast.make_window(environment=cast.prod, **WINDOW)
    cast.make_calendar("de-bank", dates=["2026-12-25"], country="DE")
    cast.make_window(tenant=cast.globex, **{**WINDOW, "name": "globex secret window"})
    html = login(client, cast.viewer).get(reverse("config_list")).content.decode()
    assert "db upgrade" in html and "de-bank" in html and "1 date" in html
    assert "globex secret window" not in html
    # A viewer sees them but is offered no proposal.
    assert "Propose change" not in html and "Propose a window" not in html


def test_an_admin_proposes_a_prod_window_in_the_form_and_lands_on_the_review_page(client, cast):
    client = login(client, cast.admin)
    html = client.get(reverse("config_new", args=["maintenance_window"])).content.decode()
    assert "Acme: all environments" in html and "Acme: Prod (2 approvals)" in html
    response = client.post(reverse("config_new", args=["maintenance_window"]), form_data(f"e{cast.prod.pk}"))
    change = ChangeRequest.objects.get()
    assert response.status_code == 302 and response.url == reverse("change_detail", args=[change.pk])
    assert (change.target_kind, change.environment, change.status) == ("maintenance_window", cast.prod, "submitted")
    assert change.proposed["starts_at"] == "2026-06-01T22:00:00Z"
    html = client.get(response.url).content.decode()
    assert "Create maintenance window" in html and "Proposed maintenance window (new)" in html
    assert "2026-06-02T02:00:00Z" in html
    assert not MaintenanceWindow.objects.exists()


def test_an_invalid_window_in_the_form_is_refused_with_the_field_error_and_nothing_saved(client, cast):
    client = login(client, cast.admin)
    response = client.post(
        reverse("config_new", args=["maintenance_window"]), form_data(f"e{cast.prod.pk}", ends_at="2026-06-01T21:00")
    )
    assert response.status_code == 400
    assert "before it starts" in response.content.decode()
    response = client.post(
        reverse("config_new", args=["maintenance_window"]),
        form_data(f"e{cast.prod.pk}", starts_at="", ends_at="", cron="0 2 * * *", timezone="Mars/Base"),
    )
    assert response.status_code == 400 and "Mars/Base" in response.content.decode()
    assert not ChangeRequest.objects.exists() and not MaintenanceWindow.objects.exists()


def test_the_review_page_shows_a_readable_diff_of_a_window_update(client, cast):
    live = cast.make_window(environment=cast.prod, **WINDOW)
    client = login(client, cast.admin)
    response = client.post(
        reverse("config_edit", args=["maintenance_window", live.pk]),
        {**form_data("", policy="skip"), "justification": "Skip rather than pile up."},
    )
    assert response.status_code == 302
    html = login(client, cast.approver).get(response.url).content.decode()
    assert "Update maintenance window" in html and "Maintenance window: live vs proposed" in html
    assert "1 of 7 fields changed" in html
    assert 'data-testid="approve"' in html


def test_a_calendar_is_proposed_with_dates_and_a_country_and_deleted_through_review(client, cast):
    client = login(client, cast.admin)
    response = client.post(
        reverse("config_new", args=["holiday_calendar"]),
        {
            "place": f"t{cast.acme.pk}",
            "name": "de-bank",
            "dates": "2026-12-24\n2026-12-31",
            "country": "DE",
            "years": "2026",
            "justification": "German bank holidays.",
        },
    )
    assert response.status_code == 302
    change = ChangeRequest.objects.get()
    assert "2026-12-24" in change.proposed["dates"] and "2026-10-03" in change.proposed["dates"]
    html = client.get(reverse("config_new", args=["holiday_calendar"])).content.decode()
    assert "Prod" not in html  # calendars are tenant-wide: no environment to choose
    calendar = cast.make_calendar("us", dates=["2026-07-04"])
    response = client.post(
        reverse("config_delete", args=["holiday_calendar", calendar.pk]), {"justification": "Not used."}
    )
    assert response.status_code == 302
    deletion = ChangeRequest.objects.filter(action="delete").get()
    assert deletion.target_id == calendar.pk and deletion.status == ChangeStatus.SUBMITTED
    assert HolidayCalendar.objects.filter(pk=calendar.pk).exists()


def test_lesser_roles_get_403_and_other_tenants_objects_404(client, cast):
    live = cast.make_window(environment=cast.prod, **WINDOW)
    viewer = login(client, cast.viewer)
    assert viewer.get(reverse("config_new", args=["maintenance_window"])).status_code == 403
    assert viewer.get(reverse("config_edit", args=["maintenance_window", live.pk])).status_code == 403
    client.logout()
    outsider = login(client, cast.globex_admin)
    assert outsider.get(reverse("config_edit", args=["maintenance_window", live.pk])).status_code == 404
    assert outsider.post(reverse("config_delete", args=["maintenance_window", live.pk]), {}).status_code == 404
    assert outsider.get(reverse("config_new", args=["no_such_kind"])).status_code == 404
    # globex's admin may not place a window in acme's prod, even by forging the choice.
    response = outsider.post(reverse("config_new", args=["maintenance_window"]), form_data(f"e{cast.prod.pk}"))
    assert response.status_code == 400 and ChangeRequest.objects.filter(author=cast.globex_admin).count() == 0


def test_the_page_runs_a_constant_number_of_queries(client, cast, django_assert_max_num_queries):
    client = login(client, cast.admin)
    cast.make_window(environment=cast.prod, **WINDOW)
    with django_assert_max_num_queries(40) as first:
        client.get(reverse("config_list"))
    for i in range(4):
        cast.make_window(environment=cast.dev, **{**WINDOW, "name": f"w{i}"})
        cast.make_calendar(f"c{i}")
    with django_assert_max_num_queries(len(first.captured_queries)):
        client.get(reverse("config_list"))


@pytest.fixture
def root(client, cast):
    client.login(username=cast.superuser.username, password=PASSWORD)
    return client


def test_the_admin_cannot_add_change_or_delete_a_governed_window_or_calendar(root, cast):
    live = cast.make_window(environment=cast.prod, **WINDOW)
    calendar = cast.make_calendar("de-bank", dates=["2026-12-25"])
    url = reverse("admin:jobs_maintenancewindow_change", args=[live.pk])
    html = root.get(url).content.decode()
    assert 'name="_save"' not in html and "change only through change requests" in html
    assert root.post(url, {"name": "hacked", "policy": "skip"}).status_code == 403
    assert root.post(reverse("admin:jobs_maintenancewindow_add"), {"name": "x"}).status_code == 403
    assert (
        root.post(reverse("admin:jobs_holidaycalendar_delete", args=[calendar.pk]), {"post": "yes"}).status_code == 403
    )
    history = reverse("admin:jobs_maintenancewindow_simple_history", args=[live.pk, live.history.first().history_id])
    assert root.post(history, {"name": "reverted"}).status_code == 403
    live.refresh_from_db()
    assert live.name == "db upgrade" and HolidayCalendar.objects.filter(pk=calendar.pk).exists()


def test_an_admin_proposes_a_pool_for_one_environment_and_the_page_lists_it(client, cast):
    client = login(client, cast.admin)
    html = client.get(reverse("config_new", args=["pool"])).content.decode()
    assert "Acme: Prod (2 approvals)" in html and "all environments" not in html
    data = {"place": f"e{cast.prod.pk}", "name": "batch", "slots": "-1", "reserved_critical_slots": "0"}
    response = client.post(reverse("config_new", args=["pool"]), {**data, "justification": "Bound batch loads."})
    assert response.status_code == 400 and "Cannot be negative" in response.content.decode()
    assert not ChangeRequest.objects.exists()
    response = client.post(
        reverse("config_new", args=["pool"]), {**data, "slots": "3", "justification": "Bound batch loads."}
    )
    assert response.status_code == 302
    cast.make_pool(cast.dev, "etl", slots=5)
    html = client.get(reverse("config_list")).content.decode()
    assert "etl" in html and "0 of 5" in html and "Create pool" in html
