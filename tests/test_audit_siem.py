"""SIEM forwarding: syslog RFC 5424 over TCP with octet framing, and HTTP JSON, at least once."""

import json
import re
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from io import StringIO

import pytest
from django.core.management import call_command

from governance import audit
from governance.models import AuditAction, AuditEvent, SiemCursor
from governance.siem import DeliveryError, forward_once, octet_frame, parse_destination, syslog_message
from tests.vault import free_port

SYSLOG_RE = re.compile(
    rb"^<(\d+)>1 (\S+Z) (\S+) governor - (\S+) \[governor@32473 id=\"(\d+)\"[^\]]*\] \xef\xbb\xbf(\{.*\})$", re.S
)


class SyslogReceiver:
    """A real TCP syslog collector (octet-counted framing) that can be stopped and restarted on its port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[bytes] = []
        self.server = None

    def start(self) -> None:
        receiver = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                buffer = b""
                while chunk := self.request.recv(65536):
                    buffer += chunk
                while buffer:
                    length, _, rest = buffer.partition(b" ")
                    size = int(length)
                    receiver.messages.append(rest[:size])
                    buffer = rest[size:]

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ids(self) -> list[int]:
        ids = []
        for message in self.messages:
            match = SYSLOG_RE.match(message)
            assert match, message[:200]
            assert json.loads(match[6])["id"] == int(match[5])
            ids.append(int(match[5]))
        return ids


@pytest.fixture
def receiver():
    rx = SyslogReceiver(free_port())
    rx.start()
    yield rx
    try:
        rx.stop()
    except Exception:  # noqa: BLE001, S110 - already stopped by the test
        pass


def _changes(cast, n, label):
    for i in range(n):
        audit.record(AuditAction.RUN_TRIGGERED, actor=cast.operator, tenant=cast.acme, data={"i": i, "label": label})
    audit.record(AuditAction.RUN_TRIGGERED, actor=cast.globex_admin, tenant=cast.globex, data={"label": label})


def test_every_event_arrives_exactly_once_across_a_receiver_outage(cast, receiver):
    destination = parse_destination(f"syslog+tcp://127.0.0.1:{receiver.port}")
    _changes(cast, 5, "before")
    assert forward_once(destination, batch_size=3) == AuditEvent.objects.count()

    receiver.stop()
    _changes(cast, 7, "during outage")
    with pytest.raises(DeliveryError, match="ConnectionRefused"):
        forward_once(destination)
    assert SiemCursor.objects.filter(destination=destination.name).exclude(last_error="").exists()

    receiver.start()
    _changes(cast, 2, "after")
    forward_once(destination, batch_size=4)
    assert forward_once(destination) == 0  # nothing left, nothing resent

    expected = sorted(AuditEvent.objects.values_list("id", flat=True))
    assert sorted(receiver.ids()) == expected


def test_syslog_messages_follow_rfc_5424_with_octet_framing(cast):
    event = audit.record(AuditAction.LOGIN_FAILED, actor_repr='evil"] name', data={"username": "x"})
    row = {
        "id": event.pk,
        "tenant": None,
        "seq": event.seq,
        "created_at": "2026-01-01T00:00:00.000000Z",
        "actor": event.actor_repr,
        "action": event.action,
        "object_type": "",
        "object_id": "",
        "object_repr": "",
        "team": None,
        "environment": None,
        "ip": None,
        "data": event.data,
        "prev_hash": "",
        "hash": event.hash,
    }
    message = syslog_message(row, hostname="gov-1")
    assert message.startswith(b"<108>1 2026-01-01T00:00:00.000000Z gov-1 governor - auth.login_failed [governor@32473 ")
    assert b'actor="evil\\"\\] name"' in message
    framed = octet_frame(message)
    assert framed == str(len(message)).encode() + b" " + message


class _Collector(BaseHTTPRequestHandler):
    received: list[dict] = []
    fail_next = 0

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if _Collector.fail_next:
            _Collector.fail_next -= 1
            self.send_response(503)
            self.end_headers()
            return
        _Collector.received.extend(body["events"])
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_http_json_forwarding_retries_a_refused_batch(cast):
    _Collector.received, _Collector.fail_next = [], 1
    server = HTTPServer(("127.0.0.1", free_port()), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        destination = parse_destination(f"http://127.0.0.1:{server.server_port}/ingest")
        _changes(cast, 3, "http")
        with pytest.raises(DeliveryError, match="503"):
            forward_once(destination)
        forward_once(destination)
    finally:
        server.shutdown()
        server.server_close()
    ids = [event["id"] for event in _Collector.received]
    assert sorted(ids) == sorted(AuditEvent.objects.values_list("id", flat=True))
    assert len(ids) == len(set(ids))


def test_forward_audit_command_drains_once_and_reports(cast, receiver):
    _changes(cast, 2, "cmd")
    out = StringIO()
    call_command(
        "forward_audit", "--once", "--destination", f"syslog+tcp://127.0.0.1:{receiver.port}", "--json", stdout=out
    )
    summary = json.loads(out.getvalue())
    assert summary["delivered"] == AuditEvent.objects.count() and summary["errors"] == []


def test_a_bad_destination_is_refused_clearly():
    with pytest.raises(ValueError, match="syslog"):
        parse_destination("ftp://siem")
