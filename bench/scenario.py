"""What a bench run connects, room by room, and the clients of one bench process.

A scenario is a list of :class:`ClientSpec` (:func:`plan`), the same for every process of
a run; ``--rooms R`` repeats one room's clients R times, each copy in its own room:

- ``forward``: 1 publisher (Opus + VP8) → S subscribers;
- ``livestream``: 1 RID-simulcast publisher → S subscribers, asking for low / medium /
  high in turn;
- ``audio``: P audio-only publishers → S subscribers, each receiving every publisher;
- ``meeting``: N participants, each publishing audio + video (simulcast with
  ``--simulcast``) and receiving everyone else on the same signaling connection (N×(N−1)
  streams of each kind).

A :class:`ClientGroup` runs the specs given to one process (all of them, or with
``--processes K`` every K-th) on this process's event loop: it connects them, waits for
media, and returns summable counters (:meth:`~ClientGroup.snapshot`) and, after the window,
samples and counts (:meth:`~ClientGroup.finish`), all as JSON-ready dicts keyed by room, so
that the coordinator merges one process's answer or several the same way (:func:`merge`).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCCertificate

from signaling.auth import VideoGrant, mint_token

from .client import BenchPublisher, BenchSubscriber, Ticker
from .media import EncodedMedia, load_media, load_simulcast_media
from .report import bench_cpu_s
from .transport import BenchError

__all__ = ["QUALITIES", "SCENARIOS", "ClientGroup", "ClientSpec", "ForwardOptions", "merge",
           "plan", "room_name"]

SCENARIOS = ("forward", "livestream", "audio", "meeting")
QUALITIES = ("low", "medium", "high")
SWITCH_TIMEOUT_S = 5.0


@dataclass
class ForwardOptions:
    """Options of every scenario (``scenario``); the fields a scenario does not use are
    ignored (``publishers`` outside ``audio``, ``participants`` outside ``meeting``)."""

    subscribers: int = 10
    duration_s: float = 10.0
    warmup_s: float = 3.0
    url: str | None = None
    api_key: str | None = None
    api_secret_file: str | None = None
    metrics_url: str | None = None
    server_pid: int | None = None
    room: str = field(default_factory=lambda: f"bench-{secrets.token_hex(4)}")
    decode: int = 1
    media_timeout_s: float = 10.0
    connect_timeout_s: float = 30.0
    concurrency: int = 16
    pin: bool = True
    show_progress: bool = True
    fps: int = 30
    video_bitrate_bps: int = 600_000
    seed: int | None = None
    loss_pct: float = 0.0
    publisher_loss_pct: float = 0.0
    daemon_log_level: str = "warning"
    #: livestream: the video in 3 RID simulcast layers, subscribers spread over them;
    #: meeting: every participant's video in 3 RID simulcast layers
    simulcast: bool = False
    #: livestream: layer changes per decoding subscriber after the window (latency)
    switches: int = 0
    #: forward | livestream | audio | meeting
    scenario: str = "forward"
    #: audio: audio-only publishers per room
    publishers: int = 10
    #: meeting: participants per room
    participants: int = 10
    #: independent copies of the scenario, each in its own room
    rooms: int = 1
    #: bench worker processes the clients are spread over (1: this process)
    processes: int = 1

    @property
    def mode(self) -> str:
        """The scenario; ``forward`` with ``simulcast`` is ``livestream``."""
        if self.scenario == "forward" and self.simulcast:
            return "livestream"
        return self.scenario


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """One client of a run: its position in the plan (seeds, process assignment), its
    room, its identity there, what it publishes (``""``, ``"audio"``, ``"av"`` or
    ``"simulcast"``), whether it subscribes and how many streams of each kind it should
    then receive, whether it decodes video, and (livestream) the quality it asks for."""

    index: int
    room: int
    name: str
    publish: str = ""
    subscribe: bool = False
    expect_audio: int = 0
    expect_video: int = 0
    decode: bool = False
    quality: str | None = None


def _room_plan(opts: ForwardOptions) -> list[tuple[str, str, bool, int, int, bool,
                                                   str | None]]:
    """One room's clients: (name, publish, subscribe, expected audio, expected video,
    decode, quality)."""
    if opts.mode in ("forward", "livestream"):
        live = opts.mode == "livestream"
        publisher = ("pub", "simulcast" if live else "av", False, 0, 0, False, None)
        return [publisher, *((f"sub-{i}", "", True, 1, 1, i < opts.decode,
                              QUALITIES[i % 3] if live else None)
                             for i in range(opts.subscribers))]
    if opts.mode == "audio":
        return [*((f"pub-{j}", "audio", False, 0, 0, False, None)
                  for j in range(opts.publishers)),
                *((f"sub-{i}", "", True, opts.publishers, 0, False, None)
                  for i in range(opts.subscribers))]
    if opts.mode == "meeting":
        others = opts.participants - 1
        return [(f"part-{i}", "simulcast" if opts.simulcast else "av", True, others, others,
                 i < opts.decode, None) for i in range(opts.participants)]
    raise ValueError(f"unknown scenario {opts.scenario!r}")


def plan(opts: ForwardOptions) -> list[ClientSpec]:
    """Every client of the run, room after room (the same list in every process)."""
    per_room = _room_plan(opts)
    return [ClientSpec(room * len(per_room) + i, room, *entry)
            for room in range(opts.rooms) for i, entry in enumerate(per_room)]


def room_name(opts: ForwardOptions, room: int) -> str:
    return opts.room if opts.rooms == 1 else f"{opts.room}-{room}"


def merge(a: Any, b: Any) -> Any:
    """Two processes' answers as one: numbers add, booleans must both hold, lists
    concatenate, dicts merge key by key; for anything else the first that is not None."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: merge(a[k], b[k]) if k in a and k in b else a.get(k, b.get(k))
                for k in {**a, **b}}
    if isinstance(a, bool) and isinstance(b, bool):
        return a and b
    if type(a) in (int, float) and type(b) in (int, float):
        return a + b
    if isinstance(a, list) and isinstance(b, list):
        return a + b
    return a if a is not None else b


