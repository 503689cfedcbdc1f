"""HTTP jobs against a real local HTTP server: success criteria, transient failures and
Retry-After, the environment's host allow-list and the SSRF guard, also after redirects."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import ValidationError

from jobs.executor import execute_run
from jobs.models import EnvironmentExecutionPolicy, Run, RunStatus
from jobs.services import trigger_run


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def _reply(self, status: int, body: dict | None = None, headers: dict | None = None):
        payload = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        self.server.seen.append(
            {"method": self.command, "path": self.path, "body": body, "headers": dict(self.headers)}
        )
        path = self.path
        if path == "/ok":
            self._reply(200, {"ok": True, "rows": 3})
        elif path == "/missing":
            self._reply(404, {"error": "nope"})
        elif path == "/flaky":
            calls = sum(1 for r in self.server.seen if r["path"] == "/flaky")
            self._reply(503 if calls == 1 else 200, {"call": calls})
        elif path == "/busy":
            self._reply(429, {"slow": "down"}, {"Retry-After": "7"})
        elif path.startswith("/redirect?to="):
            self._reply(302, {}, {"Location": path.split("=", 1)[1]})
        else:
            self._reply(200, {"echo": body})

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._handle()

    def do_POST(self):  # noqa: N802
        self._handle()


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.seen = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def allow(cast, hosts, private=True, environment=None):
    EnvironmentExecutionPolicy.objects.update_or_create(
        environment=environment or cast.dev,
        defaults={"http_allowed_hosts": hosts, "allow_private_addresses": private},
    )


def http_job(cast, url, **http):
    return cast.make_job(
        cast.dev, kind="http", command=[], http={"url": url, "method": "GET", **http}, **http.pop("_job", {})
    )


def run_now(cast, job) -> Run:
    run = trigger_run(job, actor=cast.operator, reason="test")
    execute_run(run.pk)
    run.refresh_from_db()
    return run


def test_a_successful_request_is_recorded_with_status_and_body(cast, server):
    allow(cast, ["127.0.0.1"])
    job = http_job(cast, f"{server.base}/ok", response_schema={"type": "object", "required": ["ok"]})
    run = run_now(cast, job)
    assert run.status == RunStatus.SUCCEEDED, run.reason
    assert run.http_status == 200 and json.loads(run.output) == {"ok": True, "rows": 3}
    assert run.attempts.get().http_status == 200 and run.execution_ms > 0


def test_a_body_that_does_not_match_the_schema_fails(cast, server):
    allow(cast, ["127.0.0.1"])
    job = http_job(cast, f"{server.base}/ok", response_schema={"type": "object", "required": ["missing_key"]})
    run = run_now(cast, job)
    assert run.status == RunStatus.FAILED and "does not match the schema" in run.reason


def test_a_status_outside_the_success_list_fails_without_retry(cast, server):
    allow(cast, ["127.0.0.1"])
    job = cast.make_job(
        cast.dev, kind="http", command=[], http={"url": f"{server.base}/missing"}, retry={"max_attempts": 3}
    )
    run = run_now(cast, job)
    assert run.status == RunStatus.FAILED and run.http_status == 404 and run.attempts.count() == 1


def test_a_5xx_is_transient_and_retried(cast, server):
    allow(cast, ["127.0.0.1"])
    job = cast.make_job(
        cast.dev,
        kind="http",
        command=[],
        http={"url": f"{server.base}/flaky"},
        retry={"max_attempts": 3, "backoff_seconds": 0},
    )
    run = run_now(cast, job)
    assert run.status == RunStatus.SCHEDULED and run.http_status == 503
    Run.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED)  # the sweep's job, once the backoff passed
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and [a.http_status for a in run.attempts.all()] == [503, 200]


def test_429_honours_retry_after(cast, server):
    allow(cast, ["127.0.0.1"])
    job = cast.make_job(
        cast.dev,
        kind="http",
        command=[],
        http={"url": f"{server.base}/busy"},
        retry={"max_attempts": 2, "backoff_seconds": 0},
    )
    run = run_now(cast, job)
    assert run.status == RunStatus.SCHEDULED
    attempt = run.attempts.get()
    assert attempt.retry_delay_s == 7
    assert abs((run.next_attempt_at - attempt.finished_at) - timedelta(seconds=7)) < timedelta(seconds=1)


def test_a_connection_error_is_transient(cast, server):
    allow(cast, ["127.0.0.1"])
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    job = cast.make_job(
        cast.dev, kind="http", command=[], http={"url": f"http://127.0.0.1:{port}/ok"}, retry={"max_attempts": 2}
    )
    run = run_now(cast, job)
    assert run.status == RunStatus.SCHEDULED and "Connection error" in run.reason


def test_parameters_fill_whole_json_values_of_the_body(cast, server):
    allow(cast, ["127.0.0.1"])
    job = cast.make_job(
        cast.dev,
        kind="http",
        command=[],
        parameters={
            "schema": {"type": "object", "properties": {"n": {"type": "integer"}, "who": {"type": "string"}}},
            "values": {"dev": {"n": 5, "who": '"; DROP TABLE x; --'}},
        },
        http={
            "url": f"{server.base}/echo",
            "method": "POST",
            "body": {"count": "{n}", "who": "{who}", "fixed": "a{n}"},
        },
    )
    run = run_now(cast, job)
    assert run.status == RunStatus.SUCCEEDED, run.reason
    assert json.loads(server.seen[-1]["body"]) == {"count": 5, "who": '"; DROP TABLE x; --', "fixed": "a{n}"}


def test_a_host_off_the_allow_list_is_never_called(cast, server):
    allow(cast, ["127.0.0.1"])
    job = http_job(cast, f"{server.base}/ok")
    allow(cast, ["api.example.com"])
    run = run_now(cast, job)
    assert run.status == RunStatus.FAILED and "allow-list" in run.reason
    assert server.seen == []


def test_loopback_is_refused_unless_the_environment_allows_it(cast, server):
    allow(cast, ["127.0.0.1"], private=False)
    with pytest.raises(ValidationError) as info:
        http_job(cast, f"{server.base}/ok")
    assert "loopback" in " ".join(info.value.message_dict["http"])
    allow(cast, ["127.0.0.1"])
    job = http_job(cast, f"{server.base}/ok")
    allow(cast, ["127.0.0.1"], private=False)
    run = run_now(cast, job)
    assert run.status == RunStatus.FAILED and "loopback" in run.reason
    assert server.seen == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://10.0.0.8/",
        "http://[::1]/",
        "http://0.0.0.0/",
        "file:///etc/passwd",
        "http://user:pw@api.example.com/",
    ],
)
def test_internal_and_metadata_addresses_are_refused_at_proposal(cast, url):
    allow(cast, ["*"], private=False)
    with pytest.raises(ValidationError) as info:
        http_job(cast, url)
    assert "http" in info.value.message_dict


def test_a_redirect_to_a_wildcard_host_on_loopback_is_refused(cast, server):
    allow(cast, ["127.0.0.1", "*"])
    port = server.server_address[1]
    job = http_job(cast, f"{server.base}/redirect?to=http://localhost:{port}/ok")
    run = run_now(cast, job)
    assert run.status == RunStatus.FAILED and "loopback" in run.reason
    assert [r["path"] for r in server.seen] == [f"/redirect?to=http://localhost:{port}/ok"]


def test_a_redirect_to_the_metadata_service_is_refused(cast, server):
    allow(cast, ["127.0.0.1", "*"])
    job = http_job(cast, f"{server.base}/redirect?to=http://169.254.169.254/latest/meta-data/")
    run = run_now(cast, job)
    assert run.status == RunStatus.FAILED and "metadata" in run.reason


def test_a_redirect_off_the_allow_list_is_refused(cast, server):
    allow(cast, ["127.0.0.1"])
    job = http_job(cast, f"{server.base}/redirect?to=https://evil.example.net/")
    run = run_now(cast, job)
    assert run.status == RunStatus.FAILED and "allow-list" in run.reason


def test_an_allowed_redirect_is_followed(cast, server):
    allow(cast, ["127.0.0.1"])
    job = http_job(cast, f"{server.base}/redirect?to=/ok")
    run = run_now(cast, job)
    assert run.status == RunStatus.SUCCEEDED and [r["path"] for r in server.seen][-1] == "/ok"


@pytest.mark.parametrize(
    ("http", "field"),
    [
        ({}, "http"),
        ({"url": "http://api.example.com/", "method": "TRACE"}, "http"),
        ({"url": "http://api.example.com/", "headers": {"X": "a\r\nInjected: 1"}}, "http"),
        ({"url": "http://api.example.com/", "success_status": [999]}, "http"),
        ({"url": "http://api.example.com/", "response_schema": {"type": 12}}, "http"),
    ],
)
def test_bad_http_definitions_are_refused(cast, http, field):
    allow(cast, ["api.example.com"], private=False)
    with pytest.raises(ValidationError) as info:
        cast.make_job(cast.dev, kind="http", command=[], http=http)
    assert field in info.value.message_dict


def test_a_command_job_cannot_carry_a_request(cast):
    with pytest.raises(ValidationError) as info:
        cast.make_job(cast.dev, http={"url": "http://api.example.com/"})
    assert "http" in info.value.message_dict


def test_an_http_job_cannot_carry_secrets_it_would_never_receive(cast):
    allow(cast, ["api.example.com"], private=False)
    with pytest.raises(ValidationError) as info:
        cast.make_job(
            cast.dev,
            kind="http",
            command=[],
            http={"url": "http://api.example.com/", "method": "GET"},
            secrets={"API_TOKEN": "vault:secret/governor/acme/dev/api#token"},
        )
    assert info.value.message_dict["secrets"] == [
        "Secrets are injected into command jobs only; remove them from this http job."
    ]
