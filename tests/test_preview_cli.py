"""manage.py schedule_preview: local and UTC instants, DST marked, JSON for machines, clear errors."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from jobs import schedule


def preview(*args):
    out = StringIO()
    call_command("schedule_preview", *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("after", "count", "policy", "expected"),
    [
        # JSON output is an array of UTC instants ending in Z.
        (
            "2026-10-24T12:00:00Z",
            "3",
            ["--overlap", "twice"],
            ["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z", "2026-10-26T01:30:00Z"],
        ),
        # The gap policy skip is honoured.
        ("2026-03-28T12:00:00Z", "1", ["--gap", "skip"], ["2026-03-30T00:30:00Z"]),
    ],
    ids=["json output is an array of utc instants ending in z", "gap skip is honoured"],
)
def test_json_output_of_a_berlin_schedule(after, count, policy, expected):
    out = preview(
        "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--after", after, "--count", count, *policy, "--json"
    )
    assert json.loads(out) == expected


def test_text_output_shows_local_and_utc_and_marks_dst():
    out = preview(
        "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--after", "2026-03-28T12:00:00+01:00", "--count", "2"
    )
    lines = out.splitlines()
    assert lines[0].startswith("2026-03-29 03:00 CEST") and "2026-03-29T01:00:00Z" in lines[0]
    assert "does not exist" in lines[0] and "offset changed from +01:00 to +02:00" in lines[0]
    assert "!" not in lines[1]
    assert lines[-1] == "2 fire(s) of '30 2 * * *' in Europe/Berlin; 1 shaped by DST."


def test_h_is_previewed_for_a_job(cast):
    job = cast.make_job(cast.dev, cron="H 2 * * *", timezone="UTC")
    out = json.loads(preview("--job", str(job.pk), "--after", "2026-01-01T00:00:00Z", "--count", "2", "--json"))
    expected = schedule.next_n("H 2 * * *", "UTC", schedule_after(), 2, seed=job.schedule_seed)
    assert out == [schedule.isoz(i) for i in expected]


def schedule_after():
    from datetime import UTC, datetime

    return datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cron", "61 2 * * *", "--tz", "UTC"], "--cron: Invalid cron expression '61 2 * * *': Bad minute"),
        (["--cron", "0 2 * * *", "--tz", "Mars/Olympus"], "--tz: Unknown time zone 'Mars/Olympus'"),
        (["--cron", "H 2 * * *", "--tz", "UTC"], "--cron: Cron expression 'H 2 * * *' uses H"),
        (["--cron", "0 2 * * *", "--tz", "UTC", "--after", "tomorrow"], "--after: Must be an ISO 8601 instant"),
        (["--cron", "0 2 * * *", "--tz", "UTC", "--after", "2026-01-01T00:00"], "--after: Must include Z"),
        (["--cron", "0 2 * * *", "--tz", "UTC", "--count", "0"], "--count: count must be between 1 and 1000"),
        (["--tz", "UTC"], "--cron is required"),
    ],
)
def test_bad_input_fails_with_the_specific_message(args, message):
    with pytest.raises(CommandError) as info:
        preview(*args)
    assert str(info.value).startswith(message)


def test_bad_input_exits_non_zero_from_the_shell():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "manage.py", "schedule_preview", "--cron", "0 25 * * *", "--tz", "UTC"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0 and "--cron: Invalid cron expression '0 25 * * *': Bad hour" in done.stderr
