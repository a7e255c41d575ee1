"""Forwarding through seeded loss and reordering on both legs (aiortc publisher and subscriber).

publisher ─┐                         ┌─ SFU ─┐                         ┌─ subscriber
           └─ LossRelay (5 % loss, 2 % reorder of SRTP/SRTCP, both directions, both legs) ┘

Proves that NACK/RTX recovery works end to end: the SFU NACKs the publisher for what the
publisher→SFU leg lost (and forwards the publisher's retransmissions), answers the
subscriber's NACKs with RTX from its packet cache, and retransmits nothing that was not
asked for. Every frame the publisher produced, from the first one the subscriber decoded on,
is decoded by the subscriber, with the right picture (each frame carries its index in its
pixels). Windows are counted in frames (media time), not wall-clock seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import pytest
from aiortc.mediastreams import VIDEO_TIME_BASE, VideoStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import RTCP_RTPFB_NACK, RtcpPacket, RtcpRtpfbPacket

from tests.conftest import Daemon
from tests.lossrelay import LossRelay
from tests.peers import RelayedParticipant

SEED = 20240607
WIDTH, HEIGHT = 320, 240
FPS = 30
WINDOW_FRAMES = 8 * FPS  # frames that must all be decoded (8 s of media)
TAIL_FRAMES = 1 * FPS  # frames after the window that may still be in flight (1 s)
BITS = 16
BLOCK_W, BLOCK_H = WIDTH // 8, 60  # 2 rows of 8 index blocks, noise below


# -- the publisher's video: each frame shows its index --------------------------------------
def draw_frame(index: int, rng: np.random.Generator) -> av.VideoFrame:
    y = np.empty((HEIGHT, WIDTH), dtype=np.uint8)
    for bit in range(BITS):
        row, col = divmod(bit, 8)
        y[row * BLOCK_H:(row + 1) * BLOCK_H, col * BLOCK_W:(col + 1) * BLOCK_W] = (
            220 if index >> bit & 1 else 30)
    # changing content below, so that frames take several packets
    y[2 * BLOCK_H:] = rng.integers(0, 256, (HEIGHT - 2 * BLOCK_H, WIDTH), dtype=np.uint8)
    chroma = np.full(WIDTH * HEIGHT // 2, 128, dtype=np.uint8)
    planes = np.concatenate([y.ravel(), chroma]).reshape(HEIGHT * 3 // 2, WIDTH)
    return av.VideoFrame.from_ndarray(planes, format="yuv420p")


def read_index(frame: av.VideoFrame) -> int:
    y = frame.to_ndarray(format="yuv420p")[:HEIGHT]
    index = 0
    for bit in range(BITS):
        row, col = divmod(bit, 8)
        block = y[row * BLOCK_H + 15:(row + 1) * BLOCK_H - 15,
                  col * BLOCK_W + 10:(col + 1) * BLOCK_W - 10]
        if block.mean() > 125:
            index |= 1 << bit
    return index


class IndexedVideoTrack(VideoStreamTrack):
    """aiortc's paced VideoStreamTrack (30 fps, pts in 1/90000), drawing the frame index."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.rng = np.random.default_rng(seed)
        self.produced: list[int] = []  # frame indexes returned to the sender, in order

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        assert time_base == VIDEO_TIME_BASE
        index = pts // (VIDEO_TIME_BASE.denominator // FPS)
        frame = draw_frame(index, self.rng)
        frame.pts = pts
        frame.time_base = time_base
        self.produced.append(index)
        return frame


# -- clients reach the relay instead of the SFU --------------------------------------------
# -- RTP/RTCP taps on aiortc's DTLS transports (plain packets, before/after SRTP) ----------
def rtp_fields(data: bytes) -> tuple[int, int, int, int, bytes]:
    """(payload type, seq, timestamp, ssrc, payload) of a plain RTP packet."""
    cc = data[0] & 0x0F
    off = 12 + 4 * cc
    if data[0] & 0x10:
        off += 4 + 4 * int.from_bytes(data[off + 2:off + 4], "big")
    end = len(data) - (data[-1] if data[0] & 0x20 else 0)
    return (data[1] & 0x7F, int.from_bytes(data[2:4], "big"), int.from_bytes(data[4:8], "big"),
            int.from_bytes(data[8:12], "big"), data[off:end])


def vp8_digest(payload: bytes) -> bytes:
    """A digest of the VP8 payload without its payload descriptor (which an SFU may
    rewrite): the same for a packet and its retransmission, distinct between packets."""
    off = 1
    if payload and payload[0] & 0x80 and len(payload) > 1:
        x, off = payload[1], 2
        if x & 0x80:  # I: 7- or 15-bit picture id
            off += 2 if len(payload) > off and payload[off] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            off += 1
        if x & 0x30:  # T/K
            off += 1
    return hashlib.blake2b(payload[off:], digest_size=12).digest()


