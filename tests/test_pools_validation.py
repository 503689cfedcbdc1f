"""Pools and job priorities refuse bad input with a field error naming the problem, and save nothing."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse

from approvals.services import propose_change
from conftest import PASSWORD
from jobs.definitions import clean_definition
from jobs.models import Pool
from jobs.pools import clean_pool


def errors_of(call) -> dict:
    with pytest.raises(ValidationError) as exc:
        call()
    return exc.value.message_dict


def test_a_pool_with_negative_slots_is_a_field_error(cast):
    errors = errors_of(lambda: clean_pool({"name": "etl", "slots": -1}, tenant=cast.acme, environment=cast.prod))
    assert errors == {"slots": ["Cannot be negative (got -1)."]}


def test_reserving_more_slots_than_the_pool_has_is_a_field_error(cast):
    errors = errors_of(
        lambda: clean_pool(
            {"name": "etl", "slots": 2, "reserved_critical_slots": 3}, tenant=cast.acme, environment=cast.prod
        )
    )
    assert errors == {"reserved_critical_slots": ["Cannot reserve 3 slots for critical jobs in a pool of 2 slots."]}


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"slots": 2}, "name", "This field is required: a lower-case slug such as 'etl'."),
        ({"name": "ETL pool", "slots": 2}, "name", "'ETL pool' is not a pool name"),
        ({"name": "etl"}, "slots", "This field is required."),
        ({"name": "etl", "slots": "4"}, "slots", "Must be a whole number of slots (got '4')."),
        ({"name": "etl", "slots": True}, "slots", "Must be a whole number of slots (got True)."),
        ({"name": "etl", "slots": 4, "reserved_critical_slots": -2}, "reserved_critical_slots", "Cannot be negative"),
        ({"name": "etl", "slots": 4, "colour": "red"}, "pool", "Unknown field(s): colour."),
    ],
)
def test_each_bad_pool_field_gets_its_own_error(cast, data, field, message):
    errors = errors_of(lambda: clean_pool(data, tenant=cast.acme, environment=cast.prod))
    assert message in errors[field][0]


def test_a_pool_name_is_unique_per_environment_but_free_in_another(cast):
    Pool.objects.create(tenant=cast.acme, environment=cast.prod, name="etl", slots=2)
    errors = errors_of(lambda: clean_pool({"name": "etl", "slots": 3}, tenant=cast.acme, environment=cast.prod))
    assert errors == {"name": ["A pool named 'etl' already exists in prod."]}
    assert clean_pool({"name": "etl", "slots": 3}, tenant=cast.acme, environment=cast.staging)["slots"] == 3


def test_changing_a_pool_keeps_the_fields_left_out(cast):
    pool = Pool.objects.create(tenant=cast.acme, environment=cast.prod, name="etl", slots=4, reserved_critical_slots=1)
    cleaned = clean_pool({"slots": 6}, tenant=cast.acme, environment=cast.prod, pool=pool)
    assert cleaned == {"name": "etl", "slots": 6, "reserved_critical_slots": 1, "description": ""}
    errors = errors_of(lambda: clean_pool({"slots": 0}, tenant=cast.acme, environment=cast.prod, pool=pool))
    assert errors == {"reserved_critical_slots": ["Cannot reserve 1 slots for critical jobs in a pool of 0 slots."]}


@pytest.mark.parametrize(
    ("slots", "reserved"),
    [(-1, 0), (2, 3), (2, -1)],
)
def test_the_database_refuses_impossible_slot_counts(cast, slots, reserved):
    with pytest.raises(IntegrityError), transaction.atomic():
        Pool.objects.create(
            tenant=cast.acme, environment=cast.prod, name="etl", slots=slots, reserved_critical_slots=reserved
        )
    assert not Pool.objects.exists()


def test_a_job_naming_an_unknown_pool_is_refused_naming_the_pool(cast):
    errors = errors_of(
        lambda: clean_definition(
            cast.definition(pool="etl"), tenant=cast.acme, team=cast.payments, environment=cast.prod
        )
    )
    assert errors == {"pool": ["No pool named 'etl' in prod."]}


def test_a_pool_of_another_environment_does_not_count(cast):
    Pool.objects.create(tenant=cast.acme, environment=cast.staging, name="etl", slots=2)
    errors = errors_of(
        lambda: clean_definition(
            cast.definition(pool="etl"), tenant=cast.acme, team=cast.payments, environment=cast.prod
        )
    )
    assert errors == {"pool": ["No pool named 'etl' in prod."]}


@pytest.mark.parametrize("priority", [-1, 10, "high", 2.5, True])
def test_a_priority_outside_0_to_9_is_refused(cast, priority):
    errors = errors_of(
        lambda: clean_definition(
            cast.definition(priority=priority), tenant=cast.acme, team=cast.payments, environment=cast.dev
        )
    )
    assert list(errors) == ["priority"]
    assert "from 0 (lowest) to 9 (highest)" in errors["priority"][0]


def test_pool_and_priority_go_through_change_control_with_defaults(cast):
    Pool.objects.create(tenant=cast.acme, environment=cast.prod, name="etl", slots=2)
    job = cast.make_job(cast.prod, pool="etl", priority=8)
    assert (job.pool, job.priority) == ("etl", 8)
    assert job.history.get().change_request_id == job.change_request_id
    change = propose_change(actor=cast.author, action="update", job=job, definition={"priority": 2}, justification="x")
    assert [row["field"] for row in change.diff()] == ["priority"]
    plain = clean_definition(cast.definition(), tenant=cast.acme, team=cast.payments, environment=cast.dev)
    assert plain["pool"] == "" and plain["priority"] == 5


def test_pools_are_read_only_in_the_admin_even_for_superusers(client, cast):
    pool = Pool.objects.create(tenant=cast.acme, environment=cast.prod, name="etl", slots=2)
    client.login(username=cast.superuser.username, password=PASSWORD)
    assert client.get(reverse("admin:jobs_pool_add")).status_code == 403
    url = reverse("admin:jobs_pool_change", args=[pool.pk])
    html = client.get(url).content.decode()
    assert 'name="_save"' not in html and "change only through change requests" in html
    assert client.post(url, {"name": "etl", "slots": 99}).status_code == 403
    pool.refresh_from_db()
    assert pool.slots == 2
