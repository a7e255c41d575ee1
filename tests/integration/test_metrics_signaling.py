"""Signaling and HTTP metrics equal what this test's own clients counted: signaling
messages in and out, errors by code, joins (the join-latency histogram's count), open
connections, HTTP requests by route and status, REST API errors by code, and the event-loop
lag histogram's samples (one per 0.5 s)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import websockets

from tests.conftest import Daemon

pytestmark = pytest.mark.timeout(60)


def scrape(d: Daemon) -> dict[str, float]:
    status, body = d.get("/metrics", port=d.metrics_port)
    assert status == 200
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)", line)
        if m and not line.startswith("#"):
            out[m.group(1)] = float(m.group(2))
    return out


class Counting:
    """A signaling client that counts every frame it sends and receives."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.sent = 0
        self.received: list[dict[str, Any]] = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str) -> Counting:
        return cls(await websockets.connect(url))

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self.received.append(json.loads(frame))
        except websockets.ConnectionClosed:
            pass

    async def send(self, msg: dict[str, Any] | str) -> None:
        self.sent += 1
        await self.ws.send(msg if isinstance(msg, str) else json.dumps(msg))

    async def wait(self, mtype: str, n: int = 1, timeout_s: float = 5) -> None:
        deadline = time.monotonic() + timeout_s
        while sum(1 for m in self.received if m["type"] == mtype) < n:
            assert time.monotonic() < deadline, f"no {mtype} x{n}: {self.received}"
            await asyncio.sleep(0.02)

    async def closed(self) -> None:
        await asyncio.wait_for(self.reader, 10)

    def errors(self, code: str) -> int:
        return sum(1 for m in self.received if m["type"] == "error" and m["code"] == code)


def http_status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_signaling_and_http_metrics_equal_the_clients_counts(daemon: Daemon) -> None:
    before = scrape(daemon)
    t0 = time.monotonic()
    ada = await Counting.open(f"{daemon.ws}?access_token={daemon.token('ada')}")
    bob = await Counting.open(f"{daemon.ws}?access_token={daemon.token('bob')}")
    await ada.wait("join")
    await bob.wait("join")
    await ada.wait("participant_joined")
    during = scrape(daemon)
    assert during["sfu_signaling_connections"] == 2
    for i in range(5):
        await ada.send({"type": "ping", "id": f"p{i}"})
    await ada.wait("pong", 5)
    await bob.send("{not json")
    await bob.send({"type": "no_such_message"})
    await bob.send({"type": "add_track", "cid": "c", "kind": "sound", "source": "camera"})
    await bob.wait("error", 3)
    # a token for another room is refused before any session: one more connection, an error
    refused = await Counting.open(f"{daemon.ws}?access_token={daemon.token('eve', 'x', room_join=False)}")
    await refused.closed()
    for c in (ada, bob):
        await c.send({"type": "leave"})
    for c in (ada, bob):
        await c.closed()
    # HTTP: three /healthz, two API calls without a token (401)
    statuses = [http_status(f"{daemon.http}/healthz") for _ in range(3)]
    statuses += [http_status(f"{daemon.http}/api/rooms") for _ in range(2)]
    assert statuses == [200, 200, 200, 401, 401]
    await asyncio.sleep(1.2)  # the loop-lag monitor samples every 0.5 s
    after = scrape(daemon)
    elapsed = time.monotonic() - t0

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    clients = (ada, bob, refused)
    assert delta('sfu_signaling_messages_total{direction="in"}') == sum(c.sent for c in clients)
    assert delta('sfu_signaling_messages_total{direction="out"}') == sum(
        len(c.received) for c in clients)
    codes: dict[str, int] = {}
    for c in clients:
        for m in c.received:
            if m["type"] == "error":
                codes[m["code"]] = codes.get(m["code"], 0) + 1
    assert sum(codes.values()) == 4
    for code, n in codes.items():
        assert delta(f'sfu_signaling_errors_total{{code="{code}"}}') == n, code
    assert delta("sfu_join_latency_seconds_count") == 2  # the refused one never joined
    assert after["sfu_signaling_connections"] == 0
    assert delta('sfu_http_requests_total{method="GET",route="/healthz",status="200"}') == 3
    assert delta('sfu_api_errors_total{code="token_missing"}') == 2
    # the lag monitor's samples: one per 0.5 s of the window, give or take the edges
    samples = delta("sfu_event_loop_lag_seconds_count")
    assert elapsed / 0.5 - 2 <= samples <= elapsed / 0.5 + 1
