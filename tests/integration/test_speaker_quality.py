"""Active speakers and connection quality, end to end with aiortc participants (issue 7).

**Active speaker.** Two aiortc publishers send an audio track that alternates a loud tone
(440 Hz / 660 Hz sine at half of full scale, about -9 dBov) with digital silence, in
opposite phase, ``PHASE_S`` each; a third participant only listens. aiortc computes the
RFC 6464 level of every frame it encodes (RFC 6465 appendix A) and puts it on the packet;
a tap on the publishers' DTLS transports reads it back from the plain RTP, so the test
first proves the levels on the wire follow the tone. Then, for every switch, with the
product default ``speaker_update_interval_ms`` (500): within 1 s of the moment the
generators switched a ``speakers_changed`` names the new speaker first and active, the one
that went silent is reported inactive, and nothing else changes until the next switch.

Timing: each generator is paced on ``time.monotonic()`` (frame ``n`` is due at
``start + n * 20 ms``; its pts is ``n * 960`` in 1/48000) and records when it handed the
first frame of each phase to aiortc's sender. A shared schedule decides the content of a
frame from its due time, so both switch within one frame of each other. Latencies are
measured from the earlier of the two generators' switch moments to the listener reading
the message (``AiortcParticipant.received_at``), on the same clock.

**Connection quality.** One participant publishes audio and video through a seeded loss
relay, another one publishes and subscribes directly; ``connection_quality_interval_s`` is
1 s. With 10 % of the lossy participant's packets dropped its class must reach ``poor``
within ``POOR_WITHIN_S``; with the loss removed, ``good`` or ``excellent`` within
``RECOVER_WITHIN_S``. One case drops on the uplink (client → SFU: scored from the SFU's own
receiver reports about what the participant publishes), one on the downlink (SFU → client:
scored from the participant's subscriber receiver reports). The clean participant stays
``good`` or ``excellent`` throughout.
"""

from __future__ import annotations

import asyncio
import fractions
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError, VideoStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport

from tests.conftest import Daemon, start_daemon, stop_daemon
from tests.lossrelay import LossRelay
from tests.peers import AiortcParticipant, RelayedParticipant

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
AMPLITUDE = 16384  # half of full scale: a sine's RMS is then -9 dBov
PHASE_S = 2.0
PHASES = 7  # A B A B A B A: six switches between speakers, then silence
LEAD_S = 1.0  # silence before the first phase (connections settle)
SWITCH_WITHIN_S = 1.0
EXT_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


