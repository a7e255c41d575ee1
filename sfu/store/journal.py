"""What each room event writes to the store, always in the caller's transaction together
with the event itself and its outbox rows (one per webhook endpoint that wants it).

Plain functions over a :class:`sqlite3.Connection`; the writer thread
(:mod:`sfu.store.writer`) runs them inside ``BEGIN IMMEDIATE … COMMIT``, so a state change
and its webhook are committed together or not at all, and sent only after that commit.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sfu.rooms import RoomEvent

__all__ = ["SessionUsage", "Subscriber", "checkpoint", "event_body", "record", "recover"]


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A webhook endpoint as the outbox sees it: its key, and the event types it wants
    (empty: all)."""

    name: str
    events: frozenset[str] = frozenset()

    def wants(self, event_type: str) -> bool:
        return not self.events or event_type in self.events


@dataclass(frozen=True, slots=True)
class SessionUsage:
    """A live session's running totals, from the media side: RTP payload bytes received
    from the participant and sent to it, track-seconds it was subscribed, and its
    connection-quality scores (MOS, 1..5) summed over the scoring rounds."""

    bytes_in: int = 0
    bytes_out: int = 0
    subscribed_s: float = 0.0
    quality_sum: float = 0.0
    quality_samples: int = 0


def iso_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event_body(ev: RoomEvent, session: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The webhook payload of ``ev``: the same JSON for every endpoint and every attempt."""
    body: dict[str, Any] = {
        "id": ev.id, "type": ev.type, "created_at": ev.at, "timestamp": iso_time(ev.at),
        "room": {"sid": ev.room_sid, "name": ev.room},
    }
    if ev.participant is not None:
        body["participant"] = dict(ev.participant)
    if ev.session_id is not None:
        body["session_id"] = ev.session_id
    if ev.track is not None:
        body["track"] = dict(ev.track)
    if ev.reason is not None:
        body["reason"] = ev.reason
    if ev.recording is not None:
        body["recording"] = dict(ev.recording)
    if session is not None:
        body["session"] = dict(session)
    return body


def _published_s(conn: sqlite3.Connection, session_id: str, until: float) -> float:
    row = conn.execute(
        "SELECT COALESCE(SUM(MAX(0, MIN(COALESCE(unpublished_at, :until), :until) "
        "- published_at)), 0) FROM tracks WHERE session_id = :sid",
        {"sid": session_id, "until": until}).fetchone()
    return float(row[0])


def _usage_params(usage: SessionUsage | None) -> dict[str, Any]:
    u = usage or SessionUsage()
    return {"bytes_in": u.bytes_in, "bytes_out": u.bytes_out, "subscribed_s": u.subscribed_s,
            "quality_sum": u.quality_sum, "quality_samples": u.quality_samples,
            "has_usage": usage is not None}


_SET_USAGE = """
    bytes_in = CASE WHEN :has_usage THEN MAX(bytes_in, :bytes_in) ELSE bytes_in END,
    bytes_out = CASE WHEN :has_usage THEN MAX(bytes_out, :bytes_out) ELSE bytes_out END,
    subscribed_s = CASE WHEN :has_usage THEN MAX(subscribed_s, :subscribed_s)
                   ELSE subscribed_s END,
    quality_sum = CASE WHEN :has_usage AND :quality_samples >= quality_samples
                  THEN :quality_sum ELSE quality_sum END,
    quality_samples = CASE WHEN :has_usage THEN MAX(quality_samples, :quality_samples)
                      ELSE quality_samples END
"""

SESSION_COLUMNS = ("session_id", "room", "room_sid", "participant_sid", "identity", "name",
                   "hidden", "joined_at", "left_at", "leave_reason", "bytes_in", "bytes_out",
                   "published_s", "subscribed_s", "quality_sum", "quality_samples",
                   "checkpoint_at")


def session_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A sessions row as the API and webhooks show it (the call-detail record)."""
    left = row["left_at"]
    samples = row["quality_samples"]
    return {
        "session_id": row["session_id"], "room": row["room"], "room_sid": row["room_sid"],
        "participant_sid": row["participant_sid"], "identity": row["identity"],
        "name": row["name"], "hidden": bool(row["hidden"]),
        "joined_at": row["joined_at"], "left_at": left,
        "duration_s": None if left is None else round(left - row["joined_at"], 3),
        "leave_reason": row["leave_reason"],
        "bytes_in": row["bytes_in"], "bytes_out": row["bytes_out"],
        "published_s": round(row["published_s"], 3),
        "subscribed_s": round(row["subscribed_s"], 3),
        "average_quality": None if not samples else round(row["quality_sum"] / samples, 3),
    }


def _apply(conn: sqlite3.Connection, ev: RoomEvent,
           usage: SessionUsage | None) -> dict[str, Any] | None:
    """The state change of ``ev``; returns the closed session's record for
    ``participant_left``."""
    t = ev.type
    if t == "room_started":
        conn.execute("INSERT OR IGNORE INTO rooms (sid, name, created_at, checkpoint_at) "
                     "VALUES (?, ?, ?, ?)", (ev.room_sid, ev.room, ev.at, ev.at))
    elif t == "room_finished":
        conn.execute("UPDATE rooms SET finished_at = ?, finish_reason = ?, checkpoint_at = ? "
                     "WHERE sid = ? AND finished_at IS NULL",
                     (ev.at, ev.reason, ev.at, ev.room_sid))
    elif t == "participant_joined":
        p = ev.participant or {}
        conn.execute(
            "INSERT INTO sessions (session_id, room_sid, room, participant_sid, identity, name, "
            "hidden, joined_at, checkpoint_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (ev.session_id, ev.room_sid, ev.room, p.get("sid", ""), p.get("identity", ""),
             p.get("name", ""), int(bool(p.get("hidden"))), ev.at, ev.at))
    elif t == "participant_left":
        assert ev.session_id is not None
        ended = ev.ended_at if ev.ended_at is not None else ev.at
        conn.execute("UPDATE tracks SET unpublished_at = ? WHERE session_id = ? "
                     "AND unpublished_at IS NULL", (ended, ev.session_id))
        conn.execute(
            f"UPDATE sessions SET left_at = :left, leave_reason = :reason, "
            f"checkpoint_at = :left, published_s = :published, {_SET_USAGE} "
            f"WHERE session_id = :sid AND left_at IS NULL",
            {**_usage_params(usage), "left": ended, "reason": ev.reason, "sid": ev.session_id,
             "published": _published_s(conn, ev.session_id, ended)})
        row = conn.execute("SELECT * FROM sessions WHERE session_id = ?",
                           (ev.session_id,)).fetchone()
        return None if row is None else session_record(row)
    elif t == "track_published":
        track = ev.track or {}
        conn.execute("INSERT OR IGNORE INTO tracks (sid, session_id, kind, source, "
                     "published_at) VALUES (?, ?, ?, ?, ?)",
                     (track.get("sid"), ev.session_id, track.get("kind", ""),
                      track.get("source", ""), ev.at))
    elif t == "track_unpublished":
        track = ev.track or {}
        conn.execute("UPDATE tracks SET unpublished_at = ? WHERE sid = ? AND "
                     "unpublished_at IS NULL", (ev.at, track.get("sid")))
    elif t == "recording_started":
        rec = ev.recording or {}
        conn.execute("INSERT OR IGNORE INTO recordings (id, room_sid, room, started_at, status, "
                     "path) VALUES (?, ?, ?, ?, 'recording', ?)",
                     (rec.get("id"), ev.room_sid, ev.room, ev.at, rec.get("path")))
    elif t == "recording_finished":
        rec = ev.recording or {}
        conn.execute("UPDATE recordings SET finished_at = ?, status = ?, path = "
                     "COALESCE(?, path), size_bytes = ?, duration_s = ?, error = ? WHERE id = ?",
                     (ev.at, rec.get("status", "ready"), rec.get("path"),
                      rec.get("size_bytes"), rec.get("duration_s"), rec.get("error"),
                      rec.get("id")))
    else:
        raise ValueError(f"unknown event type {t!r}")
    return None


