"""Usage (call-detail record) queries: the sessions overlapping a time window, and their
summary. Read-only; they run on the store's reader connection.

A session overlaps ``[start, end)`` when it joined before ``end`` and had not left by
``start``: one that left exactly at ``start``, or joined exactly at ``end``, is outside.
A session still open counts up to ``now``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sfu.store.journal import session_record

__all__ = ["sessions", "summary"]

_FAR = 1e18


def _where(room: str | None, start: float | None, end: float | None, match_sid: bool,
           ) -> tuple[str, dict[str, Any]]:
    clauses = ["joined_at < :end", "(left_at IS NULL OR left_at > :start)"]
    params: dict[str, Any] = {"end": _FAR if end is None else end,
                              "start": -_FAR if start is None else start}
    if room is not None:
        clauses.append("(room = :room OR room_sid = :room)" if match_sid else "room = :room")
        params["room"] = room
    return " AND ".join(clauses), params


def sessions(conn: sqlite3.Connection, *, room: str | None = None, start: float | None = None,
             end: float | None = None, limit: int = 1000, after: int = 0,
             match_sid: bool = True) -> tuple[list[dict[str, Any]], int | None]:
    """One page of the sessions overlapping the window, in join order; and the cursor of
    the next page (None on the last). ``room`` is a name, or also a sid with
    ``match_sid`` (off for callers limited to one room name: a name may look like a sid)."""
    where, params = _where(room, start, end, match_sid)
    rows = conn.execute(f"SELECT * FROM sessions WHERE {where} AND seq > :after ORDER BY seq "
                        "LIMIT :limit", {**params, "after": after, "limit": limit + 1}).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return [session_record(r) for r in rows], (rows[-1]["seq"] if more and rows else None)


def summary(conn: sqlite3.Connection, now: float, *, room: str | None = None,
            start: float | None = None, end: float | None = None,
            match_sid: bool = True) -> dict[str, Any]:
    """Unique participants, sessions, first join, last leave (None while someone is still
    there) and the span between them, plus participant-seconds clipped to the window."""
    where, params = _where(room, start, end, match_sid)
    lo = -_FAR if start is None else start
    hi = min(now, _FAR if end is None else end)
    row = conn.execute(
        "SELECT COUNT(DISTINCT identity) AS participants, COUNT(*) AS sessions, "
        "MIN(joined_at) AS first_join, MAX(left_at) AS last_leave, "
        "SUM(left_at IS NULL) AS open_sessions, "
        "SUM(MAX(0, MIN(COALESCE(left_at, :hi), :hi) - MAX(joined_at, :lo))) AS seconds, "
        "SUM(bytes_in) AS bytes_in, SUM(bytes_out) AS bytes_out "
        f"FROM sessions WHERE {where}", {**params, "lo": lo, "hi": hi}).fetchone()
    first, last = row["first_join"], row["last_leave"]
    still_open = bool(row["open_sessions"])
    return {
        "room": room, "from": start, "to": end,
        "unique_participants": row["participants"], "sessions": row["sessions"],
        "open_sessions": int(row["open_sessions"] or 0),
        "first_join": first, "last_leave": None if still_open else last,
        "duration_s": (None if first is None or still_open or last is None
                       else round(last - first, 3)),
        "participant_seconds": round(float(row["seconds"] or 0.0), 3),
        "bytes_in": int(row["bytes_in"] or 0), "bytes_out": int(row["bytes_out"] or 0),
    }