# -- the speakers' audio ---------------------------------------------------------------------
class Schedule:
    """Who speaks when: nobody before ``t0``, then track ``k % 2`` in phase ``k``."""

    def __init__(self) -> None:
        self.t0: float | None = None

    def speaker_at(self, t: float) -> int | None:
        if self.t0 is None or t < self.t0:
            return None
        phase = int((t - self.t0) // PHASE_S)
        return phase % 2 if phase < PHASES else None

    def switch_times(self) -> list[float]:
        """Scheduled starts of the phases, and the end of the last one."""
        assert self.t0 is not None
        return [self.t0 + k * PHASE_S for k in range(PHASES + 1)]


@dataclass
class Transition:
    due: float  # when the first frame of the new content was due (monotonic)
    released: float  # when it was handed to the sender (monotonic, >= due)
    loud: bool
    frame: int  # index of that frame


class ToneTrack(MediaStreamTrack):
    """20 ms mono s16 frames at 48 kHz, paced in real time on ``time.monotonic()``: a sine
    while the schedule says this track speaks, digital silence otherwise."""

    kind = "audio"

    def __init__(self, index: int, schedule: Schedule, freq: float) -> None:
        super().__init__()
        self.index = index
        self.schedule = schedule
        self.freq = freq
        self.start: float | None = None
        self.frames = 0  # frames handed out
        self.loud: list[bool] = []  # per frame handed out
        self.transitions: list[Transition] = []
        self.max_lag_s = 0.0  # how late a frame was handed out at worst
        self.started = asyncio.Event()  # the sender asked for the first frame
        self._n = np.arange(FRAME_SAMPLES)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
            self.started.set()
        index = self.frames
        due = self.start + index * FRAME_S
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        released = time.monotonic()
        self.max_lag_s = max(self.max_lag_s, released - due)
        loud = self.schedule.speaker_at(due) == self.index
        if loud:
            n = self._n + index * FRAME_SAMPLES  # continuous phase across frames
            samples = (AMPLITUDE * np.sin(2 * np.pi * self.freq * n / SAMPLE_RATE)).astype(
                np.int16)
        else:
            samples = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        if loud != (self.loud[-1] if self.loud else False):
            self.transitions.append(Transition(due, released, loud, index))
        self.loud.append(loud)
        self.frames += 1
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = index * FRAME_SAMPLES
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame

    def switched_at(self, due_from: float) -> Transition | None:
        """The first transition of a frame due at or after ``due_from``."""
        return next((t for t in self.transitions if t.due >= due_from - 1e-9), None)


# -- the RFC 6464 levels aiortc puts on the wire ---------------------------------------------
def extension(data: bytes, ext_id: int) -> bytes | None:
    """The value of one-byte header extension ``ext_id`` of a plain RTP packet."""
    if not data[0] & 0x10:
        return None
    cc = data[0] & 0x0F
    off = 12 + 4 * cc
    profile = int.from_bytes(data[off:off + 2], "big")
    length = 4 * int.from_bytes(data[off + 2:off + 4], "big")
    if profile != 0xBEDE:
        return None
    pos, end = off + 4, off + 4 + length
    while pos < end:
        b = data[pos]
        if b == 0:  # padding
            pos += 1
            continue
        xid, xlen = b >> 4, (b & 0x0F) + 1
        if xid == 15:
            return None
        if xid == ext_id:
            return data[pos + 1:pos + 1 + xlen]
        pos += 1 + xlen
    return None


@dataclass
class LevelTap:
    """The audio level extension of every RTP packet one publisher sends, in order."""

    pc: Any
    levels: list[int] = field(default_factory=list)  # -dBov, 0..127
    without: int = 0  # audio packets without the extension
    _ext_id: int | None = None

    def owns(self, transport: RTCDtlsTransport) -> bool:
        return any(t.sender.transport is transport for t in self.pc.getTransceivers())

    def ext_id(self) -> int:
        if self._ext_id is None:
            sdp = self.pc.remoteDescription.sdp  # what the SFU's answer agreed to
            m = re.search(rf"^a=extmap:(\d+)(?:/\w+)? {re.escape(EXT_AUDIO_LEVEL)}", sdp,
                          re.MULTILINE)
            self._ext_id = int(m.group(1)) if m else 0
        return self._ext_id

    def on_send(self, data: bytes) -> None:
        if len(data) < 12 or 192 <= data[1] <= 223:  # RTCP
            return
        ext_id = self.ext_id()
        value = extension(data, ext_id) if ext_id else None
        if value is None:
            self.without += 1
        else:
            self.levels.append(value[0] & 0x7F)


def install_level_taps(monkeypatch: pytest.MonkeyPatch, *taps: LevelTap) -> None:
    orig_send = RTCDtlsTransport._send_rtp

    async def send_rtp(self: RTCDtlsTransport, data: bytes) -> None:
        for tap in taps:
            if tap.owns(self):
                tap.on_send(data)
        await orig_send(self, data)

    monkeypatch.setattr(RTCDtlsTransport, "_send_rtp", send_rtp)


def runs(flags: list[bool]) -> list[tuple[bool, int]]:
    """Run-length encoding: [(value, count), ...]."""
    out: list[tuple[bool, int]] = []
    for f in flags:
        if out and out[-1][0] == f:
            out[-1] = (f, out[-1][1] + 1)
        else:
            out.append((f, 1))
    return out


def speaker_messages(p: AiortcParticipant) -> list[tuple[float, list[dict[str, Any]]]]:
    return [(at, m["speakers"]) for at, m in zip(p.received_at, p.messages, strict=True)
            if m["type"] == "speakers_changed"]


def active_order(speakers: list[dict[str, Any]]) -> list[str]:
    return [s["participant_sid"] for s in speakers if s["active"]]


@pytest.mark.timeout(90)
async def test_active_speaker_follows_the_tone(daemon: Daemon,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    schedule = Schedule()
    tracks = [ToneTrack(0, schedule, 440.0), ToneTrack(1, schedule, 660.0)]
    pubs = [AiortcParticipant(daemon.ws, daemon.token(name)) for name in ("alice", "bob")]
    listener = AiortcParticipant(daemon.ws, daemon.token("carol"))
    taps = [LevelTap(p.publisher) for p in pubs]
    install_level_taps(monkeypatch, *taps)
    try:
        await listener.connect()
        for pub, track in zip(pubs, tracks, strict=True):
            await pub.connect()
            await pub.publish(track)
        for pub in pubs:
            await pub.wait_connected(pub.publisher)
        for track in tracks:  # both senders are reading
            await asyncio.wait_for(track.started.wait(), 10)
        schedule.t0 = time.monotonic() + LEAD_S
        end = schedule.switch_times()[-1] + SWITCH_WITHIN_S + 0.5
        await asyncio.sleep(end - time.monotonic())
    finally:
        for p in (*pubs, listener):
            await p.close()

    t0 = schedule.t0
    sids = [p.join["participant"]["sid"] for p in pubs]
    names = {sids[0]: "alice", sids[1]: "bob"}
    msgs = speaker_messages(listener)

    def lines() -> Iterator[str]:
        for i, t in enumerate(tracks):
            yield (f"{names[sids[i]]}: {t.frames} frames, max lag {t.max_lag_s * 1000:.0f} ms, "
                   "switched at " + ", ".join(f"{tr.released - t0:+.3f}s{'↑' if tr.loud else '↓'}"
                                              for tr in t.transitions))
            yield (f"  wire levels (-dBov): {sorted(set(taps[i].levels))}, loud/silent runs: "
                   f"wire {runs([lv <= 30 for lv in taps[i].levels])}, produced {runs(t.loud)}, "
                   f"{taps[i].without} packets without the extension")
        for at, speakers in msgs:
            yield f"{at - t0:+7.3f}s speakers_changed: " + ", ".join(
                f"{names.get(x['participant_sid'], x['participant_sid'])}"
                f"{'' if x['active'] else ' (stopped)'} {x['level']}" for x in speakers)

    report = "\n".join(lines())
    print("\n" + report)

    # 1. aiortc's RFC 6464 levels follow the tone: -9 dBov while it plays, 127 (digital
    #    silence) otherwise, one level per 20 ms packet, in the same runs as the frames
    for i, (track, tap) in enumerate(zip(tracks, taps, strict=True)):
        assert tap.ext_id(), f"the SFU's answer dropped {EXT_AUDIO_LEVEL}\n{report}"
        assert tap.without == 0 and tap.levels, report
        assert all(8 <= lv <= 10 or lv == 127 for lv in tap.levels), report
        wire = runs([lv <= 30 for lv in tap.levels])
        produced = runs(track.loud)
        assert [v for v, _ in wire] == [v for v, _ in produced], (i, report)
        loud_wire = [n for v, n in wire if v]
        loud_produced = [n for v, n in produced if v]
        assert len(loud_produced) == (PHASES + 1 - i) // 2, report
        for a, b in zip(loud_wire, loud_produced, strict=True):
            assert abs(a - b) <= 2, report  # (an encoder could hold back a frame)

    # 2. silence before the first phase: nobody active
    assert all(not active_order(s) for at, s in msgs if at < t0), report

    # 3. every switch (and the final stop) is reported within SWITCH_WITHIN_S
    starts = schedule.switch_times()
    for k, due in enumerate(starts):
        new = k % 2 if k < PHASES else None
        old = (k - 1) % 2 if k > 0 else None
        switched = [tr for tr in (tracks[0].switched_at(due), tracks[1].switched_at(due))
                    if tr is not None and tr.due < due + FRAME_S + 1e-9]
        assert switched, (k, report)
        at = min(tr.released for tr in switched)
        window = [(t, s) for t, s in msgs if at < t <= at + SWITCH_WITHIN_S]
        state_before: list[dict[str, Any]] = next((s for t, s in reversed(msgs) if t <= at), [])
        where = f"switch {k} at {at - t0:+.3f}s"
        if new is not None:
            first = next(((t, s) for t, s in window
                          if s and s[0]["participant_sid"] == sids[new] and s[0]["active"]),
                         None)
            assert first is not None, f"{where}: {names[sids[new]]} not first\n{report}"
            print(f"{where}: {names[sids[new]]} first active after "
                  f"{(first[0] - at) * 1000:.0f} ms")
        if old is not None:
            stopped = next(((t, s) for t, s in window for x in s
                            if x["participant_sid"] == sids[old] and not x["active"]), None)
            assert stopped is not None, f"{where}: {names[sids[old]]} not stopped\n{report}"
            print(f"{where}: {names[sids[old]]} reported stopped after "
                  f"{(stopped[0] - at) * 1000:.0f} ms")
        # one second after the switch the new speaker is the only active one
        state = window[-1][1] if window else state_before
        assert active_order(state) == ([sids[new]] if new is not None else []), (
            f"{where}\n{report}")
        # and that stays so until the next switch (no flapping while steady)
        if k + 1 < len(starts):
            steady = [s for t, s in msgs if at + SWITCH_WITHIN_S < t <= starts[k + 1]]
            assert all(active_order(s) == active_order(state) for s in steady), (
                f"{where}: the active set changed while steady\n{report}")

    # the publishers were told the same as the listener (all of it happened after they joined)
    for pub in pubs:
        assert [s for _, s in speaker_messages(pub)] == [s for _, s in msgs], report


# -- connection quality ----------------------------------------------------------------------
SEED = 7
LOSS = 0.10
QUALITY_INTERVAL_S = 1.0
SETTLE_S = 4.0  # clean media before the loss starts
POOR_WITHIN_S = 15.0
RECOVER_WITHIN_S = 15.0
GOOD = ("good", "excellent")
WIDTH, HEIGHT = 160, 120


class NoiseVideoTrack(VideoStreamTrack):
    """aiortc's paced 30 fps VideoStreamTrack with seeded noise: frames of several packets."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.rng = np.random.default_rng(seed)

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        planes = self.rng.integers(0, 256, (HEIGHT * 3 // 2, WIDTH), dtype=np.uint8)
        planes[HEIGHT:] = 128  # grey chroma
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts = pts
        frame.time_base = time_base
        return frame


class QualityLog:
    """The ``connection_quality`` updates one participant received, by participant."""

    def __init__(self, p: AiortcParticipant) -> None:
        self.p = p

    def updates(self, sid: str) -> list[tuple[float, str, float]]:
        return [(at, u["quality"], u["score"])
                for at, m in zip(self.p.received_at, self.p.messages, strict=True)
                if m["type"] == "connection_quality"
                for u in m["updates"] if u["participant_sid"] == sid]

    async def wait(self, sid: str, qualities: tuple[str, ...], since: float,
                   timeout: float) -> float | None:
        """When an update read at or after ``since`` said one of ``qualities`` (None: none
        within ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            hit = next((at for at, q, _ in self.updates(sid) if at >= since and q in qualities),
                       None)
            if hit is not None or time.monotonic() >= deadline:
                return hit
            await asyncio.sleep(0.05)


async def sample_uplink_reports(p: AiortcParticipant,
                                out: list[tuple[float, str, int, int]]) -> None:
    """Once a second: the SFU's receiver reports about ``p``'s published streams, as aiortc
    shows them (kind, fraction lost in 1/256, cumulative lost). Diagnostics only."""
    while True:
        stats = await p.publisher.getStats()
        now = time.monotonic()
        out.extend((now, s.kind, s.fractionLost, s.packetsLost) for s in stats.values()
                   if s.type == "remote-inbound-rtp")
        await asyncio.sleep(1.0)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("lane", ["up", "down"])
async def test_connection_quality_follows_packet_loss(tmp_path: Path, lane: str) -> None:
    """10 % loss on one direction of a participant's media makes it ``poor``, removing
    the loss makes it ``good`` or ``excellent`` again; ``up``: what it publishes (the SFU's
    receiver reports), ``down``: what it receives (its subscriber's receiver reports)."""
    daemon = start_daemon(tmp_path, {"room": {
        "connection_quality_interval_s": QUALITY_INTERVAL_S}})
    relay = LossRelay(("127.0.0.1", daemon.udp_port), seed=SEED, loss=0.0, reorder=0.0)
    lossy = RelayedParticipant(daemon.ws, daemon.token("lossy"), daemon.udp_port,
                               await relay.start())
    clean = AiortcParticipant(daemon.ws, daemon.token("clean"))
    log = QualityLog(clean)
    marks: list[tuple[float, str]] = []
    poor_at: float | None = None
    recovered_at: float | None = None
    reports: list[tuple[float, str, int, int]] = []
    sampler: asyncio.Task[None] | None = None
    try:
        await clean.connect()
        await lossy.connect()
        await clean.publish(ToneTrack(0, Schedule(), 440.0), NoiseVideoTrack(SEED))
        await lossy.publish(ToneTrack(0, Schedule(), 660.0), NoiseVideoTrack(SEED + 1))
        for p in (clean, lossy):  # both publish, and receive the other's audio and video
            await p.wait_connected(p.publisher)
            await p.wait_connected(p.subscriber)
            await p.wait_track("audio")
            await p.wait_track("video")
        lossy_sid = lossy.join["participant"]["sid"]
        clean_sid = clean.join["participant"]["sid"]
        sampler = asyncio.create_task(sample_uplink_reports(lossy, reports))
        marks.append((time.monotonic(), "connected"))
        await asyncio.sleep(SETTLE_S)
        loss_on = time.monotonic()
        marks.append((loss_on, f"{LOSS:.0%} loss {lane}"))
        relay.set_loss(LOSS, lane)
        poor_at = await log.wait(lossy_sid, ("poor",), loss_on, POOR_WITHIN_S)
        if poor_at is not None:
            loss_off = time.monotonic()
            marks.append((loss_off, f"no loss {lane}"))
            relay.set_loss(0.0, lane)
            recovered_at = await log.wait(lossy_sid, GOOD, loss_off, RECOVER_WITHIN_S)
            await asyncio.sleep(2 * QUALITY_INTERVAL_S)  # (the clean one, a little longer)
        marks.append((time.monotonic(), "end"))
    finally:
        if sampler is not None:
            sampler.cancel()
        await lossy.close()
        await clean.close()
        relay.close()
        stop_daemon(daemon)

    t0 = marks[0][0]
    events = sorted(
        [(at, f"{name} {q} {score}") for sid, name in ((lossy_sid, "lossy"), (clean_sid, "clean"))
         for at, q, score in log.updates(sid)]
        + [(at, f"-- {m}") for at, m in marks]
        + [(at, f"   SFU's RR about lossy's {kind}: fraction lost {f}/256, cumulative {n}")
           for at, kind, f, n in reports if at >= marks[1][0] - 1])
    stats = relay.stats[lane]
    report = "\n".join(
        [f"{at - t0:+7.2f}s {what}" for at, what in events]
        + [f"relay {lane}: passed {dict(stats.passed)} dropped {dict(stats.dropped)}",
           f"poor after {'-' if poor_at is None else f'{poor_at - marks[1][0]:.2f}'} s, "
           f"recovered after {'-' if recovered_at is None else f'{recovered_at - marks[2][0]:.2f}'} s"])
    print("\n" + report)

    assert lossy.rewritten and len(relay.flows) >= 2, report
    settled = marks[1][0]
    # before the loss: both were scored, good or excellent
    for sid in (lossy_sid, clean_sid):
        before = [q for at, q, _ in log.updates(sid) if at < settled]
        assert before and all(q in GOOD for q in before), report
    assert poor_at is not None, (
        f"not poor within {POOR_WITHIN_S} s of {LOSS:.0%} {lane}link loss\n{report}")
    assert stats.dropped["rtp"], report
    assert recovered_at is not None, (
        f"not good again within {RECOVER_WITHIN_S} s of the loss stopping\n{report}")
    # the clean participant was good or excellent throughout
    assert all(q in GOOD for _, q, _ in log.updates(clean_sid)), report
