"""Lip sync through the SFU: its Sender Reports keep the publisher's audio/video offset.

The publisher states, in its own Sender Reports, that its audio leads its video by 120 ms
(as if the audio pts were shifted by +120 ms): for audio and video captured at the same
instant t (on one media clock), NTP_audio(t) − NTP_video(t) = +120 ms, where NTP_k(t) is
SR_k.ntp + (rtp_k(t) − SR_k.rtp) / clock_rate_k. The SFU rewrites SSRCs (and may rewrite timestamps) and sends its own SRs on each
down-track; a receiver that lip-syncs with them must find the same 120 ms. Checked at
instants where an audio frame and a video frame were captured together (t = k/10 s), with
every SR of each phase: at the start, after a 10 s mute of the audio (the `mute` message
and no audio packets at all), and after the publisher leaves and publishes a new track pair
on a new connection.

The publisher is aiortc with paced tracks on one media clock (the audio RTP timestamps jump
over the mute, as a capture clock would). aiortc stamps its SRs with the send time of the
last packet, which jitters with scheduling and VP8 encoding; the test rewrites the NTP field
of the publisher's SRs (before SRTP) to the exact capture time of the RTP timestamp they
carry, plus 120 ms for audio, so the publisher's stated offset is exactly 120 ms and any
error measured downstream is the SFU's.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import RtcpPacket, RtcpSrPacket

from sfu.rtp.ntp import ntp_from_unix, unix_from_ntp
from tests.conftest import Daemon
from tests.peers import AiortcParticipant

AUDIO_LEAD_S = Fraction(120, 1000)
TOLERANCE_S = 0.005
MUTE_S = 10
SEED = 7
VIDEO_FPS, AUDIO_FPS = 30, 50  # 20 ms Opus frames
RATES = {"audio": 48000, "video": 90000}
COMMON_PERIOD = Fraction(1, 10)  # a video and an audio frame start together every 100 ms


class MediaClock:
    """One capture clock for both tracks: media time t ↔ wall time ``t0 + t``."""

    def __init__(self) -> None:
        self.t0 = time.time()

    def now(self) -> float:
        return time.time() - self.t0


class PacedTrack(MediaStreamTrack):
    """Frames at ``fps`` on the shared media clock; ``last_t`` is the capture time of the
    frame returned last. While muted no frame is returned; the next one after unmuting is
    the one captured then (the timestamps jump over the mute)."""

    fps = 30

    def __init__(self, clock: MediaClock, seed: int) -> None:
        super().__init__()
        self.clock = clock
        self.rng = np.random.default_rng(seed)
        self.index = int(clock.now() * self.fps) + 1
        self.last_t = Fraction(0)
        self.unmuted = asyncio.Event()
        self.unmuted.set()

    def mute(self) -> None:
        self.unmuted.clear()

    def unmute(self) -> None:
        self.index = max(self.index, int(self.clock.now() * self.fps) + 1)
        self.unmuted.set()

    async def _next(self) -> Fraction:
        while True:
            await self.unmuted.wait()
            t = Fraction(self.index, self.fps)
            await asyncio.sleep(max(0.0, float(t) - self.clock.now()))
            if self.unmuted.is_set() and t == Fraction(self.index, self.fps):
                break  # (muted meanwhile: capture the next frame after the unmute instead)
        self.index += 1
        self.last_t = t
        return t


class NoiseVideoTrack(PacedTrack):
    kind = "video"
    fps = VIDEO_FPS

    async def recv(self) -> av.VideoFrame:
        t = await self._next()
        y = self.rng.integers(0, 256, (120, 160), dtype=np.uint8)  # every packet differs
        planes = np.concatenate([y.ravel(), np.full(160 * 120 // 2, 128, np.uint8)])
        frame = av.VideoFrame.from_ndarray(planes.reshape(180, 160), format="yuv420p")
        frame.pts = int(t * 90000)
        frame.time_base = Fraction(1, 90000)
        return frame


class NoiseAudioTrack(PacedTrack):
    kind = "audio"
    fps = AUDIO_FPS

    async def recv(self) -> av.AudioFrame:
        t = await self._next()
        samples = self.rng.integers(-3000, 3000, (1, 2 * 960), dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = int(t * 48000)
        frame.time_base = Fraction(1, 48000)
        return frame


# -- RTP helpers ---------------------------------------------------------------------------
def rtp_fields(data: bytes) -> tuple[int, int, bytes]:
    """(timestamp, ssrc, payload) of a plain RTP packet."""
    cc = data[0] & 0x0F
    off = 12 + 4 * cc
    if data[0] & 0x10:
        off += 4 + 4 * int.from_bytes(data[off + 2:off + 4], "big")
    end = len(data) - (data[-1] if data[0] & 0x20 else 0)
    return int.from_bytes(data[4:8], "big"), int.from_bytes(data[8:12], "big"), data[off:end]


def vp8_body(payload: bytes) -> bytes:
    """The VP8 payload without its payload descriptor (which an SFU may rewrite)."""
    if not payload:
        return payload
    off = 1
    if payload[0] & 0x80 and len(payload) > 1:
        x = payload[1]
        off = 2
        if x & 0x80:  # I: picture id, 7 or 15 bits
            off += 2 if len(payload) > off and payload[off] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            off += 1
        if x & 0x30:  # T or K: TID/KEYIDX byte
            off += 1
    return payload[off:]


def key(kind: str, payload: bytes) -> bytes:
    body = vp8_body(payload) if kind == "video" else payload
    return hashlib.blake2b(kind.encode() + body, digest_size=12).digest()


def signed32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


# -- taps on aiortc's DTLS transports (plain RTP/RTCP, before SRTP) ------------------------
class PublisherTap:
    """Learns each sender's RTP timestamp ↔ capture time line from its first packet and
    rewrites its SRs' NTP field to that line (+120 ms for audio)."""

    def __init__(self, pc: Any, clock: MediaClock, captured: dict[bytes, Fraction]) -> None:
        self.pc = pc
        self.clock = clock
        self.captured = captured  # shared: payload key -> capture time
        self.tracks: dict[int, PacedTrack] = {}  # media ssrc -> track
        self.origin: dict[int, int] = {}  # ssrc -> RTP timestamp at media time 0
        self.off_line = 0  # packets whose timestamp is not their frame's capture time
        self.srs = 0
        self.srs_dropped = 0

    def bind(self) -> None:
        for t in self.pc.getTransceivers():
            if isinstance(t.sender.track, PacedTrack):
                self.tracks[t.sender._ssrc] = t.sender.track

    def owns(self, transport: RTCDtlsTransport) -> bool:
        return any(t.sender.transport is transport for t in self.pc.getTransceivers())

    def capture_time(self, ssrc: int, ts: int) -> Fraction:
        """The capture time of the frame an RTP timestamp belongs to. aiortc's VP8 timestamps
        go through PyAV's microsecond time base and are truncated (up to 1/90000 s early):
        snap to the frame grid."""
        track = self.tracks[ssrc]
        t = Fraction((ts - self.origin[ssrc]) & 0xFFFFFFFF, RATES[track.kind])
        return Fraction(round(t * track.fps), track.fps)

    def on_send(self, data: bytes) -> bytes | None:
        if 192 <= data[1] <= 223:  # RTCP
            ssrc = int.from_bytes(data[4:8], "big")
            if data[1] != 200 or ssrc not in self.tracks:
                return data
            if ssrc not in self.origin:
                self.srs_dropped += 1  # an SR before any RTP: nothing to state yet
                return None
            track = self.tracks[ssrc]
            t = self.capture_time(ssrc, int.from_bytes(data[16:20], "big"))
            lead = AUDIO_LEAD_S if track.kind == "audio" else 0
            out = bytearray(data)
            out[8:16] = ntp_from_unix(self.clock.t0 + float(t + lead)).to_bytes(8, "big")
            self.srs += 1
            return bytes(out)
        ts, ssrc, payload = rtp_fields(data)
        track = self.tracks.get(ssrc)
        if track is None:
            return data  # RTX
        if ssrc not in self.origin:
            self.origin[ssrc] = (ts - int(track.last_t * RATES[track.kind])) & 0xFFFFFFFF
        t = self.capture_time(ssrc, ts)
        if t != track.last_t:
            self.off_line += 1  # Opus: the first packet after a mute continues the old line
        self.captured[key(track.kind, payload)] = t
        return data


