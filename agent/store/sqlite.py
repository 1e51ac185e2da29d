"""SQLite under the incident store: one file, WAL journal, shared by replicas on one host.

Every write transaction starts with ``BEGIN IMMEDIATE``, which takes the file's single
write lock: writers on the same file, in any process, run one after the other, and that
lock is also the fleet-wide claim lock. ``synchronous=FULL`` makes a committed claim
survive a power cut, so an action is never sent twice because the disk forgot it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from agent.errors import NoStore, StoreError
from agent.host import current_user
from agent.store.sql import Cursor

BUSY_TIMEOUT_MS = 15000


def _wal(db: sqlite3.Connection) -> None:
    """Switch the file to WAL (it stays so). Two agents creating a new file at once race
    for the switch, and SQLite answers the loser "database is locked" at once, without its
    busy handler: so the switch is tried again for as long as the busy timeout allows."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal":
                return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


class SQLiteDialect:
    """A connection to one SQLite file."""

    name = "sqlite"
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT"

    def __init__(self, path: Path, *, create: bool = True, read_only: bool = False) -> None:
        self.where = str(path)
        if not create:
            _must_exist(path)
        try:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            # mode=rw: a store that is only read or answered is never created by opening it
            target = path if create else f"file:{quote(str(path))}?mode=rw"
            self._db = sqlite3.connect(
                target, isolation_level=None, check_same_thread=False, uri=not create
            )
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            _wal(self._db)
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            if read_only:
                # Every write on this connection (a transaction too) is refused by SQLite.
                self._db.execute("PRAGMA query_only=ON")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open incident store {path}: {exc}") from exc

    def sql(self, text: str) -> str:
        """SQLite takes ``?`` markers as they are."""
        return text

    @contextmanager
    def transaction(self, *, locked: bool) -> Iterator[Cursor]:
        """``BEGIN IMMEDIATE``: every write already holds the file's one write lock."""
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            self._db.rollback()
            raise
        cur.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[Cursor]:
        """A cursor in autocommit mode: each query sees the latest commit."""
        yield self._db.cursor()

    def is_unique_violation(self, exc: BaseException) -> bool:
        """A UNIQUE constraint refused a row."""
        return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)

    def is_error(self, exc: BaseException) -> bool:
        """Any sqlite3 error."""
        return isinstance(exc, sqlite3.Error)

    def schema_version(self, cur: Cursor, *, create: bool = True) -> int:
        """``PRAGMA user_version`` (0 for a file no agent made a store of)."""
        return int(cur.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, cur: Cursor, version: int) -> None:
        """Set ``PRAGMA user_version`` (transactional in SQLite)."""
        cur.execute(f"PRAGMA user_version = {int(version)}")

    def close(self) -> None:
        """Close the connection."""
        self._db.close()


def _must_exist(path: Path) -> None:
    """NoStore when there is no file at ``path``; StoreError when it cannot be looked at."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise NoStore(f"no incident store at {path} (AGENT_STATE_URL)") from None
    except PermissionError:
        raise StoreError(
            f"incident store {path} cannot be read by {current_user()}: permission denied "
            "(run as its owner, or as root)"
        ) from None
