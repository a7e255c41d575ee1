"""The store: migrations, the journal of room events (sessions, tracks, outbox), usage
queries, crash recovery and the writer thread — on real SQLite files, with the room
service driven by an injected clock."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from sfu.rooms import Permission, RoomEvent, RoomService
from sfu.store import journal, outbox, queries, schema
from sfu.store.journal import SessionUsage, Subscriber
from sfu.store.writer import StoreWriter
from sfu.webhooks import Outcome

SUBSCRIBERS = [Subscriber("crm"), Subscriber("billing", frozenset({"participant_left"}))]


class Journaled:
    """A room service whose events go straight into a real database, in one transaction
    each (as the writer thread does), with the clock in the test's hands."""

    def __init__(self, path: Path, usage: dict[str, SessionUsage] | None = None) -> None:
        self.conn = schema.connect(str(path))
        schema.migrate(self.conn)
        self.usage = usage if usage is not None else {}
        self.rooms = RoomService(auto_create=True, max_participants=0, empty_timeout_s=60,
                                 resume_window_s=30, rng=random.Random(7),
                                 on_event=self._record)

    def _record(self, ev: RoomEvent) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        journal.record(self.conn, ev, SUBSCRIBERS, self.usage.get(ev.session_id or ""))
        self.conn.execute("COMMIT")

    def join(self, identity: str, now: float, room: str = "standup") -> Any:
        p, _ = self.rooms.join(room, identity=identity, name=identity.title(), metadata="",
                               permission=Permission(), now=now)
        return p

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in self.conn.execute("SELECT body FROM events ORDER BY seq")]


@pytest.fixture
def store(tmp_path: Path) -> Journaled:
    return Journaled(tmp_path / "sfu.db")


# -- migrations --------------------------------------------------------------------------------

def test_migrations_build_the_schema_once_and_refuse_a_newer_database(tmp_path: Path) -> None:
    path = str(tmp_path / "a.db")
    conn = schema.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert schema.migrate(conn) == len(schema.MIGRATIONS)
    assert schema.migrate(conn) == len(schema.MIGRATIONS)  # nothing to do the second time
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"rooms", "sessions", "tracks", "events", "deliveries", "recordings"} <= tables
    conn.execute(f"PRAGMA user_version = {len(schema.MIGRATIONS) + 1}")
    with pytest.raises(schema.SchemaError, match="newer than this daemon"):
        schema.migrate(conn)


def test_a_failing_migration_leaves_the_database_at_the_previous_version(tmp_path: Path) -> None:
    conn = schema.connect(str(tmp_path / "b.db"))
    migrations = (*schema.MIGRATIONS, "CREATE TABLE extra (x INTEGER);\nNOT SQL AT ALL;")
    with pytest.raises(sqlite3.OperationalError):
        schema.migrate(conn, migrations)
    assert schema.version(conn) == len(schema.MIGRATIONS)
    assert "extra" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}


# -- sessions ----------------------------------------------------------------------------------

def test_join_leave_rejoin_gives_two_sessions_with_their_durations(store: Journaled) -> None:
    first = store.join("ada", now=1000.0)
    store.rooms.leave(first.session_id, "client_request", now=1060.5)
    second = store.join("ada", now=1200.0)
    store.rooms.leave(second.session_id, "client_request", now=1230.0)
    rows, cursor = queries.sessions(store.conn, room="standup")
    assert cursor is None
    assert [(r["session_id"], r["joined_at"], r["left_at"], r["duration_s"], r["leave_reason"])
            for r in rows] == [
        (first.session_id, 1000.0, 1060.5, 60.5, "client_request"),
        (second.session_id, 1200.0, 1230.0, 30.0, "client_request")]
    assert rows[0]["identity"] == "ada" and rows[0]["name"] == "Ada"
    assert rows[0]["room_sid"] == store.rooms.rooms["standup"].sid


@pytest.mark.parametrize(("start", "end", "expected"), [
    (None, None, [0, 1]),
    (1060.5, 1200.0, []),        # left exactly at `from`, joined exactly at `to`: outside
    (1060.4, 1200.0, [0]),       # still there just before `from`
    (1060.5, 1200.01, [1]),      # joined just before `to`
    (0.0, 1000.0, []),           # the first join is at `to`
    (0.0, 1000.01, [0]),
    (1230.0, None, []),          # the second session left exactly at `from`
    (1100.0, 1150.0, []),        # between the sessions
    (1010.0, 1220.0, [0, 1]),
])
def test_window_queries_include_and_exclude_at_the_edges(store: Journaled, start: float | None,
                                                         end: float | None,
                                                         expected: list[int]) -> None:
    sessions = []
    for joined, left in ((1000.0, 1060.5), (1200.0, 1230.0)):
        p = store.join("ada", now=joined)
        store.rooms.leave(p.session_id, "client_request", now=left)
        sessions.append(p.session_id)
    rows, _ = queries.sessions(store.conn, start=start, end=end)
    assert [r["session_id"] for r in rows] == [sessions[i] for i in expected]
    summary = queries.summary(store.conn, 5000.0, start=start, end=end)
    assert summary["sessions"] == len(expected)
    assert summary["unique_participants"] == (1 if expected else 0)


