"""Per-run resource figures are the job's own: real sandboxed runs of /bin/echo, a 150 MB allocation,
a CPU burner and a disk writer (docs/execution.md, "Resource figures")."""

from __future__ import annotations

from jobs.executor import execute_run
from jobs.models import Run, RunStatus
from jobs.services import trigger_run
from tests.api_support import client_for

PY = "/usr/bin/python3"


def run_now(cast, job) -> Run:
    run = trigger_run(job, actor=cast.operator, reason="test")
    execute_run(run.pk)
    run.refresh_from_db()
    return run


def test_echo_records_a_max_rss_of_a_few_mb_not_the_workers(cast):
    run = run_now(cast, cast.make_job(cast.dev, command=["/bin/echo", "hello"]))
    assert run.status == RunStatus.SUCCEEDED and run.output.strip() == "hello"
    # The worker running the test is far larger than this; echo, tini and bwrap need a few MB.
    assert run.max_rss_kb is not None and 100 < run.max_rss_kb < 8 * 1024, run.max_rss_kb
    assert run.cpu_user_s is not None and run.cpu_user_s + run.cpu_sys_s < 0.5


def test_a_job_allocating_150_mb_records_at_least_150_mb(cast):
    code = "x = bytearray(150 * 1024 * 1024); x[::4096] = b'1' * len(x[::4096])"
    run = run_now(cast, cast.make_job(cast.dev, command=[PY, "-c", code], limits={"memory_mb": 1024}))
    assert run.status == RunStatus.SUCCEEDED, run.output
    assert run.max_rss_kb >= 150 * 1024, run.max_rss_kb
    assert run.max_rss_kb < 250 * 1024, run.max_rss_kb


def test_a_cpu_burning_job_records_its_cpu_time(cast):
    code = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass"
    run = run_now(cast, cast.make_job(cast.dev, command=[PY, "-c", code]))
    assert run.status == RunStatus.SUCCEEDED, run.output
    assert 0.9 <= run.cpu_user_s + run.cpu_sys_s < 3, (run.cpu_user_s, run.cpu_sys_s)


def test_block_output_is_recorded_for_a_job_that_writes_to_disk(cast):
    command = ["/bin/dd", "if=/dev/zero", "of=big", "bs=1M", "count=20", "oflag=direct"]
    run = run_now(cast, cast.make_job(cast.dev, command=command, limits={"file_size_mb": 100}))
    assert run.status == RunStatus.SUCCEEDED, run.output
    assert run.block_in is not None
    # 20 MiB written past the page cache: 40960 blocks of 512 bytes.
    assert run.block_out >= 20 * 2048, run.block_out


def test_the_run_page_and_the_api_show_cpu_time_max_rss_and_io(cast, client):
    run = run_now(cast, cast.make_job(cast.dev, command=["/bin/echo", "hi"]))
    client.force_login(cast.viewer)
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert f"{run.cpu_user_s:.2f} s user" in page
    assert f"({run.max_rss_kb} KiB)" in page or f"{run.max_rss_kb} KiB" in page
    assert f"{run.block_in} read, {run.block_out} written" in page
    body = client_for(cast.viewer).get(f"/api/v1/runs/{run.pk}/").json()
    for field in ("cpu_user_s", "cpu_sys_s", "max_rss_kb", "block_in", "block_out"):
        assert body[field] == getattr(run, field), field
    assert body["max_rss_kb"] < 8 * 1024


def test_a_timed_out_run_still_records_its_own_figures(cast):
    job = cast.make_job(cast.dev, command=["/usr/bin/sleep", "30"], timeout_seconds=1)
    run = run_now(cast, job)
    assert run.status == RunStatus.TIMED_OUT, run.status
    # The job is killed, but bwrap and GNU time exit on their own and time reports the sandbox's usage.
    assert run.max_rss_kb is not None and run.max_rss_kb < 8 * 1024, run.max_rss_kb
