"""The webhook outbox's queries: the head row of each ``(endpoint, room)``, what an attempt
did, and the failed deliveries the REST API lists and replays."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from sfu.webhooks import Delivery, Outcome

__all__ = ["failed", "heads", "mark", "pending_count", "replay"]

_DELIVERY = ("SELECT d.id, d.endpoint, d.room, d.attempts, d.created_at, d.next_attempt_at, "
             "e.id AS event_id, e.type AS event_type, e.body FROM deliveries d "
             "JOIN events e ON e.seq = d.event_seq ")


def _delivery(row: sqlite3.Row) -> Delivery:
    return Delivery(id=row["id"], endpoint=row["endpoint"], room=row["room"],
                    event_id=row["event_id"], event_type=row["event_type"],
                    body=row["body"].encode(), attempts=row["attempts"],
                    created_at=row["created_at"], next_attempt_at=row["next_attempt_at"])


def heads(conn: sqlite3.Connection, endpoints: Sequence[str]) -> list[Delivery]:
    """The oldest pending delivery of each (endpoint, room), for configured endpoints only
    (rows of an endpoint removed from the configuration wait until it comes back)."""
    if not endpoints:
        return []
    marks = ",".join("?" * len(endpoints))
    rows = conn.execute(
        _DELIVERY + "WHERE d.id IN (SELECT MIN(id) FROM deliveries WHERE status = 'pending' "
        f"AND endpoint IN ({marks}) GROUP BY endpoint, room) ORDER BY d.id",
        tuple(endpoints)).fetchall()
    return [_delivery(r) for r in rows]


def pending_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'")
               .fetchone()[0])


def mark(conn: sqlite3.Connection, delivery_id: int, result: Outcome, now: float, *,
         http_status: int | None, error: str | None) -> None:
    """Record an attempt and its outcome."""
    conn.execute(
        "UPDATE deliveries SET attempts = attempts + 1, last_attempt_at = :now, "
        "last_status = :code, last_error = :error, status = :status, "
        "next_attempt_at = COALESCE(:next, next_attempt_at), "
        "delivered_at = CASE WHEN :status = 'delivered' THEN :now ELSE delivered_at END "
        "WHERE id = :id AND status = 'pending'",
        {"now": now, "code": http_status, "error": None if error is None else error[:500],
         "status": "pending" if result.status == "retry" else result.status,
         "next": result.next_attempt_at, "id": delivery_id})


def failed(conn: sqlite3.Connection, *, room: str | None, limit: int,
           after: int = 0) -> list[dict[str, Any]]:
    """Failed deliveries, oldest first (``after``: the last id of the previous page)."""
    where = "d.status = 'failed' AND d.id > ?"
    params: list[Any] = [after]
    if room is not None:
        where += " AND d.room = ?"
        params.append(room)
    rows = conn.execute(
        "SELECT d.*, e.id AS event_id, e.type AS event_type, e.created_at AS event_created_at "
        f"FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE {where} "
        "ORDER BY d.id LIMIT ?", (*params, limit)).fetchall()
    return [{"id": r["id"], "event_id": r["event_id"], "event_type": r["event_type"],
             "endpoint": r["endpoint"], "room": r["room"],
             "event_created_at": r["event_created_at"], "attempts": r["attempts"],
             "last_attempt_at": r["last_attempt_at"], "last_status": r["last_status"],
             "last_error": r["last_error"]} for r in rows]


def replay(conn: sqlite3.Connection, now: float, *, ids: Sequence[int] | None = None,
           room: str | None = None) -> int:
    """Queue failed deliveries again (by id, or all of a room, or all): pending, due now,
    with a fresh attempt budget counted from now. Returns how many."""
    where = "status = 'failed'"
    params: list[Any] = []
    if ids is not None:
        if not ids:
            return 0
        where += f" AND id IN ({','.join('?' * len(ids))})"
        params += list(ids)
    if room is not None:
        where += " AND room = ?"
        params.append(room)
    cur = conn.execute("UPDATE deliveries SET status = 'pending', attempts = 0, "
                       f"created_at = ?, next_attempt_at = ? WHERE {where}",
                       (now, now, *params))
    return cur.rowcount
