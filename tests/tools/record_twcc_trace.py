"""Record transport-cc feedback traces on loopback, for the send-side BWE tests.

Three real UDP endpoints in one asyncio process, all bound to 127.0.0.1::

    sender ──RTP──▶ shaping relay ──(cap, queue, loss, delay)──▶ receiver
      ▲                  │                                           │
      └──── delay ◀──────┴────────── transport-cc feedback ◀─────────┘

* The **sender** sends RTP packets carrying a transport-wide sequence number (one-byte
  header extension, id 3) following a rate schedule: video frames at 30 fps, each frame's
  bytes (schedule rate / 30, ±30 % seeded jitter) split into packets of at most 1200 bytes
  sent back to back, as an SFU forwards them; plus 50 packets/s of 120-byte audio
  (≈ 50 kbps on top of the schedule). It does not adapt: the schedule is open loop, which is
  what an SFU does before it acts on the estimate, and makes the trace independent of the
  estimator under test.
* The **shaping relay** (:class:`ShapingRelay`, an asyncio ``DatagramProtocol``) models a
  bottleneck: random loss (seeded), then a drop-tail FIFO of ``queue_ms`` worth of bytes at
  the current cap (at least 3000 bytes), drained at the cap (which may change over time),
  then ``delay_ms`` of propagation delay. Feedback from the receiver goes back through it
  with the same delay, unshaped.
* The **receiver** stamps each arrival with its own clock (a different epoch from the
  sender's), records it in :class:`sfu.rtp.twcc.TwccRecorder` and sends the feedback that
  builds every 100 ms.

The sender logs, one JSON object per line (gzip)::

    {"ev": "meta", "scenario": ..., "send": [[t_s, bps], ...], "cap": [[t_s, bps], ...],
     "loss": ..., "queue_ms": ..., "delay_ms": ..., "seed": ..., ...}   first line
    {"ev": "sent", "seq": 1234, "size": 1200, "t": 0.123456}          every packet sent
    {"ev": "feedback", "rtcp": "8f cd ... (hex)", "t": 0.234567}        every RTCP received
    {"ev": "summary", "sent": n, "forwarded": n, "dropped_queue": n, "dropped_random": n,
     "feedback": n}                                                      last line

``t`` is the sender's monotonic clock in seconds since the start; ``seq`` the 16-bit
transport-wide number; ``size`` the UDP payload in bytes; ``rtcp`` the datagram as received.
``send`` is piecewise linear between its points, ``cap`` a step function.

Re-recording (each run takes its duration in real time; keep the machine otherwise quiet)::

    python -m tests.tools.record_twcc_trace --all            # every preset → tests/unit/traces/
    python -m tests.tools.record_twcc_trace cap600k          # one preset
    python -m tests.tools.record_twcc_trace custom -o /tmp/t.jsonl.gz --duration 20 \\
        --send 0:300k,20:3M --cap 0:600k,10:5M --loss 0.02 --queue-ms 300 --delay-ms 20

The recorded traces are replayed by ``tests/unit/test_bwe.py``; after re-recording, run it
and check that the summaries (printed here) look like the presets describe.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import math
import platform
import random
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from sfu.rtp.header import read_transport_seq
from sfu.rtp.twcc import TwccRecorder

HOST = "127.0.0.1"
EXT_ID = 3
VIDEO_SSRC, AUDIO_SSRC, FEEDBACK_SSRC = 0x11111111, 0x22222222, 0x33333333
FPS = 30
MAX_PACKET = 1200
RTP_HEADER = 20  # 12 fixed + 4 extension header + 4 (id/len, 2-byte seq, 1 pad)
AUDIO_INTERVAL_S = 0.020
AUDIO_PAYLOAD = 100
FEEDBACK_INTERVAL_S = 0.100
RECEIVER_EPOCH_US = 5_000_000_000  # the receiver's clock starts elsewhere than the sender's
TAIL_S = 0.5  # keep listening this long after the last packet for the last feedback
TRACES = Path(__file__).resolve().parents[1] / "unit" / "traces"

Schedule = tuple[tuple[float, float], ...]  # (t_s, bps)


@dataclass(frozen=True)
class Scenario:
    description: str
    duration_s: float
    send: Schedule  # sender rate, piecewise linear
    cap: Schedule  # bottleneck rate, step function
    loss: float = 0.0
    queue_ms: float = 300.0
    delay_ms: float = 20.0
    seed: int = 7


PRESETS: dict[str, Scenario] = {
    "cap600k": Scenario(
        "2 Mbps sent; 5 s unconstrained (5 Mbps), then a 600 kbps cap for 10 s,"
        " then lifted to 5 Mbps for 15 s",
        duration_s=30.0, send=((0.0, 2e6), (30.0, 2e6)),
        cap=((0.0, 5e6), (5.0, 600e3), (15.0, 5e6))),
    "cap1500k_loss2": Scenario(
        "sender ramps 300 kbps → 3 Mbps over 25 s into a 1.5 Mbps cap with 2 % random loss",
        duration_s=25.0, send=((0.0, 300e3), (25.0, 3e6)), cap=((0.0, 1.5e6),), loss=0.02),
    "loss2": Scenario(
        "sender ramps 300 kbps → 3 Mbps over 20 s; no cap (50 Mbps), 2 % random loss",
        duration_s=20.0, send=((0.0, 300e3), (20.0, 3e6)), cap=((0.0, 50e6),), loss=0.02),
    "uncongested": Scenario(
        "sender ramps 300 kbps → 3 Mbps over 20 s; no cap (50 Mbps), no loss",
        duration_s=20.0, send=((0.0, 300e3), (20.0, 3e6)), cap=((0.0, 50e6),)),
}


def rate_at(schedule: Schedule, t: float, *, linear: bool) -> float:
    """The schedule's rate at ``t``: interpolated between points, or the last step."""
    prev_t, prev_bps = schedule[0]
    for point_t, bps in schedule:
        if point_t > t:
            if not linear or point_t == prev_t:
                return prev_bps
            return prev_bps + (bps - prev_bps) * (t - prev_t) / (point_t - prev_t)
        prev_t, prev_bps = point_t, bps
    return prev_bps


