"""The store's tables, and the migrations that build them.

``PRAGMA user_version`` holds the number of migrations applied. :func:`migrate` applies the
missing ones, each in its own transaction; a database written by a newer daemon (a higher
version than this code knows) is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3
from typing import Final

__all__ = ["MIGRATIONS", "SchemaError", "connect", "migrate", "version"]


class SchemaError(RuntimeError):
    """The database cannot be used by this daemon (too new, or not ours)."""


#: Migration n (1-based) turns a version n-1 database into version n. Append only: a
#: released migration is never edited.
MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: rooms, sessions, tracks, events and their deliveries, recordings
    """
    CREATE TABLE rooms (
        sid TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at REAL NOT NULL,
        checkpoint_at REAL NOT NULL,
        finished_at REAL,
        finish_reason TEXT
    );
    CREATE INDEX rooms_open ON rooms (sid) WHERE finished_at IS NULL;

    -- one row per participant session: the call-detail record
    CREATE TABLE sessions (
        seq INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL UNIQUE,
        room_sid TEXT NOT NULL,
        room TEXT NOT NULL,
        participant_sid TEXT NOT NULL,
        identity TEXT NOT NULL,
        name TEXT NOT NULL,
        hidden INTEGER NOT NULL,
        joined_at REAL NOT NULL,
        left_at REAL,
        checkpoint_at REAL NOT NULL,
        leave_reason TEXT,
        bytes_in INTEGER NOT NULL DEFAULT 0,
        bytes_out INTEGER NOT NULL DEFAULT 0,
        published_s REAL NOT NULL DEFAULT 0,
        subscribed_s REAL NOT NULL DEFAULT 0,
        quality_sum REAL NOT NULL DEFAULT 0,
        quality_samples INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_room_joined ON sessions (room, joined_at);
    CREATE INDEX sessions_joined ON sessions (joined_at);
    CREATE INDEX sessions_open ON sessions (session_id) WHERE left_at IS NULL;

    CREATE TABLE tracks (
        sid TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        source TEXT NOT NULL,
        published_at REAL NOT NULL,
        unpublished_at REAL
    );
    CREATE INDEX tracks_session ON tracks (session_id);

    -- every event, as sent: body is the exact JSON every endpoint receives
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        room TEXT NOT NULL,
        created_at REAL NOT NULL,
        body TEXT NOT NULL
    );

    -- the outbox: one row per event and endpoint, sent in id order per (endpoint, room)
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        event_seq INTEGER NOT NULL REFERENCES events (seq),
        endpoint TEXT NOT NULL,
        room TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
        created_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_attempt_at REAL,
        last_status INTEGER,
        last_error TEXT,
        delivered_at REAL
    );
    CREATE INDEX deliveries_pending ON deliveries (endpoint, room, id) WHERE status = 'pending';
    CREATE INDEX deliveries_failed ON deliveries (room, id) WHERE status = 'failed';

    CREATE TABLE recordings (
        id TEXT PRIMARY KEY,
        room_sid TEXT NOT NULL,
        room TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        status TEXT NOT NULL,
        path TEXT,
        size_bytes INTEGER,
        duration_s REAL,
        error TEXT
    );
    CREATE INDEX recordings_room ON recordings (room, started_at);
    """,
)


def connect(path: str) -> sqlite3.Connection:
    """A connection in WAL mode, autocommit off (explicit ``BEGIN IMMEDIATE`` per
    transaction), rows as :class:`sqlite3.Row`."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal" and path != ":memory:":
        conn.close()
        raise SchemaError(f"{path}: cannot switch the database to WAL mode (got {mode})")
    # NORMAL in WAL mode: a commit survives a crash of this process (the WAL is written
    # before COMMIT returns); only a power loss may roll back the last transactions
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: tuple[str, ...] = MIGRATIONS) -> int:
    """Apply the migrations this database lacks; returns the resulting version."""
    current = version(conn)
    if current > len(migrations):
        raise SchemaError(f"the database is at schema version {current}, newer than this "
                          f"daemon's {len(migrations)}: upgrade the daemon or use another "
                          "store.path")
    for number in range(current + 1, len(migrations) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(migrations[number - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(migrations)


def _statements(script: str) -> list[str]:
    """A migration script's statements (``executescript`` would commit on its own)."""
    out: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            out.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise SchemaError(f"incomplete statement in a migration: {buffer.strip()[:80]!r}")
    return out
