"""Malformed and unknown media from a real publisher is counted and dropped; others play on."""

from __future__ import annotations

import asyncio
import json
import re
import struct

import pytest
import websockets
from aiortc.mediastreams import VideoStreamTrack

from tests.conftest import Daemon, start_daemon, stop_daemon
from tests.integration.test_forward_aiortc import frames
from tests.peers import AiortcParticipant


def metric(d: Daemon, name: str, labels: str = "") -> float:
    _, body = d.get("/metrics", port=d.metrics_port)
    pattern = re.escape(name + (("{" + labels + "}") if labels else "")) + r" ([0-9.e+]+)"
    m = re.search(pattern, body.decode())
    return float(m.group(1)) if m else 0.0


@pytest.mark.timeout(60)
async def test_unknown_ssrc_and_malformed_rtcp_are_counted(daemon: Daemon) -> None:
    pub = AiortcParticipant(daemon.ws, daemon.token("pub"))
    sub = AiortcParticipant(daemon.ws, daemon.token("sub"))
    try:
        await sub.connect()
        await pub.connect()
        await pub.publish(VideoStreamTrack())
        await frames(sub, "video", 5, 20)
        # the publisher's DTLS transport (aiortc, test side) protects and sends raw bytes
        transport = pub.publisher.getTransceivers()[0].sender.transport
        for i in range(5):
            await transport._send_rtp(struct.pack("!BBHII", 0x80, 96, i, i, 0xDEADBEEF) + bytes(100))
        for _ in range(3):  # an RTCP SR whose length field overruns the packet
            await transport._send_rtp(b"\x80\xc8\x00\x20" + bytes(24))
        await asyncio.sleep(1.0)
        assert metric(daemon, "sfu_forward_dropped_packets_total", 'reason="unknown_ssrc"') >= 5
        assert metric(daemon, "sfu_forward_dropped_packets_total", 'reason="malformed"') >= 3
        # the subscriber keeps decoding
        assert len(await frames(sub, "video", 10, 10)) == 10
        assert daemon.proc.poll() is None
    finally:
        await pub.close()
        await sub.close()


@pytest.mark.timeout(60)
async def test_a_client_that_never_reads_is_cut_off_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = await asyncio.to_thread(start_daemon, tmp_path, {
        "signaling": {"rate_limit_per_s": 100000.0, "rate_limit_burst": 100000}})
    try:
        admin_tok = d.token("ops", "room1", room_join=False, room_admin=True)
        # a client that never reads: websockets stops reading the socket once its queue holds
        # one message, so the server's TCP send buffer fills
        slow = await websockets.connect(f"{d.ws}?access_token={d.token('slow')}", max_queue=1)
        good = await websockets.connect(f"{d.ws}?access_token={d.token('good')}")
        admin = await websockets.connect(f"{d.ws}?access_token={admin_tok}")
        payload = "A" * 32000
        for _ in range(1300):
            await admin.send(json.dumps({"type": "send_data", "payload": payload,
                                         "destination_identities": ["slow"]}))
        await admin.send(json.dumps({"type": "send_data", "id": "last", "payload": "aGk=",
                                     "destination_identities": ["good"]}))
        got_data = False
        while not got_data:
            msg = json.loads(await asyncio.wait_for(good.recv(), 20))
            got_data = msg["type"] == "data" and msg["payload"] == "aGk="
        assert metric(d, "sfu_signaling_errors_total", 'code="slow_consumer"') >= 1
        await good.send(json.dumps({"type": "ping", "id": 1}))
        while json.loads(await asyncio.wait_for(good.recv(), 5))["type"] != "pong":
            pass
        slow.transport.abort()
    finally:
        await asyncio.to_thread(stop_daemon, d)


@pytest.mark.timeout(60)
async def test_a_media_subscriber_that_never_reads(daemon: Daemon) -> None:
    pub = AiortcParticipant(daemon.ws, daemon.token("pub"))
    dead = AiortcParticipant(daemon.ws, daemon.token("dead"))
    good = AiortcParticipant(daemon.ws, daemon.token("good"))
    try:
        for p in (dead, good):
            await p.connect()
        await pub.connect()
        await pub.publish(VideoStreamTrack())
        await frames(dead, "video", 3, 20)
        await frames(good, "video", 3, 20)
        # the dead subscriber's sockets stop reading: the kernel drops what the SFU sends it
        ice = dead.subscriber.sctp.transport.transport  # RTCIceTransport (test side)
        for protocol in ice._connection._protocols:
            protocol.transport.pause_reading()
        before = metric(daemon, "sfu_forwarded_packets_total")
        got = await frames(good, "video", 60, 20)  # ~2 s of video still decodes
        assert len(got) == 60
        assert metric(daemon, "sfu_forwarded_packets_total") > before
        assert daemon.get("/healthz")[0] == 200
    finally:
        for p in (pub, dead, good):
            await p.close()
