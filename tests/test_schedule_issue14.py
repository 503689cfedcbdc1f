"""Issue 14: runs lost where offsets move by 30 minutes, THU refused, crashes at the ends of the
calendar; the spellings cronie and croniter accept; refusals that say what to write instead."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from jobs import schedule
from tests.api_support import client_for, counts, propose_body

PREVIEW = "/api/v1/schedule-preview/"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def fires(cron: str, tz: str, after: str, count: int, **kw) -> list[str]:
    return [schedule.isoz(f).replace(":00Z", "Z") for f in schedule.next_n(cron, tz, utc(after), count, **kw)]


# --- bug 1: elapsed-time schedules where the offset moves by 30 or 45 minutes ---

LOST_RUNS = [
    # Lord Howe sets clocks back from 02:00 (+11) to 01:30 (+10:30) at 2026-04-04T15:00Z.
    (
        "0 */6 * * *",
        "Australia/Lord_Howe",
        "2026-04-04T12:00Z",
        4,
        ["2026-04-04T13:00Z", "2026-04-04T19:30Z", "2026-04-05T01:30Z", "2026-04-05T07:30Z"],
    ),  # fmt: skip
    # 02:00-02:29 exist once, at +10:30: all 60 minutes of the 02 hour run.
    ("* 2 * * *", "Australia/Lord_Howe", "2026-04-04T14:00Z", 2, ["2026-04-04T15:30Z", "2026-04-04T15:31Z"]),
    # 01:30 comes twice: both passes, then on the hour at +10:30.
    (
        "30 * * * *",
        "Australia/Lord_Howe",
        "2026-04-04T14:00Z",
        4,
        ["2026-04-04T14:30Z", "2026-04-04T15:00Z", "2026-04-04T16:00Z", "2026-04-04T17:00Z"],
    ),  # fmt: skip
    # Spring: 02:00-02:29 do not exist (02:00 +10:30 is 02:30 +11).
    (
        "*/30 * * * *",
        "Australia/Lord_Howe",
        "2026-10-03T14:00Z",
        4,
        ["2026-10-03T14:30Z", "2026-10-03T15:00Z", "2026-10-03T15:30Z", "2026-10-03T16:00Z"],
    ),  # fmt: skip
    # Chatham sets clocks back from 03:45 (+13:45) to 02:45 (+12:45) at 2026-04-04T14:00Z.
    (
        "*/15 3 * * *",
        "Pacific/Chatham",
        "2026-04-04T13:00Z",
        9,
        [
            "2026-04-04T13:15Z",
            "2026-04-04T13:30Z",
            "2026-04-04T13:45Z",
            "2026-04-04T14:15Z",
            "2026-04-04T14:30Z",
            "2026-04-04T14:45Z",
            "2026-04-04T15:00Z",
            "2026-04-05T14:15Z",
            "2026-04-05T14:30Z",
        ],
    ),  # fmt: skip
]


@pytest.mark.parametrize(("cron", "tz", "after", "count", "expected"), LOST_RUNS)
def test_elapsed_schedules_keep_every_run_where_the_offset_moves_by_half_an_hour(cron, tz, after, count, expected):
    assert fires(cron, tz, after, count) == expected


def test_the_whole_lord_howe_fall_back_hour_runs_once_each_minute():
    got = schedule.next_n("* 2 * * *", "Australia/Lord_Howe", utc("2026-04-04T14:00Z"), 61)
    assert got[0] == utc("2026-04-04T15:30Z") and got[59] == utc("2026-04-04T16:29Z")
    assert got[60] == utc("2026-04-05T15:30Z")  # next day, +10:30


# --- bug 2 and the spellings cronie and croniter accept ---

ACCEPTED = [
    ("0 9 * * THU", ["2026-01-01T09:00Z", "2026-01-08T09:00Z", "2026-01-15T09:00Z"]),
    ("0 9 * * MON-THU", ["2026-01-01T09:00Z", "2026-01-05T09:00Z", "2026-01-06T09:00Z"]),
    ("0 9 * * sun-thu", ["2026-01-01T09:00Z", "2026-01-04T09:00Z", "2026-01-05T09:00Z"]),
    ("0 9 * * THU#2", ["2026-01-08T09:00Z", "2026-02-12T09:00Z", "2026-03-12T09:00Z"]),
    ("0 9 * * Sat-Sun", ["2026-01-03T09:00Z", "2026-01-04T09:00Z", "2026-01-10T09:00Z"]),
    ("0 9 * * Mon-Sun", ["2026-01-01T09:00Z", "2026-01-02T09:00Z", "2026-01-03T09:00Z"]),
    ("0 9 * * 5-7", ["2026-01-02T09:00Z", "2026-01-03T09:00Z", "2026-01-04T09:00Z"]),
    ("0 0 * * L5", ["2026-01-30T00:00Z", "2026-02-27T00:00Z", "2026-03-27T00:00Z"]),
    ("0 0 * * 5L", ["2026-01-30T00:00Z", "2026-02-27T00:00Z", "2026-03-27T00:00Z"]),
    ("0 0 29-L * *", ["2026-01-29T00:00Z", "2026-01-30T00:00Z", "2026-01-31T00:00Z", "2026-03-29T00:00Z"]),
    ("0 0 LW * *", ["2026-01-30T00:00Z", "2026-02-27T00:00Z", "2026-03-31T00:00Z"]),
    # Vixie: a day field starting with * makes the day fields AND: Saturdays that are odd days.
    ("0 16 */2 * sat", ["2026-01-03T16:00Z", "2026-01-17T16:00Z", "2026-01-31T16:00Z", "2026-02-07T16:00Z"]),
    # Without the *, either matches (OR).
    ("0 16 1-31/2 * sat", ["2026-01-01T16:00Z", "2026-01-03T16:00Z", "2026-01-05T16:00Z", "2026-01-07T16:00Z"]),
    # A one-value range with a step is that value (cronsim alone reads 0-0/2 as every other hour).
    ("0 0-0/2 * * *", ["2026-01-02T00:00Z", "2026-01-03T00:00Z"]),
]


@pytest.mark.parametrize(("cron", "expected"), ACCEPTED)
def test_cron_spellings_fire_as_cronie_and_croniter_read_them(cron, expected):
    assert schedule.validate_cron(cron) == cron
    assert fires(cron, "UTC", "2026-01-01T00:00Z", len(expected)) == expected


def test_a_thursday_job_is_accepted_through_the_api(cast):
    before = counts()
    body = propose_body(cast, definition=cast.definition(cron="0 9 * * MON-THU"))
    response = client_for(cast.author).post("/api/v1/change-requests/", body, format="json")
    assert response.status_code == 201, response.content
    assert counts()["change_requests"] == before["change_requests"] + 1


# --- refusals: 400 naming the field, the offending part and what to write instead ---

REFUSED = [
    ("0 0 * * MON-FRI#1", "day-of-week 'MON-FRI#1': # takes one day; write MON#1,TUE#1,WED#1,THU#1,FRI#1"),
    ("0 0 * Nov-Mar *", "month 'Nov-Mar': a range cannot wrap around; write NOV-DEC,JAN-MAR"),
    ("0 22-2 * * *", "hour '22-2': a range cannot wrap around; write 22-23,0-2"),
    ("0 0 * * FRI-TUE", "day-of-week 'FRI-TUE': a range cannot wrap around; write FRI-SUN,MON-TUE"),
    ("0 0 L/2 * *", "day-of-month 'L/2': a step after L is not supported; write L, or 1-L/2"),
    ("0 0 LW/3 * *", "day-of-month 'LW/3': a step after LW is not supported"),
    ("0 0 15W * *", "day-of-month '15W': the nearest weekday (W) is not supported"),
    ("0 0 L-2 * *", "day-of-month 'L-2': L-N (days before the last) is not supported"),
    ("0 0 * * L", "day-of-week 'L': write 5L or L5 for the last Friday"),
    ("0 0 ? * MON", "day-of-month '?': write * (any value)"),
    ("61 * * * *", "minute '61': the minute takes 0-59"),
    ("0 0 * * FUN", "day-of-week 'FUN': the day-of-week takes 0-7 or SUN-SAT"),
    ("0 0 */100 * MON#4", "never fires: no day is both day-of-month '*/100' and day-of-week 'MON#4'"),
    ("0 0 */100 * MON#4", "Write day-of-month '1-31/100' to fire on either"),
    ("0 0 31 2 *", "never fires: day-of-month '31' does not occur in month '2'"),
    ("0 0 31 4,6,9,11 *", "never fires: day-of-month '31' does not occur in month '4,6,9,11'"),
    ("0 0 30-L 2 *", "never fires"),
    ("0 0 * * " + ",".join(["1"] * 60), "at most 120 are allowed"),
]


@pytest.mark.parametrize(("cron", "fragment"), REFUSED)
def test_refused_expressions_say_what_to_write_instead(cron, fragment):
    with pytest.raises(schedule.ScheduleError) as info:
        schedule.validate_cron(cron)
    assert fragment in str(info.value)
    assert info.value.field == "cron"


@pytest.mark.parametrize(("cron", "fragment"), REFUSED)
def test_preview_api_refuses_them_with_400_on_cron(cast, cron, fragment):
    client = APIClient()
    client.force_authenticate(cast.viewer)
    response = client.get(PREVIEW, {"cron": cron, "tz": "UTC"})
    assert response.status_code == 400
    assert fragment in response.json()["cron"][0]


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("cron", "0 0 */100 * MON#4", "never fires"),
        ("cron", "0 0 L/2 * *", "a step after L is not supported"),
        ("cron", "0 0 * * MON-FRI#1", "write MON#1,TUE#1"),
        ("timezone", "localtime", "depends on the server's configuration"),
        ("timezone", "posixrules", "depends on the server's configuration"),
    ],
)
def test_job_definitions_refuse_them_with_400_naming_the_field_and_write_nothing(cast, field, value, fragment):
    body = propose_body(cast, definition=cast.definition(**{field: value}))
    before = counts()
    response = client_for(cast.author).post("/api/v1/change-requests/", body, format="json")
    assert response.status_code == 400, response.content
    assert fragment in " ".join(response.json()[field])
    assert counts() == before


def test_preview_refuses_a_host_dependent_zone(cast):
    client = APIClient()
    client.force_authenticate(cast.viewer)
    response = client.get(PREVIEW, {"cron": "0 0 * * *", "tz": "localtime"})
    assert response.status_code == 400
    assert "depends on the server's configuration" in response.json()["tz"][0]


def test_schedules_stored_before_the_refusals_still_evaluate_as_they_did():
    """A job saved with L/2, a never-firing expression or localtime must not stop the scheduler's tick."""
    after = utc("2026-01-01T00:00Z")
    assert schedule.next_n("0 0 L/2 * *", "UTC", after, 2) == schedule.next_n("0 0 L * *", "UTC", after, 2)
    assert schedule.next_after("0 0 */100 * MON#4", "UTC", after) is None
    assert schedule.next_after("0 0 * * *", "localtime", after) is not None


