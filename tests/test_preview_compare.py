"""The preview the job page and change-request diffs show: next runs before vs after, DST marked."""

from datetime import UTC, datetime

import pytest

from jobs.preview import compare_definitions, preview_definition

NOW = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
# A preview decides each run with the tenant's maintenance windows and calendars (jobs.firing): it reads them.
pytestmark = pytest.mark.django_db


def test_a_schedule_change_lists_next_runs_before_and_after_with_dst_marked():
    before = {"name": "a.b.c", "cron": "0 1 * * *", "timezone": "Europe/Berlin"}
    after = {**before, "cron": "30 2 * * *"}
    result = compare_definitions(before, after, tenant_id=1, environment_id=2, now=NOW, count=3)
    rows = result["rows"]
    assert [r["before"]["utc"] for r in rows] == [
        "2026-03-28T00:00:00Z",
        "2026-03-29T00:00:00Z",
        "2026-03-29T23:00:00Z",
    ]
    assert [r["after"]["utc"] for r in rows] == ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
    assert "does not exist" in rows[1]["after"]["dst"]
    assert not any(r["same"] for r in rows)


def test_a_change_that_does_not_touch_the_schedule_has_no_preview():
    before = {"name": "a.b.c", "cron": "0 1 * * *", "timezone": "UTC", "description": "x"}
    assert compare_definitions(before, {**before, "description": "y"}, tenant_id=1, environment_id=2) is None


def test_a_new_job_has_only_after_rows_and_a_deleted_job_only_before_rows():
    definition = {"name": "a.b.c", "cron": "0 1 * * *", "timezone": "UTC"}
    created = compare_definitions(None, definition, tenant_id=1, environment_id=2, now=NOW, count=2)
    assert [r["before"] for r in created["rows"]] == [None, None]
    deleted = compare_definitions(definition, None, tenant_id=1, environment_id=2, now=NOW, count=2)
    assert [r["after"] for r in deleted["rows"]] == [None, None]


def test_an_invalid_proposal_previews_nothing_instead_of_failing_the_page():
    assert preview_definition({"cron": "99 * * * *", "timezone": "UTC"}, tenant_id=1, environment_id=1) == []


def test_reviewers_are_warned_when_a_proposed_schedule_collides_with_a_maintenance_window(cast):
    from jobs.preview import window_warnings

    cast.make_window(
        environment=cast.prod,
        name="san migration",
        starts_at=datetime(2026, 3, 28, 0, 0, tzinfo=UTC),
        ends_at=datetime(2026, 3, 28, 6, 0, tzinfo=UTC),
    )
    definition = {"name": "payments.ledger.x", "cron": "30 2 * * *", "timezone": "UTC"}
    warnings = window_warnings(definition, tenant_id=cast.acme.pk, environment_id=cast.prod.pk, now=NOW, count=3)
    assert warnings == [
        "The run at 2026-03-28T02:30:00Z (2026-03-28 02:30 UTC) falls in maintenance window 'san migration' "
        "and will be deferred to 2026-03-28T06:00:00Z."
    ]
    assert window_warnings(definition, tenant_id=cast.acme.pk, environment_id=cast.dev.pk, now=NOW) == []
