"""Cheap but real WebRTC clients speaking our signaling, many per process on one event loop.

- :class:`BenchPublisher` announces an audio and a video track (``add_track`` with their
  mids), offers them on its publisher transport, connects (ICE, DTLS client, SRTP) and then
  sends looped pre-encoded Opus + VP8 (:class:`bench.rtp.PublisherCore`): sender reports
  every second, retransmissions on NACK (RTX when the answer keeps it), a keyframe on
  PLI/FIR. With ``layers`` it publishes RID simulcast (:class:`bench.rtp.SimulcastPublisherCore`)
  and announces the layers in ``add_track``; with ``video=False`` it publishes the audio
  track alone (:class:`bench.rtp.AudioPublisherCore`). Given another client's
  ``signaling`` it publishes on that connection: a participant that subscribes and
  publishes is a :class:`BenchSubscriber` plus a :class:`BenchPublisher` sharing one.
- :class:`BenchSubscriber` answers the server's subscriber offers, connects, and counts
  what arrives (:class:`bench.rtp.ReceiverCore`), sending RRs, transport-cc feedback, NACKs
  and PLIs; optionally it depacketizes and decodes the video (and lists every decoded
  frame), and chooses a simulcast layer with ``track_settings``. With ``via`` it sends to
  that address (a relay in front of the server) instead of the server's candidate. Its
  ``expect`` says how many streams of each kind it should receive (one per publisher).

Per-packet work is synchronous and small; periodic RTCP of every client in the process
runs from one shared :class:`Ticker` rather than a timer per client. Nothing is logged per
packet.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiortc import RTCCertificate

from sfu.rtp.rtcp import parse_rtcp
from sfu.webrtc.sdp import SdpError, SessionDescription

from .media import EncodedMedia
from .rtp import (
    AudioPublisherCore,
    PublisherCore,
    ReceiverCore,
    SimulcastPublisherCore,
    SimulcastSource,
    classify_feedback,
)
from .sdp import (
    PublisherSsrcs,
    publisher_offer,
    remote_transport,
    subscriber_answer,
    subscriber_streams,
)
from .signal import Message, SignalingClient
from .transport import BenchError, ClientTransport

__all__ = ["BenchPublisher", "BenchSubscriber", "SIMULCAST_RIDS", "Ticker", "WALL_OFFSET_S",
           "layer_qualities"]

#: Unix time minus monotonic time, fixed once so every client of the process agrees.
WALL_OFFSET_S = time.time() - time.monotonic()
SR_INTERVAL_S = 1.0
#: The rids of RID simulcast, lowest layer first (as browsers name them).
SIMULCAST_RIDS = ("q", "h", "f")
_QUALITY_OF_RID = {"q": "low", "h": "medium", "f": "high"}


def layer_qualities(rids: Sequence[str]) -> list[str]:
    """The signaling quality of each rid, lowest first: ``q``/``h``/``f`` are
    low/medium/high; other rids are named by position (the last one is ``high``)."""
    if all(rid in _QUALITY_OF_RID for rid in rids):
        return [_QUALITY_OF_RID[rid] for rid in rids]
    if len(rids) > 3:
        raise ValueError(f"at most 3 simulcast layers, got {len(rids)}")
    return ["low", "medium", "high"][3 - len(rids):]


class Ticker:
    """One timer for the periodic work of every client in the process."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self._clients: list[Callable[[float], None]] = []
        self._handle: asyncio.TimerHandle | None = None
        self.errors = 0

    def add(self, tick: Callable[[float], None]) -> None:
        self._clients.append(tick)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.interval_s, self._run)

    def remove(self, tick: Callable[[float], None]) -> None:
        with contextlib.suppress(ValueError):
            self._clients.remove(tick)

    def _run(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(self.interval_s, self._run)
        now = time.monotonic()
        for tick in list(self._clients):
            try:
                tick(now)
            except Exception:  # one broken client must not stop the others' RTCP
                self.errors += 1
                self.remove(tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class _Client:
    def __init__(self, url: str, token: str, name: str, certificate: RTCCertificate,
                 rng: random.Random, signaling: SignalingClient | None = None) -> None:
        self.name = name
        self.rng = rng
        self.certificate = certificate
        #: False when the signaling connection is another client's (a participant's
        #: publishing half shares its subscribing half's connection).
        self.owns_signaling = signaling is None
        self.signaling = signaling or SignalingClient(url, token, name, self.on_signal)
        self.transport: ClientTransport | None = None
        self.error: str | None = None
        #: Monotonic seconds: when this client started joining (signaling connect, or
        #: its first request on a shared connection), and when its transport connected.
        self.join_started: float | None = None
        self.connected_at: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def _join(self, timeout_s: float) -> None:
        self.join_started = time.monotonic()
        if self.owns_signaling:
            await self.signaling.connect(timeout_s)

    def on_signal(self, msg: Message) -> None:
        pass

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self.error is None:
            self.error = str(task.exception())

    @property
    def fingerprints(self) -> list[str]:
        return [f"{fp.algorithm} {fp.value}" for fp in self.certificate.getFingerprints()]

    @property
    def connected(self) -> bool:
        return self.transport is not None and self.transport.connected

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.owns_signaling:
            await self.signaling.close()
        if self.transport is not None:
            await self.transport.close()


class BenchPublisher(_Client):
    """``media``: the audio, and the video unless ``layers`` is given; then each of
    ``layers`` (lowest first, same frame rate) is a simulcast layer sent with the matching
    rid of ``rids``, and the track is announced with ``media``'s size (pass the top layer).
    With ``video=False`` only the audio track is published. With ``signaling`` it uses
    that (already joined) connection instead of its own: a participant that publishes and
    subscribes on one connection.
    """

    def __init__(self, url: str, token: str, name: str, certificate: RTCCertificate,
                 media: EncodedMedia, *, rng: random.Random | None = None,
                 drop_rate: float = 0.0, layers: Sequence[EncodedMedia] | None = None,
                 rids: Sequence[str] = SIMULCAST_RIDS, video: bool = True,
                 signaling: SignalingClient | None = None) -> None:
        super().__init__(url, token, name, certificate, rng or random.Random(), signaling)
        self.media = media
        self.video = video
        if layers and not video:
            raise ValueError("simulcast layers without video")
        self.layers = tuple(layers or ())
        if self.layers and len(rids) < len(self.layers):
            raise ValueError(f"{len(self.layers)} simulcast layers but only rids {list(rids)}")
        self.rids = tuple(rids[:len(self.layers)])
        #: Fraction of first transmissions dropped before sending (simulated upstream loss).
        self.drop_rate = drop_rate
        self.dropped = 0
        self.core: PublisherCore | SimulcastPublisherCore | AudioPublisherCore | None = None
        self.track_sids: dict[str, str] = {}
        self.feedback: dict[str, int] = {}
        self.rtcp_malformed = 0
        self.answer_s = 0.0
        #: The server's answer to our offer.
        self.answer: SessionDescription | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._next_sr = 0.0

    @property
    def simulcast(self) -> SimulcastPublisherCore:
        """The simulcast core; raises :class:`BenchError` before :meth:`start` or without
        ``layers``."""
        if not isinstance(self.core, SimulcastPublisherCore):
            raise BenchError(f"{self.name}: not publishing simulcast")
        return self.core

    def hold_keyframes(self, rid: str, duration_s: float) -> float:
        """For ``duration_s`` from now, layer ``rid`` sends no keyframe (see
        :meth:`SimulcastPublisherCore.hold_keyframes`); returns when the hold ends
        (monotonic seconds)."""
        until = time.monotonic() + duration_s
        self.simulcast.hold_keyframes(rid, until)
        return until

    def simulcast_layers(self) -> list[dict[str, Any]]:
        """``add_track``'s ``simulcast_layers``."""
        return [{"rid": rid, "quality": quality, "width": m.width, "height": m.height}
                for rid, quality, m in zip(self.rids, layer_qualities(self.rids), self.layers,
                                           strict=True)]

    async def start(self, *, timeout_s: float = 20.0) -> None:
        """Join (unless on a shared connection), announce the tracks, offer, connect, and
        start sending."""
        rng = self.rng
        self.transport = await ClientTransport.open(
            self.certificate, on_rtp=None, on_rtcp=self._on_rtcp, rng=rng)
        await self._join(timeout_s)
        tracks = (("audio", "0", "bench-mic"), ("video", "1", "bench-cam"))
        for kind, mid, cid in tracks if self.video else tracks[:1]:
            msg: Message = {"type": "add_track", "cid": cid, "kind": kind, "mid": mid,
                            "source": "microphone" if kind == "audio" else "camera"}
            if kind == "video":
                msg.update(width=self.media.width, height=self.media.height)
                if self.layers:
                    msg["simulcast_layers"] = self.simulcast_layers()
            reply = await self.signaling.request(msg, timeout_s)
            if reply.get("type") != "track_published":
                raise BenchError(f"{self.name}: add_track answered with {reply.get('type')}")
            self.track_sids[kind] = reply["track"]["sid"]
        ssrcs = PublisherSsrcs(*(rng.getrandbits(32) or 1 for _ in range(3)))
        stream_id = f"{self.name}-{rng.getrandbits(32):08x}"
        offer = publisher_offer(
            ufrag=self.transport.credentials.ufrag, pwd=self.transport.credentials.pwd,
            fingerprints=self.fingerprints, port=self.transport.local_port, ssrcs=ssrcs,
            session_id=rng.getrandbits(62), stream_id=stream_id, cname=stream_id,
            rids=self.rids, video=self.video)
        started = time.monotonic()
        reply = await self.signaling.exchange(
            {"type": "offer", "target": "publisher", "sdp": offer},
            lambda m: m.get("type") == "answer" and m.get("target") == "publisher", timeout_s)
        self.answer_s = time.monotonic() - started
        try:
            answer = SessionDescription.parse(reply["sdp"])
        except SdpError as exc:
            raise BenchError(f"{self.name}: bad publisher answer: {exc}") from None
        self.answer = answer
        remote = remote_transport(answer)
        now = time.monotonic()
        if self.layers:
            self.core = self._simulcast_core(ssrcs.audio, stream_id, now)
        elif not self.video:
            self.core = AudioPublisherCore(
                self.media, audio_ssrc=ssrcs.audio, start=now, wall_offset_s=WALL_OFFSET_S,
                cname=stream_id,
                initial=(rng.getrandbits(16), rng.getrandbits(32), rng.getrandbits(16)))
        else:
            self.core = PublisherCore(
                self.media, audio_ssrc=ssrcs.audio, video_ssrc=ssrcs.video,
                rtx_ssrc=ssrcs.rtx, start=now, wall_offset_s=WALL_OFFSET_S, cname=stream_id,
                initial=(rng.getrandbits(16), rng.getrandbits(32), rng.getrandbits(16),
                         rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(16)))
        video = answer.section("1")
        self.core.rtx_enabled = video is not None and video.port != 0 and "97" in video.fmts
        await self.transport.connect(remote.address, remote.ufrag, remote.pwd,
                                     list(remote.fingerprints), timeout_s=timeout_s)
        now = self.connected_at = time.monotonic()
        self.core.start = now
        self._next_sr = now + SR_INTERVAL_S
        self._send_due()

    def _simulcast_core(self, audio_ssrc: int, cname: str, now: float) -> SimulcastPublisherCore:
        rng = self.rng
        used = {audio_ssrc}

        def fresh_ssrc() -> int:
            while True:
                ssrc = rng.getrandbits(32) or 1
                if ssrc not in used:
                    used.add(ssrc)
                    return ssrc

        sources = [SimulcastSource(rid, media, fresh_ssrc(), fresh_ssrc(), rng.getrandbits(16),
                                   rng.getrandbits(32), rng.getrandbits(16),
                                   rng.getrandbits(15), rng.getrandbits(8))
                   for rid, media in zip(self.rids, self.layers, strict=True)]
        return SimulcastPublisherCore(
            sources, audio_ssrc=audio_ssrc, start=now, wall_offset_s=WALL_OFFSET_S,
            audio_initial=(rng.getrandbits(16), rng.getrandbits(32)),
            tcc_seq=rng.getrandbits(16), audio_media=self.media, cname=cname)

    def _send_due(self) -> None:
        core, transport = self.core, self.transport
        if core is None or transport is None or not transport.connected:
            return
        now = time.monotonic()
        send = transport.send_rtp
        drop_rate, rng = self.drop_rate, self.rng
        for packet in core.due(now):
            if drop_rate and rng.random() < drop_rate:
                self.dropped += 1
                continue
            send(packet)
        if now >= self._next_sr:
            self._next_sr = now + SR_INTERVAL_S
            report = core.sender_reports(now)
            if report:
                transport.send_rtcp(report)
        loop = asyncio.get_running_loop()
        at = min(core.next_at, self._next_sr)
        # monotonic() and the loop's clock are both CLOCK_MONOTONIC on Linux
        self._timer = loop.call_at(loop.time() + max(0.0, at - time.monotonic()), self._send_due)

    def _on_rtcp(self, data: bytes) -> None:
        try:
            packets = parse_rtcp(data)
        except ValueError:
            self.rtcp_malformed += 1
            return
        classify_feedback(list(packets), self.feedback)
        core, transport = self.core, self.transport
        if core is None or transport is None:
            return
        for packet in core.on_rtcp(list(packets), time.monotonic()):
            transport.send_rtp(packet)

    def stats(self) -> dict[str, Any]:
        core = self.core
        return {
            "connected": self.connected,
            "packets_sent": core.packets_sent if core else 0,
            "audio_packets": core.audio.packets if core else 0,
            "video_packets": core.video_packets if core else 0,
            "rtx_enabled": core.rtx_enabled if core else False,
            "keyframes_sent": core.keyframes_sent if core else 0,
            "keyframe_requests": core.keyframe_requests if core else 0,
            "nacked": core.nacked if core else 0,
            "retransmitted": core.retransmitted if core else 0,
            "late_skips": core.late_skips if core else 0,
            "dropped_on_purpose": self.dropped,
            "feedback_received": dict(self.feedback),
            **({"layers": {layer.rid: {"keyframes_sent": layer.keyframes_sent,
                                       "plis": layer.plis, "firs": layer.firs,
                                       "held_requests": layer.held_requests,
                                       "packets": layer.video.packets}
                           for layer in core.layers}}
               if isinstance(core, SimulcastPublisherCore) else {}),
        }

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await super().close()


class BenchSubscriber(_Client):
    def __init__(self, url: str, token: str, name: str, certificate: RTCCertificate,
                 ticker: Ticker, *, decode: bool = False, rng: random.Random | None = None,
                 delay_every: int = 4, drop_rate: float = 0.0,
                 record_frames: bool = False, via: tuple[str, int] | None = None,
                 expect: Mapping[str, int] | None = None) -> None:
        super().__init__(url, token, name, certificate, rng or random.Random())
        self.ticker = ticker
        #: How many streams of each kind this subscriber should receive (one per
        #: publisher's track): :attr:`has_media` is true once each has a packet.
        self.expect = dict(expect) if expect is not None else {"audio": 1, "video": 1}
        #: When the first RTP packet arrived (monotonic seconds).
        self.first_rtp_at: float | None = None
        #: The others' published tracks: sid → kind (from ``join`` and ``track_published``).
        self.tracks: dict[str, str] = {}
        #: Where the transport sends (ICE, DTLS, SRTP, SRTCP) instead of the server's
        #: candidate: e.g. a relay in front of the server (None: the candidate).
        self.via = via
        #: The server's latest subscriber offer.
        self.offer: SessionDescription | None = None
        #: Every ``stream_state`` update received, with its arrival (monotonic seconds).
        self.stream_states: list[tuple[float, Message]] = []
        #: Called with every decrypted RTP packet and its arrival (monotonic seconds),
        #: after :attr:`core` has taken it.
        self.rtp_observer: Callable[[bytes, float], None] | None = None
        self.core = ReceiverCore(self.rng.getrandbits(32) or 1, wall_offset_s=WALL_OFFSET_S,
                                 decode=decode, delay_every=delay_every,
                                 record_frames=record_frames)
        self.answers = 0
        self.offer_errors = 0
        self._session_id = self.rng.getrandbits(62)
        self._connecting = False
        self._connected = asyncio.Event()
        self._timeout_s = 20.0
        self.drop_rate = drop_rate

    async def start(self, *, timeout_s: float = 20.0) -> None:
        """Join; the server's first subscriber offer then starts the transport."""
        self._timeout_s = timeout_s
        self.transport = await ClientTransport.open(
            self.certificate, on_rtp=self._on_rtp, on_rtcp=self._on_rtcp, rng=self.rng)
        self.transport.drop_rate = self.drop_rate
        await self._join(timeout_s)
        for other in self.signaling.join.get("other_participants", ()):
            for track in other.get("tracks", ()):
                self.tracks[track["sid"]] = track["kind"]

    async def wait_connected(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        except TimeoutError:
            raise BenchError(f"{self.name}: subscriber transport not connected in "
                             f"{timeout_s} s ({self.error or 'no offer answered'})") from None

    async def track_settings(self, track_sids: Sequence[str], *, timeout_s: float = 10.0,
                             **settings: Any) -> Message:
        """Send ``track_settings`` (e.g. ``quality="medium"``) and wait for its ``ack``;
        raises :class:`BenchError` if refused."""
        return await self.signaling.request(
            {"type": "track_settings", "track_sids": list(track_sids), **settings}, timeout_s)

    def _on_rtp(self, data: bytes) -> None:
        now = time.monotonic()
        if self.first_rtp_at is None:
            self.first_rtp_at = now
        self.core.on_rtp(data, now)
        observer = self.rtp_observer
        if observer is not None:
            observer(data, now)

    def _on_rtcp(self, data: bytes) -> None:
        self.core.on_rtcp(data, time.monotonic())

    def _tick(self, now: float) -> None:
        transport = self.transport
        if transport is None or not transport.connected:
            return
        for packet in self.core.due(now):
            transport.send_rtcp(packet)

    def on_signal(self, msg: Message) -> None:
        kind = msg.get("type")
        if kind == "offer" and msg.get("target") == "subscriber":
            self._answer(msg["sdp"])
        elif kind == "stream_state":
            now = time.monotonic()
            self.stream_states += [(now, update) for update in msg.get("updates", ())]
        elif kind == "track_published":
            track = msg.get("track") or {}
            self.tracks[track.get("sid", "")] = track.get("kind", "")
        elif kind == "track_unpublished":
            self.tracks.pop(msg.get("track_sid", ""), None)

    def track_sids(self, kind: str) -> list[str]:
        """The sids of the others' published tracks of ``kind``."""
        return [sid for sid, k in self.tracks.items() if k == kind]

    def _answer(self, sdp: str) -> None:
        transport = self.transport
        if transport is None:
            return
        try:
            offer = SessionDescription.parse(sdp)
            remote = remote_transport(offer)
        except (SdpError, BenchError) as exc:
            self.offer_errors += 1
            self.error = f"{self.name}: bad subscriber offer: {exc}"
            return
        self.offer = offer
        infos, tcc_id, abs_id = subscriber_streams(offer)
        self.core.set_streams(infos, tcc_id, abs_id)
        self.answers += 1
        answer = subscriber_answer(
            offer, ufrag=transport.credentials.ufrag, pwd=transport.credentials.pwd,
            fingerprints=self.fingerprints, session_id=self._session_id, version=self.answers)
        self.spawn(self.signaling.send({"type": "answer", "target": "subscriber",
                                        "sdp": answer}))
        if not self._connecting:
            self._connecting = True
            self.spawn(self._connect(self.via or remote.address, remote.ufrag, remote.pwd,
                                     list(remote.fingerprints)))

    async def _connect(self, address: tuple[str, int], ufrag: str, pwd: str,
                       fingerprints: list[str]) -> None:
        assert self.transport is not None
        await self.transport.connect(address, ufrag, pwd, fingerprints,
                                     timeout_s=self._timeout_s)
        self.connected_at = time.monotonic()
        self.ticker.add(self._tick)
        self._connected.set()

    def streams_with_media(self) -> dict[str, int]:
        """Received streams (SSRCs with at least one packet) by kind."""
        out: dict[str, int] = {}
        for stream in self.core.streams.values():
            if stream.unique:
                out[stream.info.kind] = out.get(stream.info.kind, 0) + 1
        return out

    @property
    def has_media(self) -> bool:
        """Every expected stream arrived (:attr:`expect`: by default one audio and one
        video)."""
        got = self.streams_with_media()
        return all(got.get(kind, 0) >= n for kind, n in self.expect.items())

    async def close(self) -> None:
        self.ticker.remove(self._tick)
        await super().close()
