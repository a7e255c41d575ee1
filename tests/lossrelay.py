"""A seeded loss/reorder UDP relay on loopback, between WebRTC clients and the SFU's UDP port.

Clients are pointed at the relay instead of the SFU (by rewriting the SFU's candidate in the
SDP they receive). Every client source address gets its own upstream socket to the SFU, so
the SFU still sees one 5-tuple per client transport. Datagrams are classified by their first
byte (RFC 7983): STUN (0..3) and DTLS (20..63) always pass, so ICE and the handshake complete
deterministically; SRTP and SRTCP (128..191) are dropped with probability ``loss`` and
reordered with probability ``reorder`` (held back until the next datagram of the same
direction has gone through, or at most ``hold_s``), in both directions. The loss rate can be
changed while the relay runs, for both directions or one (:meth:`LossRelay.set_loss`).

Determinism: a datagram's fate is drawn from ``random.Random`` seeded with the relay seed and
the datagram's identity, not its arrival order: for SRTP its direction, payload type (clear
text in SRTP), sequence number relative to the first one seen on that SSRC and how many
times that (SSRC, seq) passed already; for SRTCP its direction, packet type and ordinal.
Runs with the same seed lose and reorder the same media packets even when the two clients'
transports interleave differently.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

Addr = tuple[str, int]

STUN, DTLS, RTP, RTCP, OTHER = "stun", "dtls", "rtp", "rtcp", "other"


def classify(data: bytes) -> str:
    if not data:
        return OTHER
    b = data[0]
    if b <= 3:
        return STUN
    if 20 <= b <= 63:
        return DTLS
    if 128 <= b <= 191 and len(data) >= 12:
        return RTCP if 192 <= data[1] <= 223 else RTP  # RFC 5761 §4
    return OTHER


@dataclass
class DropRecord:
    lane: str  # "up" (client → SFU) or "down" (SFU → client)
    flow: int
    kind: str
    payload_type: int
    ssrc: int
    seq: int  # -1 for RTCP


@dataclass
class LaneStats:
    passed: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    reordered: Counter[str] = field(default_factory=Counter)


class _Lane:
    """One direction of one flow: decides each datagram's fate, holds reordered ones."""

    def __init__(self, relay: LossRelay, name: str, flow: int, send: Any) -> None:
        self.relay = relay
        self.name = name
        self.flow = flow
        self.send = send  # callable(bytes)
        self.first_seq: dict[int, int] = {}
        self.seen: Counter[tuple[int, int]] = Counter()
        self.rtcp_count = 0
        self.held: bytes | None = None
        self.held_timer: asyncio.TimerHandle | None = None

    def _fate(self, data: bytes, kind: str) -> tuple[float, int, int, int]:
        pt = data[1] if kind == RTCP else data[1] & 0x7F
        ssrc = int.from_bytes(data[8:12] if kind == RTP else data[4:8], "big")
        if kind == RTP:
            seq = int.from_bytes(data[2:4], "big")
            first = self.first_seq.setdefault(ssrc, seq)
            k = (seq - first) & 0xFFFF
            occurrence = self.seen[(ssrc, seq)]
            self.seen[(ssrc, seq)] += 1
            key = f"{self.relay.seed}|{self.name}|rtp|{pt}|{k}|{occurrence}"
        else:
            seq = -1
            self.rtcp_count += 1
            key = f"{self.relay.seed}|{self.name}|rtcp|{pt}|{self.rtcp_count}"
        return random.Random(key).random(), pt, ssrc, seq

    def submit(self, data: bytes) -> None:
        kind = classify(data)
        stats = self.relay.stats[self.name]
        if kind in (RTP, RTCP):
            u, pt, ssrc, seq = self._fate(data, kind)
            loss = self.relay.loss_for(self.name)
            if u < loss:
                stats.dropped[kind] += 1
                self.relay.drops.append(DropRecord(self.name, self.flow, kind, pt, ssrc, seq))
                return
            if u < loss + self.relay.reorder and self.held is None:
                stats.reordered[kind] += 1
                self.held = data
                self.held_timer = asyncio.get_running_loop().call_later(
                    self.relay.hold_s, self._release)
                return
        stats.passed[kind] += 1
        self.send(data)
        self._release()

    def _release(self) -> None:
        if self.held_timer is not None:
            self.held_timer.cancel()
            self.held_timer = None
        if self.held is not None:
            data, self.held = self.held, None
            self.relay.stats[self.name].passed[classify(data)] += 1
            self.send(data)

    def close(self) -> None:
        if self.held_timer is not None:
            self.held_timer.cancel()
        self.held = None


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, flow: _Flow) -> None:
        self.flow = flow

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.flow.down.submit(data)


