"""Command jobs run sandboxed: parameters as whole argv items, a fresh directory, an
allow-listed environment, resource limits, a uid of the run's own and an executable allow-list."""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.executor import execute_run
from jobs.models import Run, RunStatus, TenantExecutionPolicy
from jobs.services import trigger_run

PY = "/usr/bin/python3"
SHOW_ARGV = "import json, os, sys; print(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}))"


def param_job(cast, value_schema=None, values=None, command=None, **overrides):
    schema = {"type": "object", "properties": {"value": value_schema or {"type": "string"}}, "required": ["value"]}
    return cast.make_job(
        cast.dev,
        command=command or [PY, "-c", SHOW_ARGV, "{value}"],
        parameters={"schema": schema, "values": values or {"dev": {"value": "hello"}}},
        **overrides,
    )


def run_now(cast, job) -> Run:
    run = trigger_run(job, actor=cast.operator, reason="test")
    execute_run(run.pk)
    run.refresh_from_db()
    return run


def seen(run: Run) -> dict:
    return json.loads(run.output.strip().splitlines()[-1])


def run_with_value(cast, job, value) -> Run:
    """A run whose snapshot carries ``value`` for the dev environment (as an approved change would)."""
    definition = job.definition()
    definition["parameters"] = {**definition["parameters"], "values": {"dev": {"value": value}}}
    scheduled_for = timezone.now() + timedelta(microseconds=Run.objects.count())
    run = cast.queued_run(job, scheduled_for=scheduled_for, definition=definition)
    execute_run(run.pk)
    run.refresh_from_db()
    return run


INJECTIONS = [
    "; touch {canary}",
    "$(touch {canary})",
    "`touch {canary}`",
    "x\ntouch {canary}",
    "-rf",
    "--output={canary}",
    "&& touch {canary} #",
    "| tee {canary}",
    "' ; touch {canary} ; '",
]


@pytest.mark.parametrize("template", INJECTIONS)
def test_injection_attempts_stay_one_argv_item_and_touch_nothing(cast, tmp_path, template):
    canary = f"/tmp/governor-canary-{uuid.uuid4().hex}"
    payload = template.format(canary=canary)
    job = param_job(cast, values={"dev": {"value": payload}})
    run = run_now(cast, job)
    assert run.status == RunStatus.SUCCEEDED, run.reason
    assert seen(run)["argv"] == [payload]
    assert seen(run)["env"]["GOVERNOR_PARAM_VALUE"] == payload
    assert not os.path.exists(canary)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=60))
def test_any_parameter_value_arrives_as_exactly_one_argv_item(cast, value):
    job = getattr(cast, "_hyp_job", None) or param_job(cast)
    cast._hyp_job = job
    run = run_with_value(cast, job, value)
    assert run.status == RunStatus.SUCCEEDED, run.reason
    assert seen(run)["argv"] == [value]


def test_a_placeholder_inside_a_larger_argument_is_refused(cast):
    with pytest.raises(ValidationError) as info:
        param_job(cast, command=[PY, "-c", SHOW_ARGV, "--target={value}"])
    assert "whole argv item" in " ".join(info.value.message_dict["command"])


def test_an_undeclared_placeholder_is_refused(cast):
    with pytest.raises(ValidationError) as info:
        param_job(cast, command=[PY, "-c", SHOW_ARGV, "{other}"])
    assert "not a declared parameter" in " ".join(info.value.message_dict["command"])


def test_values_of_every_environment_are_validated_before_submit(cast):
    with pytest.raises(ValidationError) as info:
        param_job(
            cast,
            value_schema={"type": "integer", "minimum": 1},
            values={"dev": {"value": 3}, "prod": {"value": "three"}, "mars": {"value": 1}},
        )
    messages = " ".join(info.value.message_dict["parameters"])
    assert "values.prod" in messages and "'mars' is not an environment" in messages


def test_a_missing_value_for_the_jobs_environment_is_refused(cast):
    with pytest.raises(ValidationError) as info:
        param_job(cast, values={"prod": {"value": "x"}})
    assert "values.dev" in " ".join(info.value.message_dict["parameters"])


def test_values_are_validated_again_before_the_run_starts(cast):
    job = param_job(cast, value_schema={"type": "string", "maxLength": 5})
    run = run_with_value(cast, job, "far too long")
    assert run.status == RunStatus.FAILED
    assert "Parameters invalid" in run.reason and run.pid is None


def test_typed_values_render_as_plain_items(cast):
    job = param_job(cast, value_schema={"type": "boolean"}, values={"dev": {"value": True}})
    assert seen(run_now(cast, job))["argv"] == ["true"]


def test_each_run_gets_a_fresh_working_directory_that_is_removed_afterwards(cast, settings):
    name = f"left-behind-{uuid.uuid4().hex}"
    script = f"import os; open({name!r}, 'w').write('x'); print(os.getcwd(), len(os.listdir('.')))"
    job = cast.make_job(cast.dev, command=[PY, "-c", script])
    first, second = run_now(cast, job), run_now(cast, job)
    assert first.output.split() == second.output.split() == ["/work", "1"]  # the first run's file is gone
    # On the host, neither run's directory is left where runs live (moved to the root-only trash at once).
    root = settings.GOVERNOR_RUN_ROOT
    assert not [d for d in os.listdir(root) if os.path.exists(os.path.join(root, d, "work", name))]