def _datagram(transport: asyncio.BaseTransport) -> asyncio.DatagramTransport:
    """The transport as a datagram transport, reading at most 2 KiB per datagram (stdlib
    asyncio maps a fresh 256 KiB buffer per read otherwise)."""
    if hasattr(transport, "max_size"):
        setattr(transport, "max_size", 2048)  # noqa: B010 - a private attribute of the stdlib
    return cast(asyncio.DatagramTransport, transport)


class _DelayLine:
    """Datagrams due at non-decreasing times, sent by one re-armed timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 send: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._loop = loop
        self._send = send
        self._items: deque[tuple[float, bytes, tuple[str, int]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def push(self, due: float, data: bytes, addr: tuple[str, int]) -> None:
        self._items.append((due, data, addr))
        if self._timer is None:
            self._timer = self._loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        items = self._items
        while items and items[0][0] <= now:
            _, data, addr = items.popleft()
            self._send(data, addr)
        if items:
            self._timer = self._loop.call_at(items[0][0], self._fire)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


@dataclass
class RelayStats:
    forwarded: int = 0
    dropped_queue: int = 0
    dropped_random: int = 0
    feedback: int = 0


class ShapingRelay(asyncio.DatagramProtocol):
    """A loopback bottleneck: random loss, a drop-tail queue drained at a (changing) rate
    cap, then a fixed delay. Datagrams from ``receiver`` go back to the last sender, delayed.
    """

    def __init__(self, *, receiver: tuple[str, int], cap: Schedule, loss: float,
                 queue_ms: float, delay_s: float, rng: random.Random, t0: float) -> None:
        self.receiver = receiver
        self.cap = cap
        self.loss = loss
        self.queue_ms = queue_ms
        self.delay_s = delay_s
        self.rng = rng
        self.t0 = t0
        self.stats = RelayStats()
        self._sender: tuple[str, int] | None = None
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._busy = False
        self._tx_end = 0.0
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._line = _DelayLine(self._loop, self._sendto)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = _datagram(transport)

    def _sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)

    def _cap_bps(self, at: float) -> float:
        return rate_at(self.cap, at - self.t0, linear=False)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = self._loop.time()
        if addr == self.receiver:
            if self._sender is not None:
                self.stats.feedback += 1
                self._line.push(now + self.delay_s, data, self._sender)
            return
        self._sender = addr
        if self.rng.random() < self.loss:
            self.stats.dropped_random += 1
            return
        limit = max(self._cap_bps(now) * self.queue_ms / 8000, 3000)
        if self._queued_bytes + len(data) > limit:
            self.stats.dropped_queue += 1
            return
        self._queue.append(data)
        self._queued_bytes += len(data)
        if not self._busy:
            self._start(now)

    def _start(self, start: float) -> None:
        self._busy = True
        size = len(self._queue[0])
        self._tx_end = start + size * 8 / self._cap_bps(start)
        self._loop.call_at(self._tx_end, self._done)

    def _done(self) -> None:
        data = self._queue.popleft()
        self._queued_bytes -= len(data)
        self.stats.forwarded += 1
        self._line.push(self._tx_end + self.delay_s, data, self.receiver)
        if self._queue:
            self._start(self._tx_end)
        else:
            self._busy = False

    def close(self) -> None:
        self._line.close()


class Receiver(asyncio.DatagramProtocol):
    """Arrivals → TwccRecorder → feedback to whoever sent the media, every 100 ms."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.twcc = TwccRecorder()
        self.received = 0
        self.bad = 0
        self._peer: tuple[str, int] | None = None
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None

    def now_us(self) -> int:
        return RECEIVER_EPOCH_US + int((self._loop.time() - self.t0) * 1_000_000)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = _datagram(transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._peer = addr
        try:
            seq = read_transport_seq(data, EXT_ID)
        except ValueError:
            seq = None
        if seq is None:
            self.bad += 1
            return
        self.received += 1
        self.twcc.on_packet(seq, self.now_us())

    async def feedback_loop(self) -> None:
        next_at = self._loop.time()
        while True:
            next_at += FEEDBACK_INTERVAL_S
            await asyncio.sleep(max(next_at - self._loop.time(), 0))
            if self._peer is None or self._transport is None:
                continue
            for packet in self.twcc.feedback(self.now_us(), FEEDBACK_SSRC, VIDEO_SSRC):
                self._transport.sendto(packet, self._peer)


@dataclass
class Sender(asyncio.DatagramProtocol):
    """Logs what it sends and the feedback it gets; see the module docstring."""

    t0: float
    log: list[dict[str, Any]] = field(default_factory=list)
    feedback: int = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.feedback += 1
        t = asyncio.get_running_loop().time() - self.t0
        self.log.append({"ev": "feedback", "rtcp": data.hex(), "t": round(t, 6)})


def rtp_packet(ssrc: int, seq: int, timestamp: int, transport_seq: int, size: int,
               marker: bool) -> bytes:
    header = struct.pack("!BBHII", 0x90, (0x80 if marker else 0) | 96, seq & 0xFFFF,
                         timestamp & 0xFFFFFFFF, ssrc)
    ext = struct.pack("!HHBHB", 0xBEDE, 1, (EXT_ID << 4) | 1, transport_seq & 0xFFFF, 0)
    return header + ext + bytes(size - RTP_HEADER)


async def run_sender(transport: asyncio.DatagramTransport, sender: Sender,
                     relay: tuple[str, int], scenario: Scenario, rng: random.Random) -> int:
    loop = asyncio.get_running_loop()
    t0 = sender.t0
    transport_seq = 0
    media_seq = {VIDEO_SSRC: 0, AUDIO_SSRC: 0}
    next_video = next_audio = t0
    end = t0 + scenario.duration_s
    frame = 0

    def send(ssrc: int, size: int, timestamp: int, marker: bool) -> None:
        nonlocal transport_seq
        data = rtp_packet(ssrc, media_seq[ssrc], timestamp, transport_seq, size, marker)
        transport.sendto(data, relay)
        sender.log.append({"ev": "sent", "seq": transport_seq & 0xFFFF, "size": len(data),
                           "t": round(loop.time() - t0, 6)})
        media_seq[ssrc] += 1
        transport_seq += 1

    while True:
        now = loop.time()
        if now >= end:
            return transport_seq
        if now >= next_video:
            rate = rate_at(scenario.send, next_video - t0, linear=True)
            frame_bytes = rate / 8 / FPS * rng.uniform(0.7, 1.3)
            count = max(1, math.ceil(frame_bytes / (MAX_PACKET - RTP_HEADER)))
            size = min(MAX_PACKET, RTP_HEADER + max(1, round(frame_bytes / count)))
            for i in range(count):
                send(VIDEO_SSRC, size, frame * 3000, i == count - 1)
            frame += 1
            next_video += 1 / FPS
        if now >= next_audio:
            send(AUDIO_SSRC, RTP_HEADER + AUDIO_PAYLOAD, int((next_audio - t0) * 48000), False)
            next_audio += AUDIO_INTERVAL_S
        await asyncio.sleep(max(min(next_video, next_audio) - loop.time(), 0))


async def record(name: str, scenario: Scenario) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    loop = asyncio.get_running_loop()
    rng = random.Random(scenario.seed)
    t0 = loop.time()
    recv_transport, receiver = await loop.create_datagram_endpoint(
        lambda: Receiver(t0), local_addr=(HOST, 0))
    recv_addr = recv_transport.get_extra_info("sockname")
    relay_transport, relay = await loop.create_datagram_endpoint(
        lambda: ShapingRelay(receiver=recv_addr, cap=scenario.cap, loss=scenario.loss,
                             queue_ms=scenario.queue_ms, delay_s=scenario.delay_ms / 1000,
                             rng=random.Random(scenario.seed + 1), t0=t0),
        local_addr=(HOST, 0))
    relay_addr = relay_transport.get_extra_info("sockname")
    send_transport, sender = await loop.create_datagram_endpoint(
        lambda: Sender(t0), local_addr=(HOST, 0))
    feedback_task = asyncio.create_task(receiver.feedback_loop())
    try:
        sent = await run_sender(send_transport, sender, relay_addr, scenario, rng)
        await asyncio.sleep(TAIL_S)
    finally:
        feedback_task.cancel()
        relay.close()
        for transport in (send_transport, relay_transport, recv_transport):
            transport.close()
    summary = {"ev": "summary", "sent": sent, "forwarded": relay.stats.forwarded,
               "dropped_queue": relay.stats.dropped_queue,
               "dropped_random": relay.stats.dropped_random,
               "received": receiver.received, "feedback": sender.feedback}
    meta = {"ev": "meta", "scenario": name, "description": scenario.description,
            "duration_s": scenario.duration_s,
            "send": [list(p) for p in scenario.send], "cap": [list(p) for p in scenario.cap],
            "loss": scenario.loss, "queue_ms": scenario.queue_ms,
            "delay_ms": scenario.delay_ms, "seed": scenario.seed, "ext_id": EXT_ID,
            "fps": FPS, "feedback_interval_s": FEEDBACK_INTERVAL_S,
            "recorded": time.strftime("%Y-%m-%d"),
            "python": platform.python_version()}
    return [meta, *sender.log, summary], summary


def write_trace(path: Path, lines: Sequence[dict[str, Any]]) -> None:
    text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                               mtime=0, compresslevel=9) as out:
        out.write(text.encode())


