"""Webhooks end to end: a real daemon posts to a receiver in this test, which checks every
signature with the PyPI ``standardwebhooks`` package and the order of each room's events.

- the receiver fails for a while: the events arrive later, in order, none missing;
- one room's events keep failing: another room's arrive meanwhile;
- the daemon is SIGKILLed with undelivered events: after the restart every committed event
  arrives (deduplicated by id), and the sessions open at the kill are closed at their last
  checkpoint with ``server_crash``, their rooms finished.

"None missing" is checked against the daemon's own store (its SQLite file, read here).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import ROOT, Daemon, free_port, stop_daemon, write_config
from tests.integration.test_signaling import Client, join

pytestmark = pytest.mark.timeout(90)

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class Receiver:
    """An HTTP endpoint that verifies, records and (when told to) refuses webhooks."""

    port: int
    failing: bool = False
    failing_rooms: set[str] = field(default_factory=set)
    received: list[dict[str, Any]] = field(default_factory=list)  # every 2xx'd POST
    refused: int = 0
    bad_signatures: list[str] = field(default_factory=list)
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = Webhook(SECRET).verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            self.bad_signatures.append(str(exc))
            return web.Response(status=400)
        assert request.headers["webhook-id"] == event["id"]
        if self.failing or event["room"]["name"] in self.failing_rooms:
            self.refused += 1
            return web.Response(status=503)
        self.received.append(event)
        return web.Response(status=204)

    def unique(self) -> dict[str, dict[str, Any]]:
        """Received events by id (at least once: a repeat is the same event)."""
        out: dict[str, dict[str, Any]] = {}
        for e in self.received:
            assert out.setdefault(e["id"], e) == e
        return out

    def room_order(self, room: str) -> list[str]:
        """The room's event ids in the order first received."""
        seen: list[str] = []
        for e in self.received:
            if e["room"]["name"] == room and e["id"] not in seen:
                seen.append(e["id"])
        return seen


def committed(store: Path) -> list[tuple[str, str, str]]:
    """(id, type, room) of every event in the daemon's store, in commit order."""
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        return [tuple(r) for r in conn.execute("SELECT id, type, room FROM events ORDER BY seq")]


def start(tmp: Path, receiver_port: int, sections: dict[str, dict[str, Any]] | None = None,
          config: Path | None = None) -> Daemon:
    """A daemon with one webhook endpoint (the receiver's URL); ``config``: restart one."""
    if config is None:
        base = {"webhooks": {"retry_initial_s": 0.1, "retry_max_s": 0.5, "timeout_s": 2.0},
                "store": {"checkpoint_interval_s": 1.0}, "room": {"empty_timeout_s": 600.0}}
        for name, values in (sections or {}).items():
            base.setdefault(name, {}).update(values)
        config, ports = write_config(tmp, base)
        secret_file = tmp / "webhook_secret"
        secret_file.write_text(SECRET)
        config.write_text(config.read_text() + "\n".join([
            "[[webhooks.endpoints]]", 'name = "crm"',
            f'url = "http://127.0.0.1:{receiver_port}/hook"',
            f'secret_file = "{secret_file}"']) + "\n")
        (tmp / "ports.json").write_text(json.dumps(ports))
    ports = json.loads((tmp / "ports.json").read_text())
    log_path = tmp / "daemon.log"
    logf = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([sys.executable, "-m", "sfu", "serve", "--config", str(config)],
                            stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT)
    d = Daemon(proc, ports["http"], ports["metrics"], ports["udp"], config, log_path)
    deadline = time.monotonic() + 15
    while True:
        assert proc.poll() is None, d.log()
        try:
            if d.get("/healthz")[0] == 200:
                return d
        except OSError:
            pass
        assert time.monotonic() < deadline, d.log()
        time.sleep(0.05)


async def until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(free_port())
    await r.start()
    yield r
    await r.stop()


async def leave(c: Client) -> None:
    await c.send({"type": "leave"})
    await c.closed_code()


async def test_events_held_back_by_a_failing_receiver_arrive_later_in_order(
        tmp_path: Path, receiver: Receiver) -> None:
    receiver.failing = True
    d = await asyncio.to_thread(start, tmp_path, receiver.port)
    try:
        ada, _ = await join(d, "ada", "standup")
        bob, _ = await join(d, "bob", "standup")
        track = await ada.request({"type": "add_track", "cid": "mic", "kind": "audio",
                                   "source": "microphone"})
        assert track["type"] == "track_published"
        await leave(bob)
        bob, _ = await join(d, "bob", "standup")  # a second session of the same identity
        await leave(bob)
        await leave(ada)
        await until(lambda: receiver.refused >= 3, 10, "the daemon's first attempts")
        assert receiver.received == []
        await asyncio.sleep(1.0)  # a few retries fail
        receiver.failing = False
        store = tmp_path / "sfu.db"
        await until(lambda: len([e for e in committed(store) if e[2] == "standup"]) >= 9, 5,
                    "the writer's commits")
        expected = [e for e in committed(store) if e[2] == "standup"]
        assert [t for _, t, _ in expected] == [
            "room_started", "participant_joined", "participant_joined", "track_published",
            "participant_left", "participant_joined", "participant_left",
            "track_unpublished", "participant_left"]
        await until(lambda: len(receiver.unique()) == len(expected), 15, "every event")
        # in order: the room's events arrive exactly as committed, none missing
        assert receiver.room_order("standup") == [i for i, _, _ in expected]
        assert receiver.bad_signatures == []
        got = receiver.unique()
        sessions = [got[i]["session_id"] for i, t, _ in expected if t == "participant_left"]
        assert len(set(sessions)) == 3  # bob's two sessions and ada's
        for i, t, _ in expected:
            if t == "participant_left":
                record = got[i]["session"]
                assert record["leave_reason"] == "client_request"
                assert record["duration_s"] >= 0
        _, metrics = d.get("/metrics", d.metrics_port)
        text = metrics.decode()
        assert 'sfu_webhook_deliveries_total{reason="retry"}' in text
        assert 'sfu_webhook_attempts_total{code="5xx"}' in text
    finally:
        await asyncio.to_thread(stop_daemon, d)