@dataclass
class Tap:
    """What one peer connection's transport sent and received as plain RTP/RTCP."""

    pc: Any
    rtx_pts: set[int] = field(default_factory=set)
    rtx_media_ssrc: dict[int, int] = field(default_factory=dict)  # from a=ssrc-group:FID
    nacked: dict[tuple[int, int], float] = field(default_factory=dict)  # (ssrc, seq) -> first
    nack_packets: int = 0
    received: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (ssrc, seq) -> dig
    rtx: list[tuple[float, int, int, bytes]] = field(default_factory=list)  # at, ssrc, osn, dig
    sent: set[bytes] = field(default_factory=set)  # digests of media packets sent
    first_ts: dict[int, int] = field(default_factory=dict)

    def owns(self, transport: RTCDtlsTransport) -> bool:
        return any(t.receiver.transport is transport or t.sender.transport is transport
                   for t in self.pc.getTransceivers())

    def _learn_sdp(self) -> None:
        sdp = self.pc.remoteDescription.sdp if self.pc.remoteDescription else ""
        self.rtx_pts = {int(pt) for pt in re.findall(r"a=rtpmap:(\d+) rtx/", sdp)}
        for media, rtx in re.findall(r"a=ssrc-group:FID (\d+) (\d+)", sdp):
            self.rtx_media_ssrc[int(rtx)] = int(media)

    def on_receive(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.rtx_pts:
            self._learn_sdp()
        pt, seq, _, ssrc, payload = rtp_fields(data)
        if pt in self.rtx_pts:
            if len(payload) >= 2:  # (padding-only RTX would be a probe)
                osn = int.from_bytes(payload[:2], "big")
                self.rtx.append((now, ssrc, osn, vp8_digest(payload[2:])))
            return
        self.received[(ssrc, seq)] = vp8_digest(payload)

    def on_send(self, data: bytes) -> None:
        now = time.monotonic()
        if 192 <= data[1] <= 223:  # RTCP
            for packet in RtcpPacket.parse(data):
                if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                    self.nack_packets += 1
                    for seq in packet.lost:
                        self.nacked.setdefault((packet.media_ssrc, seq), now)
            return
        if not self.rtx_pts:
            self._learn_sdp()
        pt, _, _, _, payload = rtp_fields(data)
        if pt not in self.rtx_pts:
            self.sent.add(vp8_digest(payload))


def install_taps(monkeypatch: pytest.MonkeyPatch, *taps: Tap) -> None:
    orig_rtp = RTCDtlsTransport._handle_rtp_data
    orig_send = RTCDtlsTransport._send_rtp

    async def handle_rtp_data(self: RTCDtlsTransport, data: bytes, arrival_time_ms: int) -> None:
        for tap in taps:
            if tap.owns(self):
                tap.on_receive(data)
        await orig_rtp(self, data, arrival_time_ms)

    async def send_rtp(self: RTCDtlsTransport, data: bytes) -> None:
        for tap in taps:
            if tap.owns(self):
                tap.on_send(data)
        await orig_send(self, data)

    monkeypatch.setattr(RTCDtlsTransport, "_handle_rtp_data", handle_rtp_data)
    monkeypatch.setattr(RTCDtlsTransport, "_send_rtp", send_rtp)


def metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    assert m is not None, f"{name}{labels} not in /metrics"
    return float(m.group(1))


def first_codec(sdp: str, kind: str) -> str:
    m = re.search(rf"^m={kind} \d+ \S+ (\d+)", sdp, re.MULTILINE)
    assert m is not None, sdp
    name = re.search(rf"^a=rtpmap:{m.group(1)} ([^/]+)/", sdp, re.MULTILINE)
    assert name is not None, sdp
    return name.group(1)


@pytest.mark.timeout(60)
async def test_every_frame_decoded_through_loss_and_reordering(
        daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    relay = LossRelay(("127.0.0.1", daemon.udp_port), seed=SEED, loss=0.05, reorder=0.02)
    relay_port = await relay.start()
    pub = RelayedParticipant(daemon.ws, daemon.token("pub"), daemon.udp_port, relay_port)
    sub = RelayedParticipant(daemon.ws, daemon.token("sub"), daemon.udp_port, relay_port)
    pub_tap, sub_tap = Tap(pub.publisher), Tap(sub.subscriber)
    install_taps(monkeypatch, pub_tap, sub_tap)
    track = IndexedVideoTrack(SEED)
    decoded: list[tuple[int, int]] = []  # (index drawn in the picture, pts)
    try:
        await sub.connect()
        await pub.connect()
        await pub.publish(track)
        while not sub.tracks:
            await asyncio.wait_for(sub.track_event.wait(), 15)
            sub.track_event.clear()
        remote = sub.tracks[0]

        async def receive() -> None:
            while True:
                frame = await remote.recv()
                assert (frame.width, frame.height) == (WIDTH, HEIGHT)
                decoded.append((read_index(frame), frame.pts))

        receiving = asyncio.create_task(receive())
        # media time: wait until the window plus its tail were decoded (or time runs out)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not receiving.done():
            if decoded and decoded[-1][0] >= decoded[0][0] + WINDOW_FRAMES + TAIL_FRAMES:
                break
            await asyncio.sleep(0.1)
        receiving.cancel()
        metrics = daemon.get("/metrics", port=daemon.metrics_port)[1].decode()
        codec = first_codec(pub.publisher.remoteDescription.sdp, "video")
    finally:
        await pub.close()
        await sub.close()
        relay.close()

    indexes = [i for i, _ in decoded]
    first = indexes[0] if indexes else -1
    window = list(range(first, first + WINDOW_FRAMES))
    missing = sorted(set(window) - set(indexes))
    rtx_not_nacked = [(ssrc, osn) for at, ssrc, osn, _ in sub_tap.rtx
                      if not sub_tap.nacked.get((sub_tap.rtx_media_ssrc.get(ssrc, -1), osn),
                                                float("inf")) < at]
    rtx_unknown = [osn for _, _, osn, dig in sub_tap.rtx if dig not in pub_tap.sent]
    rtx_differs = [osn for _, ssrc, osn, dig in sub_tap.rtx
                   if sub_tap.received.get((sub_tap.rtx_media_ssrc.get(ssrc, -1), osn),
                                           dig) != dig]
    forwarded_unknown = sum(dig not in pub_tap.sent for dig in sub_tap.received.values())
    up, down = relay.stats["up"], relay.stats["down"]
    report = (
        f"codec {codec}; publisher produced {len(track.produced)} frames; subscriber decoded "
        f"{len(indexes)} (indexes {first}..{indexes[-1] if indexes else None}), missing in the "
        f"{WINDOW_FRAMES}-frame window: {missing}\n"
        f"relay up (client→SFU): passed {dict(up.passed)} dropped {dict(up.dropped)} "
        f"reordered {dict(up.reordered)}\n"
        f"relay down (SFU→client): passed {dict(down.passed)} dropped {dict(down.dropped)} "
        f"reordered {dict(down.reordered)}\n"
        f"subscriber: {len(sub_tap.received)} media packets, {sub_tap.nack_packets} NACK "
        f"packets for {len(sub_tap.nacked)} seqs, {len(sub_tap.rtx)} RTX received; RTX not "
        f"NACKed before {rtx_not_nacked}, RTX of unknown content {rtx_unknown}, RTX differing "
        f"from the original {rtx_differs}, forwarded packets of unknown content "
        f"{forwarded_unknown}\n"
        + "\n".join(ln for ln in metrics.splitlines() if ln.startswith(
            ("sfu_nacks_total", "sfu_retransmitted", "sfu_upstream_rtx", "sfu_keyframe_req"))))
    print("\n" + report)

    assert codec == "VP8", report
    assert pub.rewritten and sub.rewritten and len(relay.flows) >= 2, report
    assert up.dropped["rtp"] and up.dropped["rtcp"] and down.dropped["rtp"], report
    assert up.reordered["rtp"] and down.reordered["rtp"], report
    assert not (up.dropped["stun"] or up.dropped["dtls"] or down.dropped["stun"]
                or down.dropped["dtls"]), report
    # every frame from the first decoded one on: decoded once, in order, with its picture
    assert indexes, report
    assert set(window) <= set(track.produced), report
    assert first < 5 * FPS, report  # decoding started early (on the first keyframes)
    assert not missing, report
    assert indexes[:WINDOW_FRAMES] == window, report
    pts0 = decoded[0][1]
    for index, pts in decoded[:WINDOW_FRAMES]:  # timestamps kept (aiortc's are truncated µs)
        assert abs(pts - pts0 - (index - first) * 90000 // FPS) <= 1, (index, pts, report)
    # recovery happened on both legs, and only what was asked for was retransmitted
    assert sub_tap.rtx and sub_tap.nacked, report
    assert not rtx_not_nacked, report
    assert not rtx_unknown and not rtx_differs and not forwarded_unknown, report
    assert metric(metrics, "sfu_retransmitted_packets_total") > 0, report
    assert metric(metrics, "sfu_nacks_total", '{direction="out"}') > 0, report
    assert metric(metrics, "sfu_upstream_rtx_packets_total") > 0, report