def parse_rate(text: str) -> float:
    text = text.strip().lower()
    scale = {"k": 1e3, "m": 1e6}.get(text[-1:], 1.0)
    return float(text[:-1] if scale != 1.0 else text) * scale


def parse_schedule(text: str) -> Schedule:
    """``"0:300k,20:3M"`` → ((0.0, 300000.0), (20.0, 3000000.0))."""
    points = []
    for part in text.split(","):
        t, _, rate = part.partition(":")
        points.append((float(t), parse_rate(rate)))
    if not points or points[0][0] != 0 or any(b[0] < a[0] for a, b in zip(points, points[1:],
                                                                          strict=False)):
        raise argparse.ArgumentTypeError(f"schedule {text!r} must start at 0 and not go back")
    return tuple(points)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("scenario", nargs="?", choices=[*PRESETS, "custom"])
    parser.add_argument("--all", action="store_true", help="record every preset")
    parser.add_argument("-o", "--out", type=Path, help="output .jsonl.gz (one scenario)")
    parser.add_argument("--duration", type=float)
    parser.add_argument("--send", type=parse_schedule, help="t:rate,... piecewise linear")
    parser.add_argument("--cap", type=parse_schedule, help="t:rate,... steps")
    parser.add_argument("--loss", type=float)
    parser.add_argument("--queue-ms", type=float)
    parser.add_argument("--delay-ms", type=float)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    if args.all == bool(args.scenario):
        parser.error("give one scenario or --all")
    names = list(PRESETS) if args.all else [args.scenario]
    for name in names:
        base = PRESETS.get(name) or Scenario("custom", 20.0, ((0.0, 1e6),), ((0.0, 50e6),))
        overrides = {key: value for key, value in (
            ("duration_s", args.duration), ("send", args.send), ("cap", args.cap),
            ("loss", args.loss), ("queue_ms", args.queue_ms), ("delay_ms", args.delay_ms),
            ("seed", args.seed)) if value is not None}
        scenario = replace(base, **overrides)
        path = args.out if args.out and not args.all else TRACES / f"{name}.jsonl.gz"
        lines, summary = asyncio.run(record(name, scenario))
        write_trace(path, lines)
        print(f"{path}: {path.stat().st_size} bytes, {json.dumps(summary)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