# --- bug 3: the ends of the calendar ---

ENDS = [
    ("0 0 1 1 *", "UTC", datetime(9999, 6, 1, tzinfo=UTC), []),
    ("0 0 1 1 *", "Pacific/Kiritimati", datetime(9998, 6, 1, tzinfo=UTC), ["9998-12-31T10:00:00Z"]),
    ("0 0 * * *", "America/Los_Angeles", datetime(9999, 12, 31, 12, tzinfo=UTC), []),
    ("* * * * *", "Pacific/Kiritimati", datetime(9999, 12, 31, 9, 58, tzinfo=UTC), ["9999-12-31T09:59:00Z"]),
    ("30 2 * * *", "Europe/Berlin", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), []),
    ("0 0 * * *", "America/New_York", datetime(1, 1, 1, tzinfo=UTC), ["0001-01-02T04:56:02Z", "0001-01-03T04:56:02Z"]),
    ("0 12 * * *", "Asia/Tokyo", datetime(1, 1, 1, tzinfo=UTC), ["0001-01-01T02:41:01Z", "0001-01-02T02:41:01Z"]),
]


@pytest.mark.parametrize(("cron", "tz", "after", "expected"), ENDS)
def test_instants_near_the_ends_of_the_calendar_give_the_fires_that_exist(cron, tz, after, expected):
    assert [schedule.isoz(f) for f in schedule.next_n(cron, tz, after, 2)] == expected