def test_summary_counts_unique_participants_and_clips_seconds_to_the_window(
        store: Journaled) -> None:
    a = store.join("ada", now=100.0)
    b = store.join("bob", now=110.0)
    store.rooms.leave(a.session_id, "client_request", now=200.0)
    a2 = store.join("ada", now=250.0)
    store.rooms.leave(b.session_id, "client_request", now=300.0)
    store.rooms.leave(a2.session_id, "client_request", now=320.0)
    whole = queries.summary(store.conn, 1000.0, room="standup")
    assert whole["unique_participants"] == 2 and whole["sessions"] == 3
    assert (whole["first_join"], whole["last_leave"], whole["duration_s"]) == (100.0, 320.0, 220.0)
    assert whole["participant_seconds"] == 100.0 + 190.0 + 70.0
    clipped = queries.summary(store.conn, 1000.0, room="standup", start=150.0, end=260.0)
    # ada 150..200, bob 150..260, ada 250..260
    assert clipped["participant_seconds"] == 50.0 + 110.0 + 10.0
    assert queries.summary(store.conn, 1000.0, room="other")["sessions"] == 0


def test_an_open_session_counts_until_now_and_has_no_last_leave(store: Journaled) -> None:
    store.join("ada", now=100.0)
    s = queries.summary(store.conn, 130.0)
    assert s["open_sessions"] == 1 and s["last_leave"] is None and s["duration_s"] is None
    assert s["participant_seconds"] == 30.0
    rows, _ = queries.sessions(store.conn)
    assert rows[0]["left_at"] is None and rows[0]["duration_s"] is None


def test_sessions_page_with_a_cursor(store: Journaled) -> None:
    ids = [store.join(f"p{i}", now=100.0 + i).session_id for i in range(5)]
    seen: list[str] = []
    cursor = 0
    while True:
        page, nxt = queries.sessions(store.conn, limit=2, after=cursor)
        seen += [r["session_id"] for r in page]
        if nxt is None:
            break
        cursor = nxt
    assert seen == ids


def test_a_session_whose_resume_window_expired_ends_when_its_connection_dropped(
        store: Journaled) -> None:
    p = store.join("ada", now=100.0)
    store.rooms.disconnect(p.session_id, now=140.0)
    store.rooms.handle_timeout(now=175.0)  # resume window 30 s
    rows, _ = queries.sessions(store.conn)
    assert (rows[0]["left_at"], rows[0]["leave_reason"]) == (140.0, "resume_window_expired")


def test_usage_totals_published_seconds_and_quality_land_in_the_record(tmp_path: Path) -> None:
    usage: dict[str, SessionUsage] = {}
    store = Journaled(tmp_path / "u.db", usage)
    p = store.join("ada", now=100.0)
    store.rooms.add_track(p, cid="mic", kind="audio", source="microphone", now=110.0)
    store.rooms.add_track(p, cid="cam", kind="video", source="camera", now=120.0)
    usage[p.session_id] = SessionUsage(bytes_in=5000, bytes_out=7000, subscribed_s=42.5,
                                       quality_sum=8.6, quality_samples=2)
    store.conn.execute("BEGIN")
    journal.checkpoint(store.conn, 130.0, usage)
    store.conn.execute("COMMIT")
    row = store.conn.execute("SELECT published_s, bytes_in, checkpoint_at FROM sessions"
                             ).fetchone()
    assert tuple(row) == (20.0 + 10.0, 5000, 130.0)
    usage[p.session_id] = SessionUsage(bytes_in=9000, bytes_out=8000, subscribed_s=50.0,
                                       quality_sum=13.0, quality_samples=3)
    store.rooms.leave(p.session_id, "client_request", now=150.0)
    (record,) = queries.sessions(store.conn)[0]
    assert record["published_s"] == 40.0 + 30.0  # both tracks until the leave
    assert (record["bytes_in"], record["bytes_out"], record["subscribed_s"]) == (9000, 8000, 50.0)
    assert record["average_quality"] == pytest.approx(13.0 / 3, abs=1e-3)
    assert store.conn.execute("SELECT COUNT(*) FROM tracks WHERE unpublished_at = 150.0"
                              ).fetchone()[0] == 2


