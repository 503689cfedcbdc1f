"""Rollback (propose an earlier version again) and promotion (dev → staging → prod)."""

import pytest
from django.core.exceptions import ValidationError

from approvals.models import ChangeAction, ChangeStatus
from approvals.services import (
    ChangeError,
    approve_change,
    propose_change,
    propose_promotion,
    propose_rollback,
)
from governance.services import AccessDenied
from jobs.models import Job

SCHEMA = {"type": "object", "properties": {"region": {"type": "string", "enum": ["eu", "us"]}}, "required": ["region"]}


def test_any_earlier_version_can_be_proposed_again_with_a_diff_against_live(cast):
    job = cast.make_job(cast.staging, timeout_seconds=60)
    job = cast.update_job(job, timeout_seconds=120)
    job = cast.update_job(job, description="Third words.", timeout_seconds=180)
    change = propose_rollback(job, actor=cast.author, version=1, justification="v3 times out the bank")
    assert change.action == ChangeAction.UPDATE and change.base_version == 3
    assert {row["field"]: (row["before"], row["after"]) for row in change.diff()} == {
        "description": ("Third words.", "Reconcile the ledger."),
        "timeout_seconds": (180, 60),
    }
    assert change.justification.startswith("Roll back to v1: ")
    change = approve_change(change, actor=cast.approver)
    job.refresh_from_db()
    assert (job.version, job.timeout_seconds, job.description) == (4, 60, "Reconcile the ledger.")


def test_rolling_back_to_a_missing_or_live_version_is_refused(cast):
    job = cast.update_job(cast.make_job(cast.staging), timeout_seconds=120)
    with pytest.raises(ValidationError) as info:
        propose_rollback(job, actor=cast.author, version=7, justification="x")
    assert "no version 7" in info.value.message_dict["version"][0]
    with pytest.raises(ValidationError) as info:
        propose_rollback(job, actor=cast.author, version=2, justification="x")
    assert "live now" in info.value.message_dict["version"][0]
    with pytest.raises(ValidationError) as info:
        propose_rollback(job, actor=cast.author, version=1, justification="")
    assert set(info.value.message_dict) == {"justification"}
    with pytest.raises(AccessDenied):
        propose_rollback(job, actor=cast.operator, version=1, justification="x")
    assert job.change_requests.filter(status=ChangeStatus.SUBMITTED).count() == 0


def test_promotion_copies_the_job_to_the_next_environment_as_a_change_request(cast):
    dev_job = cast.make_job(cast.dev, parameters={"schema": SCHEMA, "values": {"dev": {"region": "eu"}}})
    change = propose_promotion(
        dev_job, actor=cast.author, justification="tested in dev", parameter_values={"region": "us"}
    )
    assert change.action == ChangeAction.CREATE and change.environment == cast.staging
    assert change.status == ChangeStatus.SUBMITTED
    assert change.proposed["parameters"]["values"]["staging"] == {"region": "us"}
    change = approve_change(change, actor=cast.approver)
    staging_job = Job.objects.get(environment=cast.staging)
    assert staging_job.name == dev_job.name and staging_job.parameters["values"]["staging"] == {"region": "us"}

    # Promoting again updates the job that is already there.
    dev_job = cast.update_job(dev_job, timeout_seconds=90)
    again = propose_promotion(dev_job, actor=cast.author, justification="new timeout")
    assert again.action == ChangeAction.UPDATE and again.job == staging_job
    assert [row["field"] for row in again.diff()] == ["timeout_seconds"]


def test_promotion_with_invalid_target_values_is_refused_before_review(cast):
    dev_job = cast.make_job(cast.dev, parameters={"schema": SCHEMA, "values": {"dev": {"region": "eu"}}})
    with pytest.raises(ValidationError) as info:
        propose_promotion(dev_job, actor=cast.author, justification="x", parameter_values={"region": "mars"})
    assert "values.staging" in " ".join(info.value.message_dict["parameters"])
    # No values for staging at all: the schema's required parameter is missing.
    with pytest.raises(ValidationError) as info:
        propose_promotion(dev_job, actor=cast.author, justification="x")
    assert "staging" in " ".join(info.value.message_dict["parameters"])
    assert not Job.objects.filter(environment=cast.staging).exists()
    assert dev_job.change_requests.count() == 1  # only its own creation


def test_promotion_goes_step_by_step_and_stops_at_the_last_environment(cast):
    dev_job = cast.make_job(cast.dev)
    with pytest.raises(ValidationError) as info:
        propose_promotion(dev_job, actor=cast.author, justification="skip", target=cast.prod)
    assert "after dev comes staging" in info.value.message_dict["environment"][0]
    prod_job = cast.make_job(cast.prod)
    with pytest.raises(ValidationError) as info:
        propose_promotion(prod_job, actor=cast.author, justification="x")
    assert "last environment" in info.value.message_dict["environment"][0]


def test_deleted_jobs_are_neither_rolled_back_nor_promoted(cast):
    job = cast.make_job(cast.dev)
    propose_change(actor=cast.author, action="delete", job=job, justification="retire")
    job.refresh_from_db()
    with pytest.raises(ChangeError):
        propose_rollback(job, actor=cast.author, version=1, justification="x")
    with pytest.raises(ChangeError):
        propose_promotion(job, actor=cast.author, justification="x")
