"""Real receivers for notification tests, on free loopback ports: an SMTP server (aiosmtpd) and an HTTP
receiver that checks Governor's webhook signature and counts deliveries by idempotency key. Apprise's
generic ``json://`` plugin posts to the same receiver (unsigned, on its own path)."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from collections import Counter
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

from notifications.signing import KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.vault import free_port


class SmtpSink:
    """Every message the server accepted, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)  # type: ignore[arg-type]
        return "250 Message accepted"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if address in m["X-Envelope-To"]]

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


class Receiver:
    """A webhook receiver: verifies the HMAC with ``secret``; ``by_key`` counts what it accepted."""

    def __init__(self, secret: str, port: int | None = None) -> None:
        self.secret = secret
        self.port = port or free_port()
        self.accepted: list[dict] = []
        self.refused: list[dict] = []
        self.chat: list[dict] = []
        self.delay = 0.0
        self.status = 200
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def by_key(self) -> Counter:
        return Counter(item["key"] for item in self.accepted)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.delay:
                    time.sleep(receiver.delay)
                if self.path.startswith("/chat"):
                    receiver.chat.append(json.loads(body))
                    status = 200
                elif verify(
                    receiver.secret,
                    self.headers.get(TIMESTAMP_HEADER, ""),
                    body,
                    self.headers.get(SIGNATURE_HEADER, ""),
                    now=int(self.headers.get(TIMESTAMP_HEADER, "0") or 0),
                ):
                    receiver.accepted.append({"key": self.headers[KEY_HEADER], "body": json.loads(body)})
                    status = receiver.status
                else:
                    receiver.refused.append({"headers": dict(self.headers), "body": body})
                    status = 401
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