# -- events and the outbox ---------------------------------------------------------------------

def test_every_event_is_stored_with_its_outbox_rows_per_endpoint(store: Journaled) -> None:
    store.rooms.create_room("standup", now=90.0)
    p = store.join("ada", now=100.0)
    store.rooms.add_track(p, cid="mic", kind="audio", source="microphone", now=101.0)
    store.rooms.leave(p.session_id, "client_request", now=160.0)
    store.rooms.handle_timeout(now=220.0)  # empty for 60 s: the room finishes
    events = store.events()
    assert [e["type"] for e in events] == ["room_started", "participant_joined",
                                           "track_published", "track_unpublished",
                                           "participant_left", "room_finished"]
    assert len({e["id"] for e in events}) == len(events)
    left = events[4]
    assert left["session_id"] == p.session_id and left["reason"] == "client_request"
    assert left["participant"]["identity"] == "ada"
    assert left["session"]["duration_s"] == 60.0  # the closed session's record rides along
    assert events[-1]["reason"] == "empty_timeout"
    assert events[0]["timestamp"].endswith("Z") and events[0]["created_at"] == 90.0
    rows = store.conn.execute(
        "SELECT d.endpoint, e.type FROM deliveries d JOIN events e ON e.seq = d.event_seq "
        "ORDER BY d.id").fetchall()
    assert [r[1] for r in rows if r[0] == "crm"] == [e["type"] for e in events]
    assert [r[1] for r in rows if r[0] == "billing"] == ["participant_left"]


def test_outbox_heads_one_per_endpoint_and_room_in_order(store: Journaled) -> None:
    a = store.join("ada", now=100.0, room="r1")
    store.join("bob", now=101.0, room="r2")
    store.rooms.leave(a.session_id, "client_request", now=102.0)
    heads = outbox.heads(store.conn, ["crm", "billing"])
    assert [(h.endpoint, h.room, h.event_type) for h in heads] == [
        ("crm", "r1", "room_started"), ("crm", "r2", "room_started"),
        ("billing", "r1", "participant_left")]
    first = heads[0]
    store.conn.execute("BEGIN")
    outbox.mark(store.conn, first.id, Outcome("delivered"), 103.0, http_status=204,
                error=None)
    store.conn.execute("COMMIT")
    nxt = [h for h in outbox.heads(store.conn, ["crm"]) if h.room == "r1"]
    assert nxt[0].event_type == "participant_joined" and nxt[0].id > first.id
    # an endpoint no longer configured keeps its rows but gets no heads
    assert outbox.heads(store.conn, ["gone"]) == []


def test_failed_deliveries_are_listed_and_replayed(store: Journaled) -> None:
    store.join("ada", now=100.0, room="r1")
    store.join("bob", now=100.0, room="r2")
    store.conn.execute("BEGIN")
    for h in outbox.heads(store.conn, ["crm"]):
        outbox.mark(store.conn, h.id, Outcome("failed"), 200.0, http_status=503,
                    error="HTTP 503")
    store.conn.execute("COMMIT")
    failed = outbox.failed(store.conn, room=None, limit=10)
    assert [(f["room"], f["event_type"], f["last_status"]) for f in failed] == [
        ("r1", "room_started", 503), ("r2", "room_started", 503)]
    assert outbox.failed(store.conn, room="r2", limit=10)[0]["room"] == "r2"
    store.conn.execute("BEGIN")
    assert outbox.replay(store.conn, 300.0, room="r1") == 1
    store.conn.execute("COMMIT")
    (again,) = [h for h in outbox.heads(store.conn, ["crm"]) if h.room == "r1"]
    assert (again.event_type, again.attempts, again.next_attempt_at) == ("room_started", 0, 300.0)
    assert [f["room"] for f in outbox.failed(store.conn, room=None, limit=10)] == ["r2"]


# -- crash recovery ----------------------------------------------------------------------------