@dataclass
class Received:
    at: float
    ssrc: int
    ts: int
    key_audio: bytes
    key_video: bytes


@dataclass
class Sr:
    at: float
    ssrc: int
    ntp_s: float
    rtp: int


@dataclass
class SubscriberTap:
    pc: Any
    packets: list[Received] = field(default_factory=list)
    srs: list[Sr] = field(default_factory=list)

    def owns(self, transport: RTCDtlsTransport) -> bool:
        return any(t.receiver.transport is transport for t in self.pc.getTransceivers())

    def on_rtp(self, data: bytes) -> None:
        ts, ssrc, payload = rtp_fields(data)
        self.packets.append(Received(time.monotonic(), ssrc, ts, key("audio", payload),
                                     key("video", payload)))

    def on_rtcp(self, data: bytes) -> None:
        now = time.monotonic()
        for p in RtcpPacket.parse(data):
            if isinstance(p, RtcpSrPacket):
                self.srs.append(Sr(now, p.ssrc, unix_from_ntp(p.sender_info.ntp_timestamp),
                                   p.sender_info.rtp_timestamp))


def install_taps(monkeypatch: pytest.MonkeyPatch, publishers: list[PublisherTap],
                 sub: SubscriberTap) -> None:
    orig_send = RTCDtlsTransport._send_rtp
    orig_rtp = RTCDtlsTransport._handle_rtp_data
    orig_rtcp = RTCDtlsTransport._handle_rtcp_data

    async def send_rtp(self: RTCDtlsTransport, data: bytes) -> None:
        for tap in publishers:
            if tap.owns(self):
                out = tap.on_send(data)
                if out is None:
                    return
                data = out
        await orig_send(self, data)

    async def handle_rtp_data(self: RTCDtlsTransport, data: bytes, arrival_time_ms: int) -> None:
        if sub.owns(self):
            sub.on_rtp(data)
        await orig_rtp(self, data, arrival_time_ms)

    async def handle_rtcp_data(self: RTCDtlsTransport, data: bytes) -> None:
        if sub.owns(self):
            sub.on_rtcp(data)
        await orig_rtcp(self, data)

    monkeypatch.setattr(RTCDtlsTransport, "_send_rtp", send_rtp)
    monkeypatch.setattr(RTCDtlsTransport, "_handle_rtp_data", handle_rtp_data)
    monkeypatch.setattr(RTCDtlsTransport, "_handle_rtcp_data", handle_rtcp_data)


