"""Usage records carry real media figures: a bench publisher (Opus + VP8) and a bench
subscriber run through a daemon; after they are gone their session rows (read from the
daemon's SQLite store) hold the bytes the publisher sent, what the subscriber was sent,
the seconds each published and subscribed, and an average connection quality."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCCertificate

from bench.client import BenchPublisher, BenchSubscriber, Ticker
from bench.media import load_media
from bench.rtp import PublisherCore
from tests.conftest import Daemon

pytestmark = pytest.mark.timeout(90)


def records(store: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return {r["identity"]: dict(r) for r in conn.execute("SELECT * FROM sessions")}


async def test_session_records_hold_bytes_seconds_and_quality(daemon_factory: Any) -> None:
    d: Daemon = await asyncio.to_thread(daemon_factory, {
        "store": {"checkpoint_interval_s": 1.0},
        "room": {"connection_quality_interval_s": 0.5}})
    store = d.config_path.parent / "sfu.db"
    media = load_media(width=320, height=180, fps=30, duration_s=1.0)
    certificate = RTCCertificate.generateCertificate()
    ticker = Ticker()
    sub = BenchSubscriber(d.ws, d.token("sub"), "sub", certificate, ticker,
                          rng=random.Random(2))
    pub = BenchPublisher(d.ws, d.token("pub"), "pub", certificate, media, rng=random.Random(1))
    try:
        await sub.start(timeout_s=10)
        await sub.wait_connected(10)
        await pub.start(timeout_s=10)
        started = time.monotonic()
        deadline = started + 15
        while sub.core.packets < 200:
            assert time.monotonic() < deadline, "no media at the subscriber"
            await asyncio.sleep(0.05)
        await asyncio.sleep(3.0)
    finally:
        await pub.close()
        await asyncio.sleep(0.5)
        await sub.close()
        ticker.stop()
    assert isinstance(pub.core, PublisherCore)
    sent_payload = pub.core.audio.octets + pub.core.video.octets  # originals, no RTX
    received = sum(s.octets for s in sub.core.streams.values())  # whole packets, RTX too
    deadline = time.monotonic() + 10
    while not all(r["left_at"] for r in records(store).values()):
        assert time.monotonic() < deadline, records(store)
        await asyncio.sleep(0.1)
    rows = records(store)
    p, s = rows["pub"], rows["sub"]
    assert {p["leave_reason"], s["leave_reason"]} == {"client_request"}
    # what the SFU took in is what the publisher sent (less what came before the SRTP keys)
    assert 0.95 * sent_payload <= p["bytes_in"] <= sent_payload
    # what it sent the subscriber: payload bytes, below the whole packets received
    assert 0.7 * received <= s["bytes_out"] < received
    assert s["bytes_in"] == 0 and p["bytes_out"] == 0  # sub publishes nothing; pub sees no one
    duration = p["left_at"] - p["joined_at"]
    assert 1.5 * 3.0 <= p["published_s"] <= 2 * duration  # two tracks
    assert 1.5 * 3.0 <= s["subscribed_s"] <= 2 * (s["left_at"] - s["joined_at"])
    for r in (p, s):
        assert r["quality_samples"] >= 2
        assert 1.0 <= r["quality_sum"] / r["quality_samples"] <= 5.0
    # the connection-quality histogram holds exactly the scores the sessions averaged
    status, body = d.get("/metrics", port=d.metrics_port)
    assert status == 200
    (count,) = [float(line.split()[1]) for line in body.decode().splitlines()
                if line.startswith("sfu_connection_quality_score_count ")]
    assert count == p["quality_samples"] + s["quality_samples"]
