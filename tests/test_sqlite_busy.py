"""How SQLite connections wait for the write lock: governance/native/governor-sqlite-busy.c.

The handler is built by the Makefile's own rule and driven with real SQLite connections
to a real file: another connection holds the write lock, and the waiter either gets it
once it is free or fails with "database is locked" when its timeout has passed.
"""

from __future__ import annotations

import ctypes
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

from governance import sqlite as busy


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> str:
    if shutil.which("cc") is None or shutil.which("make") is None:
        pytest.skip("no C compiler or make to build governor-sqlite-busy")
    path = tmp_path_factory.mktemp("sqlite-busy") / "governor-sqlite-busy.so"
    subprocess.run(["make", "-s", "-C", str(django_settings.BASE_DIR), f"SQLITE_BUSY={path}", str(path)], check=True)
    return str(path)


def _open(path, timeout: float) -> sqlite3.Connection:
    # As Django opens them: autocommit, WAL, and Python's timeout (SQLite's default handler).
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


@pytest.fixture
def database(tmp_path):
    path = tmp_path / "busy.sqlite3"
    with _open(path, 5) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, writer TEXT)")
    return path


def test_a_waiter_gets_the_lock_once_the_holder_commits(library, database):
    holder, waiter = _open(database, 5), _open(database, 5)
    assert busy.install(waiter, 5, library) is True
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t (writer) VALUES ('holder')")
    release = threading.Timer(0.2, lambda: holder.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    waiter.execute("BEGIN IMMEDIATE")
    waited = time.monotonic() - started
    waiter.execute("INSERT INTO t (writer) VALUES ('waiter')")
    waiter.execute("COMMIT")
    release.join()
    assert waited >= 0.15, "the waiter wrote while the holder still had the lock"
    assert [row[0] for row in waiter.execute("SELECT writer FROM t ORDER BY id")] == ["holder", "waiter"]


def test_the_timeout_still_ends_the_wait_with_database_is_locked(library, database):
    holder, waiter = _open(database, 5), _open(database, 5)
    assert busy.install(waiter, 0.3, library) is True
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            waiter.execute("INSERT INTO t (writer) VALUES ('waiter')")
        waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
    # It gave up after its own timeout, not at once and not after SQLite's 5 s.
    assert 0.25 <= waited < 3
    assert waiter.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    waiter.execute("INSERT INTO t (writer) VALUES ('waiter')")  # and the connection still works


def test_concurrent_writers_all_get_through(library, database):
    """Four threads, each with its own connection, 150 write transactions each: none is lost."""
    errors: list[BaseException] = []

    def write(name: str) -> None:
        try:
            conn = _open(database, 10)
            assert busy.install(conn, 10, library)
            for _ in range(150):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO t (writer) VALUES (?)", (name,))
                conn.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with _open(database, 5) as conn:
        assert dict(conn.execute("SELECT writer, count(*) FROM t GROUP BY writer")) == {f"w{i}": 150 for i in range(4)}


def test_without_the_library_the_connection_keeps_sqlites_own_wait(tmp_path, database):
    conn = _open(database, 5)
    assert busy.install(conn, 5, str(tmp_path / "missing.so")) is False
    assert busy.install(conn, 5, "") is False
    conn.execute("INSERT INTO t (writer) VALUES ('still works')")


def test_a_handle_that_is_not_the_connections_is_refused(library, database, tmp_path):
    """The pointer read from the object must name the database the connection has open."""
    set_handler, filename, _ = busy._native(library)
    conn = _open(database, 5)
    assert busy._handle(conn, filename) is not None
    other = _open(tmp_path / "other.sqlite3", 5)
    # A filename function that reports another connection's file stands for a wrong pointer.
    other_db = busy._handle(other, filename)
    assert busy._handle(conn, lambda db, name: filename(other_db, name)) is None
    # An in-memory database has no file name to check the handle by (nor another process to wait for).
    assert busy._handle(sqlite3.connect(":memory:"), filename) is None
    # Anything but a sqlite3.Connection is refused before its memory is read.
    assert busy._handle(object(), filename) is None
    assert busy.install(object(), 5, library) is False


def test_a_second_wait_within_one_statement_gets_its_own_timeout(library, database):
    """SQLite counts attempts per statement; a wait that starts with a count above 0 (long after
    the last call) is timed from its own start, not from the earlier wait's."""
    handler = ctypes.CDLL(library).governor_sqlite_busy
    handler.argtypes, handler.restype = [ctypes.c_void_p, ctypes.c_int], ctypes.c_int
    assert handler(300, 0) == 1  # a wait starts
    time.sleep(0.5)  # longer than its timeout, but the lock was taken meanwhile
    assert handler(300, 3) == 1, "a new wait, not the old one timed out"
    started = time.monotonic()
    attempts = 4
    while handler(300, attempts):
        attempts += 1
    assert 0.25 <= time.monotonic() - started < 3


def test_huge_or_odd_timeouts_are_taken_as_sqlite_takes_them(library, database):
    conn = _open(database, 5)
    assert busy.install(conn, float("inf"), library) is True
    assert busy.install(conn, float("nan"), library) is True
    assert busy.install(conn, -1, library) is True
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        holder = _open(database, 5)
        holder.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("INSERT INTO t (writer) VALUES ('no wait at all')")
        finally:
            holder.execute("ROLLBACK")


@pytest.mark.django_db
def test_djangos_sqlite_connections_get_the_handler():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only: PostgreSQL has no file lock to wait for")
    if not Path(django_settings.GOVERNOR_SQLITE_BUSY_HANDLER).is_file():
        pytest.skip("governor-sqlite-busy is not built (make install)")
    connection.ensure_connection()
    assert connection.governor_busy_handler is True