# -- the measurement -----------------------------------------------------------------------
@dataclass
class Phase:
    name: str
    offsets_ms: list[float]
    instants: int
    srs: dict[str, int]
    ssrcs: dict[str, int]

    def __str__(self) -> str:
        lo, hi = min(self.offsets_ms), max(self.offsets_ms)
        return (f"{self.name}: NTP(audio) - NTP(video) = {lo:.3f}..{hi:.3f} ms over "
                f"{self.instants} capture instants x SRs {self.srs}")


def matched(sub: SubscriberTap, captured: dict[bytes, Fraction], since: float,
            not_before: Fraction) -> Iterator[tuple[str, Received, Fraction]]:
    for p in sub.packets:
        if p.at < since:
            continue
        for kind, k in (("audio", p.key_audio), ("video", p.key_video)):
            t = captured.get(k)
            if t is not None and t >= not_before:
                yield kind, p, t


def measure(name: str, sub: SubscriberTap, captured: dict[bytes, Fraction], since: float,
            not_before: Fraction) -> Phase | None:
    """NTP(audio) − NTP(video) at common capture instants, from every SR the subscriber got
    on each down-track after the phase's first packet on it; None while too few SRs."""
    by_kind: dict[str, dict[Fraction, tuple[int, int]]] = {"audio": {}, "video": {}}
    first_at: dict[int, float] = {}
    for kind, p, t in matched(sub, captured, since, not_before):
        by_kind[kind].setdefault(t, (p.ssrc, p.ts))
        first_at.setdefault(p.ssrc, p.at)
    ssrcs = {kind: {s for s, _ in v.values()} for kind, v in by_kind.items()}
    if not all(ssrcs.values()):
        return None
    assert all(len(s) == 1 for s in ssrcs.values()), f"{name}: several SSRCs per kind {ssrcs}"
    ssrc = {kind: next(iter(s)) for kind, s in ssrcs.items()}
    srs = {kind: [sr for sr in sub.srs if sr.ssrc == ssrc[kind] and sr.at > first_at[ssrc[kind]]]
           for kind in ssrc}
    if any(len(v) < 3 for v in srs.values()):
        return None
    instants = sorted(t for t in by_kind["audio"] if t in by_kind["video"]
                      and (t / COMMON_PERIOD).denominator == 1)
    if len(instants) < 10:
        return None
    offsets = []
    for t in instants:
        ntp = {}
        for kind in ("audio", "video"):
            ts = by_kind[kind][t][1]
            ntp[kind] = [sr.ntp_s + signed32(ts - sr.rtp) / RATES[kind] for sr in srs[kind]]
        offsets += [(a - v) * 1000 for a in ntp["audio"] for v in ntp["video"]]
    return Phase(name, offsets, len(instants), {k: len(v) for k, v in srs.items()},
                 ssrc)