@dataclass(slots=True)
class _Member:
    """One spec's clients: a subscriber, a publisher, or both on one connection."""

    spec: ClientSpec
    subscriber: BenchSubscriber | None
    publisher: BenchPublisher | None

    @property
    def clients(self) -> list[BenchPublisher | BenchSubscriber]:
        return [c for c in (self.subscriber, self.publisher) if c is not None]

    @property
    def connected(self) -> bool:
        return all(c.connected for c in self.clients)

    def join_to_connected_ms(self) -> float | None:
        """From the start of joining to every transport of this member connected."""
        clients = self.clients
        started = clients[0].join_started
        if started is None or not self.connected or any(c.connected_at is None
                                                        for c in clients):
            return None
        return (max(c.connected_at or 0.0 for c in clients) - started) * 1000.0

    def join_to_first_media_ms(self) -> float | None:
        sub = self.subscriber
        if sub is None or sub.join_started is None or sub.first_rtp_at is None:
            return None
        return (sub.first_rtp_at - sub.join_started) * 1000.0


class ClientGroup:
    """The clients of ``specs`` in this process (see the module docstring)."""

    def __init__(self, opts: ForwardOptions, specs: Sequence[ClientSpec], *, url: str,
                 key: str, secret: str, seed: int) -> None:
        self.opts = opts
        self.errors: list[str] = []
        self.layers: tuple[EncodedMedia, ...] | None = None
        # also where only subscribers are: they need the layers' sizes for switches
        if opts.simulcast or opts.mode == "livestream":
            self.layers = load_simulcast_media(fps=opts.fps,
                                               video_bitrate_bps=opts.video_bitrate_bps)
            self.media = self.layers[-1]
        else:
            self.media = load_media(fps=opts.fps, video_bitrate_bps=opts.video_bitrate_bps)
        certificate = RTCCertificate.generateCertificate()
        self.ticker = Ticker()
        self.members: list[_Member] = []
        for spec in specs:
            rng = random.Random(seed + spec.index)
            name = spec.name if opts.rooms == 1 else f"r{spec.room}/{spec.name}"
            token = mint_token(key, secret, identity=spec.name, now=time.time(),
                               ttl_s=6 * 3600, grant=VideoGrant(
                                   room_join=True, room=room_name(opts, spec.room)))
            sub = pub = None
            if spec.subscribe:
                sub = BenchSubscriber(
                    url, token, name, certificate, self.ticker, decode=spec.decode, rng=rng,
                    drop_rate=opts.loss_pct / 100.0,
                    record_frames=spec.decode and spec.quality is not None,
                    expect={"audio": spec.expect_audio, "video": spec.expect_video})
            if spec.publish:
                pub = BenchPublisher(
                    url, token, name, certificate, self.media, rng=rng,
                    drop_rate=opts.publisher_loss_pct / 100.0,
                    layers=self.layers if spec.publish == "simulcast" else None,
                    video=spec.publish != "audio",
                    signaling=sub.signaling if sub is not None else None)
            self.members.append(_Member(spec, sub, pub))
        self.subscribers = [m.subscriber for m in self.members if m.subscriber is not None]
        self.publishers = [m.publisher for m in self.members if m.publisher is not None]

    # -- before the window ----------------------------------------------------------------

    async def connect(self) -> dict[str, Any]:
        """Connect every client: those that subscribe first (a participant then publishes
        on the same connection), then the publish-only ones; ``concurrency`` at once."""
        started = time.monotonic()
        timeout_s = self.opts.connect_timeout_s
        gate = asyncio.Semaphore(max(1, self.opts.concurrency))

        async def start(member: _Member) -> None:
            async with gate:
                if member.subscriber is not None:
                    await member.subscriber.start(timeout_s=timeout_s)
                    await member.subscriber.wait_connected(timeout_s)
                if member.publisher is not None:
                    await member.publisher.start(timeout_s=timeout_s)

        for batch in ([m for m in self.members if m.subscriber is not None],
                      [m for m in self.members if m.subscriber is None]):
            results = await asyncio.gather(*(start(m) for m in batch), return_exceptions=True)
            self.errors += [str(r) for r in results if isinstance(r, BaseException)]
        return {"setup_s": time.monotonic() - started,
                "publishers_connected": sum(1 for p in self.publishers if p.connected),
                "errors": self.errors[:5]}

    async def wait_media(self) -> dict[str, Any]:
        """Wait until every connected subscriber receives every stream it expects (or
        ``media_timeout_s``); then, in livestream, ask each for its layer."""
        started = time.monotonic()
        deadline = started + self.opts.media_timeout_s
        # a condition over per-packet counters: polled, not signalled from the packet path
        while time.monotonic() < deadline and not all(  # noqa: ASYNC110
                s.has_media for s in self.subscribers if s.connected):
            await asyncio.sleep(0.05)
        waited_s = time.monotonic() - started
        asks = [(m.subscriber, m.spec.quality) for m in self.members
                if m.subscriber is not None and m.subscriber.connected and m.spec.quality]
        replies = await asyncio.gather(*(
            sub.track_settings(sub.track_sids("video"), quality=quality)
            for sub, quality in asks), return_exceptions=True)
        self.errors += [str(r) for r in replies if isinstance(r, BaseException)]
        return {"media_wait_s": waited_s}

    # -- the window -----------------------------------------------------------------------

    async def snapshot(self, recording: bool | None = None) -> dict[str, Any]:
        """Summable counters by room (``received``, ``expected``, ``unique``, ...,
        ``published``) and this process's CPU time; with ``recording`` set, delays and
        send lags are sampled from now on (True) or no more (False)."""
        if recording is not None:
            for sub in self.subscribers:
                sub.core.recording = recording
            for pub in self.publishers:
                if pub.core is not None:
                    pub.core.recording = recording
        rooms: dict[str, dict[str, int]] = {}
        for member in self.members:
            counters = rooms.setdefault(str(member.spec.room), {"published": 0})
            if member.subscriber is not None:
                for name, value in member.subscriber.core.counters().items():
                    counters[name] = counters.get(name, 0) + value
            core = member.publisher.core if member.publisher is not None else None
            if core is not None:
                counters["published"] += core.packets_sent
        return {"at": time.monotonic(), "bench_cpu_s": bench_cpu_s(), "rooms": rooms,
                "with_media": sum(1 for s in self.subscribers if s.has_media),
                "subscribers": len(self.subscribers)}

    # -- after the window -----------------------------------------------------------------

    async def finish(self) -> dict[str, Any]:
        """Layer switches (livestream), then per room the samples (delays, join times,
        switch latencies) and counts, and the sums over this process's clients."""
        switch_ms = await self._switch_latencies() if self.opts.switches else {}
        rooms: dict[str, dict[str, Any]] = {}
        for member in self.members:
            room = rooms.setdefault(str(member.spec.room), {
                "counts": {"publishers": 0, "publishers_connected": 0, "subscribers": 0,
                           "subscribers_connected": 0, "subscribers_with_media": 0,
                           "streams_expected": 0, "streams_received": 0},
                "samples": {"delays_ms": [], "hop_delays_ms": [], "send_lag_ms": [],
                            "join_to_connected_ms": [], "join_to_first_media_ms": [],
                            "layer_switch_ms": []},
                "missing_media": []})
            counts, samples = room["counts"], room["samples"]
            joined = member.join_to_connected_ms()
            if joined is not None:
                samples["join_to_connected_ms"].append(joined)
            pub, sub = member.publisher, member.subscriber
            if pub is not None:
                counts["publishers"] += 1
                counts["publishers_connected"] += pub.connected
                if pub.core is not None:
                    samples["send_lag_ms"] += pub.core.send_lag_ms.tolist()
            if sub is not None:
                counts["subscribers"] += 1
                counts["subscribers_connected"] += sub.connected
                counts["subscribers_with_media"] += sub.has_media
                got = sub.streams_with_media()
                counts["streams_expected"] += sum(sub.expect.values())
                counts["streams_received"] += sum(min(got.get(k, 0), n)
                                                  for k, n in sub.expect.items())
                if not sub.has_media:
                    room["missing_media"].append(f"{sub.name}: {got} of {sub.expect}")
                first = member.join_to_first_media_ms()
                if first is not None:
                    samples["join_to_first_media_ms"].append(first)
                samples["delays_ms"] += sub.core.delays_ms.tolist()
                samples["hop_delays_ms"] += sub.core.hop_delays_ms.tolist()
                samples["layer_switch_ms"] += switch_ms.get(sub.name, [])
        decoders = [s.core for s in self.subscribers if s.core.checker is not None]
        video = self.opts.mode != "audio"
        publisher: dict[str, Any] = {}
        for pub in self.publishers:
            publisher = merge(publisher, {"count": 1, **pub.stats()})
        errors = [*self.errors, *(c.error for m in self.members for c in m.clients if c.error)]
        if self.ticker.errors:
            errors.append(f"{self.ticker.errors} clients' RTCP ticks failed")
        return {
            "rooms": rooms,
            "publisher": publisher,
            "subscriber_feedback": {k: sum(s.core.sent[k] for s in self.subscribers)
                                    for k in ("transport_cc", "rr", "nack", "pli")},
            "subscriber_socket_drops": sum(s.transport.kernel_drops() for s in self.subscribers
                                           if s.transport is not None),
            "decode": {
                "subscribers": len(decoders),
                "frames": sum(c.checker.decoded for c in decoders if c.checker),
                "errors": sum(c.checker.errors for c in decoders if c.checker),
                "incomplete_frames": sum(c.assembler.incomplete for c in decoders
                                         if c.assembler),
                "size": (f"{decoders[0].checker.width}x{decoders[0].checker.height}"
                         if decoders and decoders[0].checker else None),
            },
            "media": {"video_bitrate_bps": video and self.media.video_bitrate_bps or None,
                      "audio_bitrate_bps": self.media.audio_bitrate_bps,
                      "fps": video and self.media.fps or None,
                      "layers": ({q: f"{m.width}x{m.height}"
                                  for q, m in zip(QUALITIES, self.layers, strict=True)}
                                 if self.layers else None)},
            "errors": list(dict.fromkeys(errors))[:20],
        }

    async def _switch_latencies(self) -> dict[str, list[float]]:
        """Each decoding livestream subscriber changes layer ``switches`` times (to the
        next quality in low → medium → high → medium → low …): ms from the request to the
        first decoded frame of the new layer's size, by subscriber name."""
        if self.layers is None:
            return {}
        sizes = {q: (m.width, m.height) for q, m in zip(QUALITIES, self.layers, strict=True)}
        cycle = ("low", "medium", "high", "medium")

        async def one(sub: BenchSubscriber, current: str) -> list[float]:
            out: list[float] = []
            frames = sub.core.decoded_frames
            video = sub.track_sids("video")
            step = cycle.index(current)
            for _ in range(self.opts.switches):
                step = (step + 1) % len(cycle)
                quality = cycle[step]
                if quality == current:
                    step = (step + 1) % len(cycle)
                    quality = cycle[step]
                mark = len(frames)
                sent = time.monotonic()
                await sub.track_settings(video, quality=quality)
                deadline = sent + SWITCH_TIMEOUT_S
                found = None
                while found is None and time.monotonic() < deadline:
                    found = next((f for f in frames[mark:]
                                  if (f.width, f.height) == sizes[quality]), None)
                    if found is None:
                        await asyncio.sleep(0.005)
                if found is None:
                    self.errors.append(f"{sub.name}: no {quality} frame {SWITCH_TIMEOUT_S} s "
                                       "after asking for it")
                else:
                    out.append((found.arrival - sent) * 1000.0)
                current = quality
                await asyncio.sleep(0.3)  # let the new layer run a little
            return out

        deciders = [(m.subscriber, m.spec.quality or "low") for m in self.members
                    if m.subscriber is not None and m.subscriber.connected
                    and m.subscriber.core.checker is not None and m.spec.quality]
        results = await asyncio.gather(*(one(s, q) for s, q in deciders),
                                       return_exceptions=True)
        latencies: dict[str, list[float]] = {}
        for (sub, _), r in zip(deciders, results, strict=True):
            if isinstance(r, BaseException):
                self.errors.append(str(r))
            else:
                latencies[sub.name] = r
        return latencies

    async def close(self) -> None:
        self.ticker.stop()
        gate = asyncio.Semaphore(32)

        async def close(client: BenchPublisher | BenchSubscriber) -> None:
            async with gate:
                try:
                    await asyncio.wait_for(client.close(), 5)
                except (TimeoutError, OSError, BenchError):
                    pass

        await asyncio.gather(*(close(c) for m in self.members for c in reversed(m.clients)))