def test_preview_api_near_year_10000_answers_an_empty_list_not_500(cast):
    client = APIClient()
    client.force_authenticate(cast.viewer)
    response = client.get(PREVIEW, {"cron": "0 0 1 1 *", "tz": "UTC", "after": "9999-06-01T00:00:00Z"})
    assert response.status_code == 200 and response.json() == []
    response = client.get(PREVIEW, {"cron": "0 0 * * *", "tz": "Pacific/Kiritimati", "after": "9999-12-31T23:00:00Z"})
    assert response.status_code == 200 and response.json() == []


@pytest.mark.parametrize("after", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00"])
def test_preview_api_refuses_an_instant_outside_the_calendar_in_utc(cast, after):
    client = APIClient()
    client.force_authenticate(cast.viewer)
    response = client.get(PREVIEW, {"cron": "0 0 1 1 *", "tz": "UTC", "after": after})
    assert response.status_code == 400
    assert "Must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z" in response.json()["after"][0]


def test_cli_near_year_10000_prints_no_fires_and_no_traceback():
    out = StringIO()
    call_command(
        "schedule_preview", "--cron", "0 0 1 1 *", "--tz", "UTC", "--after", "9999-06-01T00:00:00Z", stdout=out
    )
    assert "0 fire(s)" in out.getvalue()
    with pytest.raises(CommandError, match="--after: Must be between"):
        call_command("schedule_preview", "--cron", "0 0 1 1 *", "--tz", "UTC", "--after", "9999-12-31T23:00-05:00")


def test_cli_refusal_from_the_shell_is_one_line_without_traceback():
    done = subprocess.run(
        [sys.executable, "manage.py", "schedule_preview", "--cron", "0 0 */100 * MON#4", "--tz", "UTC"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0 and "never fires" in done.stderr and "Traceback" not in done.stderr


# --- bad input of any shape: a ScheduleError naming a field, never anything else ---

CRON_ALPHABET = st.sampled_from(list("0123456789*/-,#LWHh?()ADEFJMNOSTUVRY") + [" ", "  ", "THU", "MON", "SUN", "\t"])
CRON_TEXT = st.one_of(st.text(max_size=40), st.lists(CRON_ALPHABET, max_size=30).map("".join))
INSTANTS = st.datetimes(timezones=st.sampled_from([UTC, schedule.zone("Pacific/Kiritimati"), schedule.zone("America/Adak")]))  # fmt: skip
SOME_ZONES = ["UTC", "Australia/Lord_Howe", "Pacific/Chatham", "Pacific/Kiritimati", "America/Adak", "Europe/Berlin"]


@settings(
    max_examples=600, derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(cron=CRON_TEXT, tz=st.one_of(st.sampled_from(SOME_ZONES), st.text(max_size=20)), after=INSTANTS)
def test_any_string_and_instant_give_fires_or_a_schedule_error_naming_a_field(cron, tz, after):
    try:
        schedule.validate_cron(cron)
        schedule.validate_zone(tz)
    except schedule.ScheduleError as exc:
        assert exc.field in {"cron", "timezone"} and str(exc)
        return
    got = schedule.next_n(cron, tz, after, 3, seed="hypothesis")
    if after.astimezone(UTC).year < 9900:
        assert got, (cron, tz, after)  # it validated, so it fires, unless the calendar ends first
    assert got == sorted(set(got)) and all(f > after for f in got)


@settings(max_examples=60, derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(cron=CRON_TEXT, after=st.one_of(st.none(), st.text(max_size=30), INSTANTS.map(lambda d: d.isoformat())))
def test_preview_api_answers_200_or_400_for_any_string(cast, cron, after):
    client = APIClient()
    client.force_authenticate(cast.viewer)
    params = {"cron": cron, "tz": "Australia/Lord_Howe"}
    if after is not None:
        params["after"] = after
    response = client.get(PREVIEW, params)
    assert response.status_code in (200, 400), response.content
