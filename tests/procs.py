"""Start Governor's own commands (scheduler, workers, ``check``) as real subprocesses.

The children use the test database the test itself sees, so what they write is visible to
the test and what the test commits is visible to them: use them from transactional tests
(``tcast``), and stop them before the database is flushed (request them after ``tcast``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

ROOT = Path(settings.BASE_DIR)


def wait_until(predicate, timeout: float, what: str):
    """Poll ``predicate`` every 0.1 s until it returns something true (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def database_url() -> str:
    """A DATABASE_URL naming the database this test process is connected to right now."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        path = Path(db["NAME"])
        if str(path) == ":memory:" or "mode=memory" in str(path):
            raise RuntimeError("an in-memory SQLite database cannot be shared with subprocesses")
        return f"sqlite:///{path.resolve()}"
    if db["ENGINE"] == "django.db.backends.postgresql":
        credentials = quote(db["USER"] or "", safe="")
        if db["PASSWORD"]:
            credentials += ":" + quote(db["PASSWORD"], safe="")
        host = db["HOST"] or "localhost"
        port = f":{db['PORT']}" if db["PORT"] else ""
        return f"postgres://{credentials}@{host}{port}/{quote(db['NAME'], safe='')}"
    raise RuntimeError(f"no DATABASE_URL form for {db['ENGINE']}")


def django_env(**extra: str) -> dict[str, str]:
    """The environment of a child: ours, pointed at the test database."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="governor.settings",
        DATABASE_URL=database_url(),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Process:
    """A child process leading its own process group, with its output in a file."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = Path(log_dir) / f"{name}.log"
        self.started = time.monotonic()
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own group, so stop() also reaches the workers a cluster forks.
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30) -> float:
        """Wait until ``text`` appears in the output; return the seconds since start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.05)
        raise AssertionError(f"{self.name} did not print {text!r} within {timeout}s:\n{self.output()}")

    def stop(self, grace: float = 10) -> int | None:
        """SIGTERM, then SIGKILL to the whole group if it has not stopped within ``grace``."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    pass
            # Whatever is left of the group (a cluster's workers) goes too.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait(10)
        finally:
            self._log.close()
        return self.proc.returncode


def manage(name: str, *args: str, env: dict[str, str], log_dir: Path) -> Process:
    """Start ``python manage.py <args>`` as ``name``."""
    return Process(name, [sys.executable, str(ROOT / "manage.py"), *args], env=env, log_dir=log_dir)


def run_manage(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``python manage.py <args>`` to completion, output captured as text."""
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