class _Flow:
    """One client source address ↔ its own socket towards the SFU."""

    def __init__(self, relay: LossRelay, index: int, client: Addr) -> None:
        self.relay = relay
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        self.up = _Lane(relay, "up", index, self._to_sfu)
        self.down = _Lane(relay, "down", index, self._to_client)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Upstream(self), local_addr=("127.0.0.1", 0), remote_addr=self.relay.upstream)
        self.transport = transport
        pending, self.pending = self.pending, []
        for data in pending:
            self.up.submit(data)

    def from_client(self, data: bytes) -> None:
        if self.transport is None:
            self.pending.append(data)
        else:
            self.up.submit(data)

    def _to_sfu(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data)

    def _to_client(self, data: bytes) -> None:
        listener = self.relay.listener
        if listener is not None and not listener.is_closing():
            listener.sendto(data, self.client)

    def close(self) -> None:
        self.up.close()
        self.down.close()
        if self.transport is not None:
            self.transport.close()


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, relay: LossRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.relay._from_client(data, addr)


class LossRelay:
    """``await LossRelay(("127.0.0.1", sfu_port), seed=1).start()`` → the relay's port."""

    def __init__(self, upstream: Addr, *, seed: int, loss: float = 0.05,
                 reorder: float = 0.02, hold_s: float = 0.008) -> None:
        self.upstream = upstream
        self.seed = seed
        self.loss = loss
        self.reorder = reorder
        self.hold_s = hold_s
        self.listener: asyncio.DatagramTransport | None = None
        self.flows: dict[Addr, _Flow] = {}
        self.stats = {"up": LaneStats(), "down": LaneStats()}
        self.drops: list[DropRecord] = []
        #: per-lane loss overriding ``loss`` ("up": client → SFU, "down": SFU → client)
        self.lane_loss: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    def loss_for(self, lane: str) -> float:
        """The loss probability of a lane ("up" or "down") now."""
        return self.lane_loss.get(lane, self.loss)

    def set_loss(self, loss: float, lane: str | None = None) -> None:
        """Change the loss probability at runtime, of one lane or (``lane=None``) of both:
        it applies from the next datagram on. A datagram's draw does not depend on the
        rate, so with the same seed a lower rate drops a subset of what a higher one does."""
        if not 0.0 <= loss <= 1.0:
            raise ValueError(f"loss must be within 0..1, not {loss}")
        if lane is None:
            self.loss = loss
            self.lane_loss.clear()
        elif lane in ("up", "down"):
            self.lane_loss[lane] = loss
        else:
            raise ValueError(f"lane must be 'up' or 'down', not {lane!r}")

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Listener(self), local_addr=("127.0.0.1", 0))
        self.listener = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self.port

    def _from_client(self, data: bytes, addr: Addr) -> None:
        flow = self.flows.get(addr)
        if flow is None:
            flow = self.flows[addr] = _Flow(self, len(self.flows), addr)
            task = asyncio.get_running_loop().create_task(flow.open())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        flow.from_client(data)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for flow in self.flows.values():
            flow.close()
        if self.listener is not None:
            self.listener.close()
