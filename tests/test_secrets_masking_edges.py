"""Secrets are masked before output is cut to head and tail, so no fragment survives at the cut."""

import pytest

from governance.secrets import MASK
from jobs.executor import OutputBuffer, execute_run
from jobs.models import Attempt, RunStatus
from jobs.services import trigger_run
from tests.vault import put_secret

SECRET = "Zq7-secret-Xv9-w4lk3r"
PY = "/usr/bin/python3"


def fragments(value: str, size: int = 4):
    return {value[i : i + size] for i in range(len(value) - size + 1)}


def assert_no_fragment(text: str, value: str = SECRET) -> None:
    leaked = sorted(f for f in fragments(value) if f in text)
    assert leaked == [], f"fragments of the secret survived: {leaked} in {text!r}"


def _fed(buffer: OutputBuffer, data: bytes, step: int) -> str:
    for i in range(0, len(data), step):
        buffer.feed(data[i : i + step])
    return buffer.text()


@pytest.mark.parametrize("step", [1, 3, 7, 64])
@pytest.mark.parametrize("offset", range(-len(SECRET), 2))
def test_a_secret_straddling_the_head_cut_leaves_no_fragment(step, offset):
    head = 32
    data = b"a" * (head + offset) + SECRET.encode() + b"b" * 200 + b"end"
    text = _fed(OutputBuffer(head, 16, [SECRET]), data, step)
    assert_no_fragment(text)
    assert "bytes omitted" in text and text.endswith("end")


@pytest.mark.parametrize("step", [1, 5, 64])
@pytest.mark.parametrize("offset", range(-len(SECRET), 2))
def test_a_secret_straddling_the_tail_cut_leaves_no_fragment(step, offset):
    tail = 24
    # The secret ends ``offset`` bytes before the tail window starts (negative: inside it).
    after = tail - offset
    data = b"a" * 100 + SECRET.encode() + b"b" * max(after, 0)
    text = _fed(OutputBuffer(16, tail, [SECRET]), data, step)
    assert_no_fragment(text)


def test_a_secret_split_across_reads_at_the_end_of_the_stream_is_still_masked():
    buffer = OutputBuffer(8, 8, [SECRET])
    buffer.feed(b"key=" + SECRET[:10].encode())
    buffer.feed(SECRET[10:].encode())
    text = buffer.text()
    assert_no_fragment(text)
    assert buffer.total == 4 + len(SECRET)


def test_without_secrets_the_buffer_keeps_output_unchanged():
    buffer = OutputBuffer(4, 4)
    assert _fed(buffer, b"0123456789", 3) == "0123\n[... 2 bytes omitted ...]\n6789"


def test_a_job_printing_its_secret_across_the_cut_stores_no_fragment(vault, cast, settings):
    settings.GOVERNOR_OUTPUT_HEAD_BYTES = 40
    settings.GOVERNOR_OUTPUT_TAIL_BYTES = 40
    put_secret(vault, "governor/acme/dev/payments/db", {"password": SECRET})
    script = (
        "import os, sys\n"
        "s = os.environ['DB_PASSWORD']\n"
        # Byte by byte, flushed, so the secret reaches the worker in several reads.
        "for part in ['h' * 30, s, 'm' * 300, s, 't' * 30]:\n"
        "    for ch in part:\n"
        "        sys.stdout.write(ch); sys.stdout.flush()\n"
    )
    job = cast.make_job(
        cast.dev,
        command=[PY, "-c", script],
        secrets={"DB_PASSWORD": "vault:secret/governor/acme/dev/payments/db#password"},
    )
    run = trigger_run(job, actor=cast.operator, reason="test")
    execute_run(run.pk)
    run.refresh_from_db()

    assert run.status == RunStatus.SUCCEEDED, run.reason
    assert run.output.startswith("h" * 30 + MASK[:10])
    assert "bytes omitted" in run.output
    assert run.output.endswith("t" * 30)
    assert run.output_bytes == 30 + len(SECRET) + 300 + len(SECRET) + 30
    assert_no_fragment(run.output)
    assert_no_fragment(Attempt.objects.get(run=run).output)