def record(conn: sqlite3.Connection, ev: RoomEvent, subscribers: Sequence[Subscriber],
           usage: SessionUsage | None = None) -> list[tuple[str, str]]:
    """Apply ``ev``, store it, and queue it for every subscriber that wants it. Returns the
    outbox keys ``(endpoint, room)`` that got a row."""
    session = _apply(conn, ev, usage)
    body = json.dumps(event_body(ev, session), separators=(",", ":"), ensure_ascii=False)
    seq = conn.execute("INSERT INTO events (id, type, room, created_at, body) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (ev.id, ev.type, ev.room, ev.at, body)).lastrowid
    keys = []
    for sub in subscribers:
        if sub.wants(ev.type):
            conn.execute("INSERT INTO deliveries (event_seq, endpoint, room, status, created_at, "
                         "next_attempt_at) VALUES (?, ?, ?, 'pending', ?, ?)",
                         (seq, sub.name, ev.room, ev.at, ev.at))
            keys.append((sub.name, ev.room))
    return keys


def checkpoint(conn: sqlite3.Connection, now: float,
               usages: Mapping[str, SessionUsage]) -> int:
    """Mark every open session and room as alive at ``now``, with the live sessions'
    running totals; returns the number of open sessions."""
    conn.execute("UPDATE rooms SET checkpoint_at = ? WHERE finished_at IS NULL", (now,))
    open_ids = [r[0] for r in conn.execute(
        "SELECT session_id FROM sessions WHERE left_at IS NULL")]
    for sid in open_ids:
        conn.execute(
            f"UPDATE sessions SET checkpoint_at = :now, published_s = :published, {_SET_USAGE} "
            f"WHERE session_id = :sid",
            {**_usage_params(usages.get(sid)), "now": now, "sid": sid,
             "published": _published_s(conn, sid, now)})
    return len(open_ids)


def recover(conn: sqlite3.Connection, now: float, subscribers: Sequence[Subscriber],
            new_id: Callable[[], str]) -> list[tuple[str, str]]:
    """After a crash: close every session still open at its last checkpoint with
    ``leave_reason = server_crash`` (``track_unpublished`` and ``participant_left``), then
    finish every room still open at its last checkpoint (``room_finished``). Returns the
    outbox keys written."""
    keys: list[tuple[str, str]] = []
    sessions = conn.execute("SELECT * FROM sessions WHERE left_at IS NULL ORDER BY seq").fetchall()
    for row in sessions:
        participant = {"sid": row["participant_sid"], "identity": row["identity"],
                       "name": row["name"], "hidden": bool(row["hidden"])}
        ended = row["checkpoint_at"]
        for track in conn.execute("SELECT * FROM tracks WHERE session_id = ? AND "
                                  "unpublished_at IS NULL ORDER BY published_at",
                                  (row["session_id"],)).fetchall():
            keys += record(conn, RoomEvent(
                type="track_unpublished", id=new_id(), at=ended, room_sid=row["room_sid"],
                room=row["room"], participant=participant, session_id=row["session_id"],
                track={"sid": track["sid"], "kind": track["kind"], "source": track["source"],
                       "name": ""}, reason="server_crash"), subscribers)
        keys += record(conn, RoomEvent(
            type="participant_left", id=new_id(), at=ended, room_sid=row["room_sid"],
            room=row["room"], participant=participant, session_id=row["session_id"],
            reason="server_crash", ended_at=ended), subscribers)
    for room in conn.execute("SELECT * FROM rooms WHERE finished_at IS NULL "
                             "ORDER BY created_at").fetchall():
        keys += record(conn, RoomEvent(
            type="room_finished", id=new_id(), at=room["checkpoint_at"], room_sid=room["sid"],
            room=room["name"], reason="server_crash"), subscribers)
    return keys
