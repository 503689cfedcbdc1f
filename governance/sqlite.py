"""How SQLite connections wait for the write lock (the embedded default's one writer at a time).

Python's ``sqlite3`` offers only ``timeout``, which installs SQLite's default busy handler:
it sleeps 1, 2, 5, 10 ... ms between attempts. Governor's writers (scheduler tick, django-q2's
pusher and monitor, each worker's claim and record) hold the lock for a fraction of a
millisecond, so a waiter sleeps several times longer than the lock was held. Under a burst
that idle time was the biggest part of a run's cost beyond raw django-q2 (see bench/).

``governor-sqlite-busy`` (``governance/native/``, built by ``make install``) retries every
few tens of microseconds instead, and gives up after the same ``timeout``. Python 3.11 has no
API to set a busy handler, so :func:`install` calls ``sqlite3_busy_handler`` through
``ctypes`` on the connection's ``sqlite3 *``, which CPython keeps as the first field of its
``sqlite3.Connection`` object (3.8 to 3.13). It checks that pointer before using it: the
database file SQLite reports for it must be the one the connection says it has open. On any
other interpreter, without the library, or if the check fails, the connection keeps SQLite's
own handler: slower under contention, never wrong.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sqlite3
import sys
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

# Interpreters whose sqlite3.Connection starts with `sqlite3 *db` right after the object header.
_KNOWN_LAYOUT = sys.implementation.name == "cpython" and (3, 8) <= sys.version_info[:2] <= (3, 13)


@functools.cache
def _native(library: str):
    """(sqlite3_busy_handler, sqlite3_db_filename, the handler) or None when unavailable."""
    if not _KNOWN_LAYOUT or not library or not Path(library).is_file():
        return None
    try:
        import _sqlite3

        # The module's handle also finds the libsqlite3 it links (or embeds).
        sqlite = ctypes.CDLL(_sqlite3.__file__)
        set_handler = sqlite.sqlite3_busy_handler
        set_handler.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        set_handler.restype = ctypes.c_int
        filename = sqlite.sqlite3_db_filename
        filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        filename.restype = ctypes.c_char_p
        handler = ctypes.cast(ctypes.CDLL(library).governor_sqlite_busy, ctypes.c_void_p)
    except (OSError, AttributeError) as exc:
        logger.warning("SQLite busy handler %s not loaded (%s): SQLite's default waits apply", library, exc)
        return None
    return set_handler, filename, handler


def _main_file(connection: sqlite3.Connection) -> str | None:
    """The file of the connection's main database; empty for an in-memory one."""
    return next((row[2] for row in connection.execute("PRAGMA database_list") if row[1] == "main"), None)


def _handle(connection: sqlite3.Connection, filename) -> int | None:
    """The connection's ``sqlite3 *``, once SQLite confirms it is this connection's database."""
    if not isinstance(connection, sqlite3.Connection):
        return None  # only a real sqlite3.Connection has that layout
    db = ctypes.c_void_p.from_address(id(connection) + object.__basicsize__).value
    if not db:
        return None
    opened = _main_file(connection)
    if not opened:
        return None  # in memory: no other process to wait for, and no file name to check the handle by
    reported = filename(db, b"main")
    if (reported or b"").decode(errors="replace") != opened:
        return None
    return db


def install(connection: sqlite3.Connection, timeout_s: float, library: str | None = None) -> bool:
    """Make ``connection`` wait for a locked database with Governor's handler; True if it does.

    ``timeout_s`` keeps its meaning: after that long the statement fails with
    "database is locked". Returns False (and changes nothing) when the handler is unavailable.
    """
    native = _native(settings.GOVERNOR_SQLITE_BUSY_HANDLER if library is None else library)
    if native is None:
        return False
    set_handler, filename, handler = native
    db = _handle(connection, filename)
    if db is None:
        if isinstance(connection, sqlite3.Connection) and not _main_file(connection):
            return False  # in memory: nothing to wait for
        logger.warning("SQLite busy handler not installed: the connection's handle did not check out")
        return False
    # Milliseconds as a C int, as sqlite3_busy_timeout takes them: capped at about 24 days.
    ms = float(timeout_s) * 1000
    timeout_ms = 0 if ms != ms else int(min(max(ms, 0), 2**31 - 1))  # NaN: no wait
    return set_handler(db, handler, timeout_ms) == 0


def on_connection_created(sender, connection, **kwargs) -> None:
    """``connection_created`` receiver: every SQLite connection Django opens gets the handler."""
    if connection.vendor == "sqlite":
        timeout = float(connection.settings_dict["OPTIONS"].get("timeout", 5))
        # Kept on the wrapper so a check (or a test) can tell which handler this connection has.
        connection.governor_busy_handler = install(connection.connection, timeout)