def test_the_environment_is_allow_listed_and_carries_the_run_identity(cast, monkeypatch):
    monkeypatch.setenv("DATABASE_PASSWORD", "hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nope")
    job = param_job(cast)
    run = run_now(cast, job)
    env = seen(run)["env"]
    assert "DATABASE_PASSWORD" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["GOVERNOR_RUN_ID"] == str(run.pk)
    assert env["GOVERNOR_RUN_KEY"] == run.key
    assert env["GOVERNOR_ATTEMPT"] == "1"
    assert env["GOVERNOR_SCHEDULED_FOR"].endswith("Z")
    assert env["GOVERNOR_HEARTBEAT_URL"].endswith(f"/hb/{job.ping_token}")
    assert not set(env) - {
        "PATH",
        "LANG",
        "LC_ALL",
        "TZ",
        "HOME",
        "TMPDIR",
        "PWD",  # bwrap's, after --chdir /work
        "LC_CTYPE",
        "GOVERNOR_RUN_ID",
        "GOVERNOR_RUN_KEY",
        "GOVERNOR_ATTEMPT",
        "GOVERNOR_SCHEDULED_FOR",
        "GOVERNOR_JOB_NAME",
        "GOVERNOR_HEARTBEAT_URL",
        "GOVERNOR_PARAM_VALUE",
    }


def test_a_job_runs_as_a_uid_of_its_own_from_the_configured_range_never_root(cast, settings):
    settings.GOVERNOR_SANDBOX_UIDS = "1879050000-1879050009"
    job = cast.make_job(cast.dev, command=["/usr/bin/id"])
    run = run_now(cast, job)
    assert run.status == RunStatus.SUCCEEDED, run.reason + run.output
    uid = int(run.output.split("uid=")[1].split("(")[0])
    assert 1879050000 <= uid <= 1879050009
    assert f"gid={uid}(governor-run) groups={uid}(governor-run)" in run.output
    assert "root" not in run.output


def test_file_size_limit_stops_a_runaway_writer(cast):
    job = cast.make_job(
        cast.dev, command=["/bin/dd", "if=/dev/zero", "of=big", "bs=1M", "count=3"], limits={"file_size_mb": 1}
    )
    run = run_now(cast, job)
    assert run.status == RunStatus.FAILED and run.exit_code != 0


def test_memory_limit_stops_a_greedy_process(cast):
    job = cast.make_job(cast.dev, command=[PY, "-c", "x = bytearray(300 * 1024 * 1024)"], limits={"memory_mb": 100})
    run = run_now(cast, job)
    assert run.status == RunStatus.FAILED and "MemoryError" in run.output


def test_cpu_limit_kills_a_spinning_process(cast):
    job = cast.make_job(cast.dev, command=[PY, "-c", "while True: pass"], limits={"cpu_seconds": 1})
    run = run_now(cast, job)
    assert run.status == RunStatus.FAILED, run.reason
    # tini reports a job killed by a signal the way a shell does: 128 + SIGXCPU or SIGKILL.
    assert run.exit_code in (128 + 24, 128 + 9), run.exit_code
    # The kernel enforces the limit on its own tick accounting; rusage may report a little less.
    assert run.cpu_user_s + run.cpu_sys_s >= 0.5, (run.cpu_user_s, run.cpu_sys_s)


@pytest.mark.skipif(os.geteuid() != 0, reason="process limits apply to the unprivileged run-as user")
def test_process_limit_stops_a_fork_bomb(cast):
    job = cast.make_job(
        cast.dev, command=[PY, "-c", "import os\nfor _ in range(5): os.fork() or os._exit(0)"], limits={"processes": 1}
    )
    run = run_now(cast, job)
    # The count is per user across the machine: with another process of the run-as user alive,
    # even the job's own exec is refused. Either way, nothing beyond the limit starts.
    assert run.status == RunStatus.FAILED
    assert "BlockingIOError" in run.output or "Resource temporarily unavailable" in run.output, run.output


def test_resource_use_and_overhead_are_recorded(cast):
    job = cast.make_job(cast.dev, command=[PY, "-c", "sum(range(10**6))"])
    run = run_now(cast, job)
    assert run.status == RunStatus.SUCCEEDED
    assert run.max_rss_kb > 1000 and run.cpu_user_s is not None and run.block_in is not None
    assert run.queue_wait_ms >= 0 and run.startup_ms >= 0 and run.execution_ms > 0 and run.recording_ms >= 0
    attempt = run.attempts.get()
    assert attempt.number == 1 and attempt.status == RunStatus.SUCCEEDED


def test_only_allow_listed_executables_may_be_proposed(cast):
    TenantExecutionPolicy.objects.create(tenant=cast.acme, allowed_executables=["/opt/acme/bin/*"])
    for program in ["/bin/echo", "/opt/acme/bin/../../../bin/sh", "echo"]:
        with pytest.raises(ValidationError) as info:
            cast.propose_job(
                environment=cast.dev, definition=cast.definition(command=[program, "x"]), justification="x"
            )
        assert "command" in info.value.message_dict


def test_an_executable_removed_from_the_allow_list_no_longer_starts(cast):
    job = cast.make_job(cast.dev, command=["/usr/bin/id"])
    TenantExecutionPolicy.objects.create(tenant=cast.acme, allowed_executables=["/opt/acme/bin/*"])
    run = run_now(cast, job)
    assert run.status == RunStatus.FAILED and "allow-list" in run.reason and run.pid is None


def test_the_allow_list_is_per_tenant(cast):
    TenantExecutionPolicy.objects.create(tenant=cast.globex, allowed_executables=["/opt/globex/*"])
    assert cast.make_job(cast.dev, command=["/usr/bin/id"]).command == ["/usr/bin/id"]
