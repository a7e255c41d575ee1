"""aiortc publisher → SFU → aiortc subscribers: decoded video and audio, late joiners."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from tests.conftest import Daemon
from tests.peers import AiortcParticipant

pytestmark = pytest.mark.timeout(90)


async def frames(p: AiortcParticipant, kind: str, n: int, timeout_s: float) -> list[object]:
    deadline = time.monotonic() + timeout_s
    while not any(t.kind == kind for t in p.tracks):
        await asyncio.wait_for(p.track_event.wait(), max(0.01, deadline - time.monotonic()))
        p.track_event.clear()
    track = next(t for t in p.tracks if t.kind == kind)
    got = []
    while len(got) < n:
        got.append(await asyncio.wait_for(track.recv(), max(0.01, deadline - time.monotonic())))
    return got


async def test_one_publisher_three_subscribers(daemon: Daemon) -> None:
    pub = AiortcParticipant(daemon.ws, daemon.token("pub"))
    subs = [AiortcParticipant(daemon.ws, daemon.token(f"sub{i}")) for i in range(3)]
    try:
        for s in subs:
            await s.connect()
        await pub.connect()
        await pub.publish(VideoStreamTrack(), AudioStreamTrack())
        for s in subs:
            video = await frames(s, "video", 10, 20)
            assert all(getattr(f, "width", 0) == 640 for f in video)
            audio = await frames(s, "audio", 10, 10)
            assert all(getattr(f, "sample_rate", 0) == 48000 for f in audio)
    finally:
        for p in (pub, *subs):
            await p.close()


async def test_late_joiner_decodes_a_keyframe_within_1_s(daemon: Daemon) -> None:
    pub = AiortcParticipant(daemon.ws, daemon.token("pub"))
    late = AiortcParticipant(daemon.ws, daemon.token("late"))
    try:
        await pub.connect()
        await pub.publish(VideoStreamTrack())
        await pub.wait_connected(pub.publisher)
        await asyncio.sleep(4)  # aiortc sends a keyframe only every few seconds on its own
        await late.connect()
        await late.wait_connected(late.subscriber)
        # the track arrives with the renegotiation; measure from when it is negotiated
        while not late.tracks:
            await asyncio.wait_for(late.track_event.wait(), 10)
        started = time.monotonic()
        first = await frames(late, "video", 1, 5)
        assert first
        assert time.monotonic() - started < 1.0
    finally:
        await pub.close()
        await late.close()
