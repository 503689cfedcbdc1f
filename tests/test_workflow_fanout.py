"""Fan-out: a partitioned job runs one run per partition in parallel; the slot's run joins them,
and only then do its downstream steps decide."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from jobs.executor import execute_run
from jobs.models import Run, RunStatus
from jobs.services import rerun_run, trigger_run

REGIONS = ["eu", "us", "apac"]


def execute(run_id, capture):
    with capture(execute=True):
        return execute_run(run_id)


def partitioned(cast, script, name="payments.fan.load"):
    return cast.make_job(
        cast.dev, name=name, command=["/bin/sh", "-c", script, "sh", "{partition}"], partitions=REGIONS
    )


def test_a_partitioned_job_runs_each_partition_and_joins(cast, django_capture_on_commit_callbacks):
    job = partitioned(cast, 'echo "$1 $GOVERNOR_PARTITION"')
    after = cast.make_job(
        cast.dev, name="payments.fan.report", command=["/bin/true"], dependencies=[{"upstream": job.name}]
    )
    with django_capture_on_commit_callbacks(execute=True):
        parent = trigger_run(job, actor=cast.operator, reason="test")
    assert execute(parent.pk, django_capture_on_commit_callbacks) == RunStatus.RUNNING
    children = list(Run.objects.filter(parent=parent).order_by("id"))
    assert [c.partition for c in children] == REGIONS
    assert all(c.status == RunStatus.QUEUED and c.scheduled_for == parent.scheduled_for for c in children)
    for child in children[:-1]:
        execute(child.pk, django_capture_on_commit_callbacks)
    parent.refresh_from_db()
    assert parent.status == RunStatus.RUNNING and not Run.objects.filter(job=after).exists()
    execute(children[-1].pk, django_capture_on_commit_callbacks)
    parent.refresh_from_db()
    assert parent.status == RunStatus.SUCCEEDED and "All 3 partitions succeeded" in parent.reason
    assert Run.objects.get(job=after, partition="").status == RunStatus.QUEUED
    assert Run.objects.get(parent=parent, partition="us").output.strip() == "us us"


def test_a_failed_partition_fails_the_join_and_a_rerun_repeats_only_it(cast, django_capture_on_commit_callbacks):
    job = partitioned(cast, '[ "$1" != us ] || [ "$GOVERNOR_ATTEMPT" = 2 ]')
    with django_capture_on_commit_callbacks(execute=True):
        parent = trigger_run(job, actor=cast.operator, reason="test")
    execute(parent.pk, django_capture_on_commit_callbacks)
    for child in Run.objects.filter(parent=parent):
        execute(child.pk, django_capture_on_commit_callbacks)
    parent.refresh_from_db()
    assert parent.status == RunStatus.FAILED and "us (failed)" in parent.reason
    with django_capture_on_commit_callbacks(execute=True):
        rerun_run(parent, actor=cast.operator, reason="us fixed")
    execute(parent.pk, django_capture_on_commit_callbacks)
    queued = list(Run.objects.filter(parent=parent, status=RunStatus.QUEUED))
    assert [c.partition for c in queued] == ["us"]
    execute(queued[0].pk, django_capture_on_commit_callbacks)
    parent.refresh_from_db()
    assert parent.status == RunStatus.SUCCEEDED


@pytest.mark.parametrize("partitions", [["eu", "eu"], ["no spaces"], [], "eu"])
def test_bad_partition_lists_are_refused(cast, partitions):
    if partitions == []:
        with pytest.raises(ValidationError) as info:
            cast.make_job(cast.dev, command=["/bin/echo", "{partition}"], partitions=partitions)
        assert "command" in info.value.message_dict
        return
    with pytest.raises(ValidationError) as info:
        cast.make_job(cast.dev, partitions=partitions)
    assert "partitions" in info.value.message_dict