async def wait_phase(name: str, sub: SubscriberTap, captured: dict[bytes, Fraction],
                     since: float, not_before: Fraction, timeout_s: float) -> Phase:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        phase = measure(name, sub, captured, since, not_before)
        if phase is not None:
            return phase
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name}: not enough matched packets and SRs in {timeout_s} s "
                         f"({len(sub.packets)} packets, {len(sub.srs)} SRs received)")


async def track_sids(p: AiortcParticipant, *tracks: PacedTrack) -> dict[str, str]:
    return {t.kind: (await p.wait_for(lambda m, t=t: m.get("type") == "track_published"
                                      and m.get("cid") == t.id))["track"]["sid"]
            for t in tracks}


@pytest.mark.timeout(60)
async def test_lip_sync_survives_mute_and_republish(daemon: Daemon,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    clock = MediaClock()
    captured: dict[bytes, Fraction] = {}
    sub = AiortcParticipant(daemon.ws, daemon.token("sub"))
    pub = AiortcParticipant(daemon.ws, daemon.token("pub"))
    pub_taps = [PublisherTap(pub.publisher, clock, captured)]
    sub_tap = SubscriberTap(sub.subscriber)
    install_taps(monkeypatch, pub_taps, sub_tap)
    phases: list[Phase] = []
    pub2: AiortcParticipant | None = None
    try:
        await sub.connect()
        await pub.connect()
        video, audio = NoiseVideoTrack(clock, SEED), NoiseAudioTrack(clock, SEED + 1)
        await pub.publish(video, audio)
        pub_taps[0].bind()
        phases.append(await wait_phase("start", sub_tap, captured, 0.0, Fraction(0), 10))

        # mute: the client says so and its audio stops flowing for 10 s (video goes on)
        sids = await track_sids(pub, video, audio)
        await pub.send({"type": "mute", "id": "mute", "track_sid": sids["audio"],
                        "muted": True})
        ack = await asyncio.wait_for(pub.wait_for(lambda m: m.get("id") == "mute"), 5)
        assert ack["type"] == "ack", ack
        audio.mute()
        muted_at = clock.now()
        await asyncio.sleep(MUTE_S)
        audio.unmute()
        resumed = Fraction(audio.index, AUDIO_FPS)
        assert float(resumed) - muted_at >= MUTE_S
        await pub.send({"type": "mute", "id": "unmute", "track_sid": sids["audio"],
                        "muted": False})
        during = [p for p in sub_tap.packets if p.key_audio in captured
                  and muted_at + 0.1 < float(captured[p.key_audio]) < float(resumed)]
        assert not during, "audio kept flowing during the mute"
        phases.append(await wait_phase(f"after a {MUTE_S} s mute", sub_tap, captured, 0.0,
                                       resumed, 10))

        # republish: the publisher leaves (this protocol has no unpublish) and a new
        # connection of the same identity publishes a new track pair
        await pub.send({"type": "leave", "id": "bye"})
        await pub.close()
        left_at = time.monotonic()
        pub2 = AiortcParticipant(daemon.ws, daemon.token("pub"))
        pub_taps.append(PublisherTap(pub2.publisher, clock, captured))
        await pub2.connect()
        video2, audio2 = NoiseVideoTrack(clock, SEED + 2), NoiseAudioTrack(clock, SEED + 3)
        await pub2.publish(video2, audio2)
        pub_taps[1].bind()
        new_sids = await track_sids(pub2, video2, audio2)
        for sid in new_sids.values():  # the SFU announced the new tracks to the subscriber
            await asyncio.wait_for(sub.wait_for(
                lambda m, sid=sid: m.get("type") == "track_published"
                and m["track"]["sid"] == sid), 5)
        phases.append(await wait_phase("after republish", sub_tap, captured, left_at,
                                       Fraction(0), 10))
    finally:
        await sub.close()
        await pub.close()
        if pub2 is not None:
            await pub2.close()

    report = "\n".join(str(p) for p in phases)
    print(f"\n{report}\npublisher SRs (rewritten, dropped before RTP): "
          f"{[(t.srs, t.srs_dropped) for t in pub_taps]}; packets off their frame's timestamp "
          f"line (the Opus packet right after the unmute): {[t.off_line for t in pub_taps]}")
    assert set(phases[2].ssrcs.values()).isdisjoint(phases[0].ssrcs.values()), report
    for p in phases:
        worst = max(abs(o - float(AUDIO_LEAD_S) * 1000) for o in p.offsets_ms)
        assert worst <= TOLERANCE_S * 1000, f"{p.name}: off by {worst:.3f} ms\n{report}"
