"""SQLite as Governor configures it (governance.settings.sqlite_database: WAL, IMMEDIATE
transactions, a busy timeout): concurrent writers, each with its own Django connection to a real
file, queue for the write lock instead of failing with "database is locked", and a writer that
waits longer than its timeout does fail, leaving nothing half-written."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import OperationalError
from django.db.utils import ConnectionHandler

from governor.settings import sqlite_database


def _connections(path, timeout: float | None = None) -> ConnectionHandler:
    settings = sqlite_database(str(path))
    if timeout is not None:
        settings["OPTIONS"] = {**settings["OPTIONS"], "timeout": timeout}
    return ConnectionHandler({"default": settings})


def _write(conn, sql: str, params=()) -> None:
    """One transaction as ``transaction.atomic`` opens it: read, then write (a lock upgrade)."""
    conn.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM t")
            cursor.execute(sql, params)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.set_autocommit(True)


@pytest.fixture(autouse=True)
def _own_connections(django_db_blocker):
    """These connections are the test's own, to its own file, not the test database."""
    with django_db_blocker.unblock():
        yield


@pytest.fixture
def database(tmp_path):
    path = tmp_path / "writers.sqlite3"
    conn = _connections(path)["default"]
    with conn.cursor() as cursor:
        cursor.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, writer TEXT)")
    conn.close()
    return path


def test_concurrent_writers_all_get_through(database):
    """Four threads, each with its own connection, 150 read-then-write transactions each: none fails."""
    handler = _connections(database)
    errors: list[BaseException] = []

    def write(name: str) -> None:
        conn = handler["default"]  # one connection per thread
        try:
            for _ in range(150):
                _write(conn, "INSERT INTO t (writer) VALUES (%s)", [name])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=write, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    conn = _connections(database)["default"]
    with conn.cursor() as cursor:
        cursor.execute("SELECT writer, count(*) FROM t GROUP BY writer")
        assert dict(cursor.fetchall()) == {f"w{i}": 150 for i in range(4)}
    with conn.cursor() as cursor:
        assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _hold_lock(path, seconds: float, taken: threading.Event) -> threading.Thread:
    """A thread holding the write lock (a row written, not committed) for ``seconds``, then committing."""

    def hold() -> None:
        conn = _connections(path)["default"]
        conn.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
        with conn.cursor() as cursor:
            cursor.execute("INSERT INTO t (writer) VALUES ('holder')")
        taken.set()
        time.sleep(seconds)
        conn.commit()
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert taken.wait(10)
    return thread


def test_a_writer_waits_for_the_lock_and_gives_up_after_its_timeout(database):
    waiter = _connections(database, timeout=0.5)["default"]
    # Released within the timeout: the waiter gets the lock once the holder commits.
    holder = _hold_lock(database, 0.2, threading.Event())
    started = time.monotonic()
    _write(waiter, "INSERT INTO t (writer) VALUES ('waiter')")
    assert time.monotonic() - started >= 0.1, "the waiter wrote while the holder still had the lock"
    holder.join()
    # Held past the timeout: "database is locked", after the timeout and not long after it.
    holder = _hold_lock(database, 1.5, threading.Event())
    started = time.monotonic()
    with pytest.raises(OperationalError, match="database is locked"):
        _write(waiter, "INSERT INTO t (writer) VALUES ('too late')")
    assert 0.4 <= time.monotonic() - started < 1.5
    holder.join()
    with waiter.cursor() as cursor:
        cursor.execute("SELECT writer FROM t ORDER BY id")
        assert [row[0] for row in cursor.fetchall()] == ["holder", "waiter", "holder"]