def test_recovery_closes_open_sessions_at_their_last_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    before = Journaled(path)
    stayed = before.join("ada", now=100.0)
    before.rooms.add_track(stayed, cid="cam", kind="video", source="camera", now=105.0)
    left = before.join("bob", now=100.0)
    before.rooms.leave(left.session_id, "client_request", now=110.0)
    before.conn.execute("BEGIN")
    journal.checkpoint(before.conn, 120.0, {})
    before.conn.execute("COMMIT")
    before.join("cyd", now=125.0, room="other")  # never checkpointed: closed at its join
    # the process dies here; a new one opens the same file
    conn = schema.connect(str(path))
    schema.migrate(conn)
    ids = iter(f"EV_recovered{i}" for i in range(100))
    conn.execute("BEGIN IMMEDIATE")
    journal.recover(conn, 999.0, SUBSCRIBERS, lambda: next(ids))
    conn.execute("COMMIT")
    rows = {r["identity"]: r for r in queries.sessions(conn)[0]}
    assert (rows["ada"]["left_at"], rows["ada"]["leave_reason"]) == (120.0, "server_crash")
    assert rows["ada"]["published_s"] == 15.0
    assert (rows["bob"]["left_at"], rows["bob"]["leave_reason"]) == (110.0, "client_request")
    assert (rows["cyd"]["left_at"], rows["cyd"]["duration_s"]) == (125.0, 0.0)
    events = [json.loads(r[0]) for r in conn.execute(
        "SELECT body FROM events WHERE id LIKE 'EV_recovered%' ORDER BY seq")]
    assert [(e["type"], e["room"]["name"]) for e in events] == [
        ("track_unpublished", "standup"), ("participant_left", "standup"),
        ("participant_left", "other"), ("room_finished", "standup"),
        ("room_finished", "other")]
    assert {e["reason"] for e in events} == {"server_crash"}
    assert events[3]["created_at"] == 120.0  # the room finished at its last checkpoint
    # a second start finds nothing left to close
    conn.execute("BEGIN IMMEDIATE")
    assert journal.recover(conn, 1000.0, SUBSCRIBERS, lambda: next(ids)) == []
    conn.execute("COMMIT")


# -- the writer thread -------------------------------------------------------------------------

def test_the_writer_commits_in_order_and_a_bad_job_fails_alone(tmp_path: Path) -> None:
    commits = threading.Event()
    writer = StoreWriter(tmp_path / "w" / "sfu.db", on_commit=commits.set)
    assert writer.open() == len(schema.MIGRATIONS)

    def insert(sid: str) -> Any:
        def job(conn: sqlite3.Connection) -> int:
            return conn.execute("INSERT INTO rooms (sid, name, created_at, checkpoint_at) "
                                "VALUES (?, 'r', 0, 0)", (sid,)).lastrowid or 0
        return job

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO rooms (sid, name, created_at, checkpoint_at) "
                      "VALUES ('RM_bad', 'r', 0, 0)")
        raise RuntimeError("boom")

    futures = [writer.submit(insert("RM_1")), writer.submit(broken),
               writer.submit(insert("RM_2"), notify=True)]
    assert futures[0].result(5) and futures[2].result(5)
    with pytest.raises(RuntimeError, match="boom"):
        futures[1].result(5)
    assert commits.wait(5)
    reader = sqlite3.connect(str(tmp_path / "w" / "sfu.db"))
    assert [r[0] for r in reader.execute("SELECT sid FROM rooms ORDER BY rowid")] == [
        "RM_1", "RM_2"]
    assert writer.failed_jobs == 1
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(insert("RM_3")).result(1)


def test_a_room_filter_matches_names_and_only_optionally_sids(store: Journaled) -> None:
    p = store.join("ada", now=100.0, room="standup")
    sid = store.rooms.rooms["standup"].sid
    store.join("bob", now=100.0, room=sid)  # a room *named* like the first room's sid
    by_name, _ = queries.sessions(store.conn, room=sid, match_sid=False)
    assert [r["identity"] for r in by_name] == ["bob"]
    both, _ = queries.sessions(store.conn, room=sid)
    assert {r["identity"] for r in both} == {"ada", "bob"}
    assert queries.summary(store.conn, 200.0, room=sid, match_sid=False)["sessions"] == 1
    assert p.room == "standup"


def test_recording_events_keep_the_recordings_index(store: Journaled) -> None:
    room = store.rooms.create_room("standup", now=10.0)
    for kind, at, rec in (
            ("recording_started", 20.0, {"id": "REC_1", "path": "/rec/standup.mp4"}),
            ("recording_finished", 80.0, {"id": "REC_1", "status": "ready",
                                          "size_bytes": 123456, "duration_s": 60.0})):
        store.conn.execute("BEGIN")
        journal.record(store.conn, RoomEvent(type=kind, id=f"EV_{kind}", at=at,
                                             room_sid=room.sid, room=room.name,
                                             recording=rec), SUBSCRIBERS)
        store.conn.execute("COMMIT")
    row = store.conn.execute("SELECT * FROM recordings").fetchone()
    assert (row["room"], row["started_at"], row["finished_at"], row["status"], row["path"],
            row["size_bytes"], row["duration_s"]) == (
        "standup", 20.0, 80.0, "ready", "/rec/standup.mp4", 123456, 60.0)
    finished = store.events()[-1]
    assert finished["type"] == "recording_finished" and finished["recording"]["id"] == "REC_1"