async def test_a_failing_room_does_not_delay_another_room(tmp_path: Path,
                                                          receiver: Receiver) -> None:
    receiver.failing_rooms = {"slow"}
    d = await asyncio.to_thread(start, tmp_path, receiver.port)
    try:
        slow, _ = await join(d, "ada", "slow")
        fast, _ = await join(d, "bob", "fast")
        await leave(fast)
        await leave(slow)
        store = tmp_path / "sfu.db"

        def fast_committed() -> list[str]:
            return [i for i, _, room in committed(store) if room == "fast"]

        # room_started, joined, left (committed by the writer thread a moment after leave)
        await until(lambda: len(fast_committed()) == 3, 5, "the fast room's events")
        fast_ids = fast_committed()
        await until(lambda: receiver.room_order("fast") == fast_ids, 5, "the fast room")
        assert receiver.room_order("slow") == []
        assert receiver.refused >= 1
        receiver.failing_rooms = set()
        await until(lambda: len([e for e in committed(store) if e[2] == "slow"]) == 3, 5,
                    "the slow room's events")
        slow_ids = [i for i, _, room in committed(store) if room == "slow"]
        await until(lambda: receiver.room_order("slow") == slow_ids, 10, "the slow room")
    finally:
        await asyncio.to_thread(stop_daemon, d)


def _open_sessions(store: Path) -> dict[str, float]:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT session_id, checkpoint_at FROM sessions "
                                 "WHERE left_at IS NULL").fetchall())


async def test_sigkill_loses_no_event_and_no_session(tmp_path: Path) -> None:
    receiver = Receiver(free_port())  # not listening yet: every attempt is refused
    d = await asyncio.to_thread(start, tmp_path, receiver.port)
    store = tmp_path / "sfu.db"
    try:
        ada, _ = await join(d, "ada", "standup")
        await ada.request({"type": "add_track", "cid": "cam", "kind": "video",
                           "source": "camera"})
        bob, _ = await join(d, "bob", "standup")
        cyd, _ = await join(d, "cyd", "retro")
        await leave(bob)
        # 2 rooms started, 3 joined, 1 published, 1 left: committed a moment later
        await until(lambda: len(committed(store)) == 7, 5, "the writer's commits")
        # a checkpoint of the open sessions happens within a second
        await until(lambda: len(_open_sessions(store)) == 2 and min(
            _open_sessions(store).values()) > time.time() - 0.9, 5, "a checkpoint")
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        for c in (ada, cyd):
            await c.close()
        before = committed(store)
        assert len(before) == 7
        open_at_kill = _open_sessions(store)
        assert len(open_at_kill) == 2
        await receiver.start()
        d = await asyncio.to_thread(start, tmp_path, receiver.port, config=d.config_path)
        await until(lambda: len(receiver.unique()) >= len(before) + 5, 15,
                    "the old events and the recovery's")
        got = receiver.unique()
        assert {i for i, _, _ in before} <= set(got)  # every committed event, once deduped
        after = committed(store)
        recovery = [(t, room, got[i]) for i, t, room in after[len(before):]]
        assert [(t, room) for t, room, _ in recovery] == [
            ("track_unpublished", "standup"), ("participant_left", "standup"),
            ("participant_left", "retro"), ("room_finished", "standup"),
            ("room_finished", "retro")]
        assert {e["reason"] for _, _, e in recovery} == {"server_crash"}
        for room in ("standup", "retro"):  # in order per room, across the restart
            assert receiver.room_order(room) == [i for i, _, r in after if r == room]
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
            closed = {sid: (left, reason) for sid, left, reason in conn.execute(
                "SELECT session_id, left_at, leave_reason FROM sessions")}
        assert len(closed) == 3
        for sid, checkpoint_at in open_at_kill.items():
            assert closed[sid] == (checkpoint_at, "server_crash")
        assert receiver.bad_signatures == []
        assert "recovered_sessions=2" in d.log() or '"recovered_sessions": 2' in d.log()
    finally:
        await asyncio.to_thread(stop_daemon, d)
        await receiver.stop()


async def test_a_clean_shutdown_finishes_every_room_and_session(tmp_path: Path,
                                                                 receiver: Receiver) -> None:
    d = await asyncio.to_thread(start, tmp_path, receiver.port,
                                {"server": {"drain_timeout_s": 0.5}})
    ada, _ = await join(d, "ada", "standup")
    await asyncio.to_thread(stop_daemon, d)  # SIGTERM: drain, then every room finishes
    assert d.proc.returncode == 0
    await ada.close()
    store = tmp_path / "sfu.db"
    assert [t for _, t, _ in committed(store)] == [
        "room_started", "participant_joined", "participant_left", "room_finished"]
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT leave_reason FROM sessions").fetchall() == [
            ("server_shutdown",)]
        assert conn.execute("SELECT finish_reason FROM rooms").fetchall() == [
            ("server_shutdown",)]
    # a reachable endpoint gets them before the exit
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        statuses = {s for (s,) in conn.execute("SELECT status FROM deliveries")}
    assert statuses == {"delivered"}
    assert [e["type"] for e in receiver.received][-2:] == ["participant_left", "room_finished"]
