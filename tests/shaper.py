"""A userspace UDP shaping relay on loopback: a bottleneck between WebRTC clients and the SFU.

Clients send to :attr:`ShapingRelay.address` instead of the SFU's candidate (a
:class:`bench.client.BenchSubscriber` takes it as ``via``). Every client source address gets
its own socket towards the SFU, so the SFU sees one 5-tuple per client transport, and its
own pair of lanes::

    client ◀── delay ◀── drop-tail FIFO drained at the down cap ◀── SFU
    client ──▶ drop-tail FIFO drained at the up cap ──▶ delay ──▶ SFU

Every datagram goes through its lane (STUN, DTLS, SRTP and SRTCP alike: a real bottleneck
does not know what it carries). A lane is a link of ``rate_bps`` (``None``: no limit) with
a drop-tail queue of ``queue_ms`` worth of bytes at the current rate (at least
:data:`MIN_QUEUE_BYTES`), followed by ``delay_ms`` of propagation delay. A datagram costs
its UDP payload plus ``overhead_bytes`` of link time: by default 28, the IPv4 and UDP
headers a real link carries; a negative value takes bytes off instead (e.g. the SRTP
authentication tag, to shape in the units a sender's estimator counts: RTP packets). The
caps can be changed while the relay runs (:meth:`ShapingRelay.set_cap`): datagrams already
queued keep the departure times they got; the new rate applies to the datagrams that
arrive from then on.

No per-packet task or timer: each lane computes a datagram's departure when it arrives
(``max(now, link busy until) + wire bits / rate``) and hands it to a delay line, one re-armed
timer that sends everything due. A late event loop therefore sends a short burst rather
than losing rate. Counters (:class:`LaneStats`) say what each lane forwarded and dropped,
and the longest queueing delay since the last :meth:`ShapingRelay.sample`.

Only 127.0.0.1 is ever bound.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import cast

Addr = tuple[str, int]

HOST = "127.0.0.1"
#: IPv4 (20) + UDP (8) header bytes, charged per datagram on a capped lane.
IP_UDP_OVERHEAD = 28
#: A queue holds at least this much, whatever the rate (two full-size packets and more).
MIN_QUEUE_BYTES = 3000
SOCKET_BUFFER_BYTES = 1 << 20


def _datagram(transport: asyncio.BaseTransport) -> asyncio.DatagramTransport:
    """The transport as a datagram transport, reading at most 2 KiB per datagram (stdlib
    asyncio maps a fresh 256 KiB buffer per read otherwise)."""
    if hasattr(transport, "max_size"):
        setattr(transport, "max_size", 2048)  # noqa: B010 - a private attribute of the stdlib
    sock = transport.get_extra_info("socket")
    if sock is not None:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
    return cast(asyncio.DatagramTransport, transport)


@dataclass
class LaneStats:
    """What one lane (or the sum of lanes) did; ``bytes`` are UDP payload bytes."""

    packets: int = 0  # forwarded (accepted into the queue)
    bytes: int = 0
    rtp_packets: int = 0  # ... of which SRTP (not SRTCP, STUN or DTLS)
    rtp_bytes: int = 0
    dropped: int = 0  # refused by the full queue
    dropped_bytes: int = 0
    max_queue_s: float = 0.0  # the longest queueing delay since the last sample

    def add(self, other: LaneStats) -> LaneStats:
        return LaneStats(self.packets + other.packets, self.bytes + other.bytes,
                         self.rtp_packets + other.rtp_packets, self.rtp_bytes + other.rtp_bytes,
                         self.dropped + other.dropped, self.dropped_bytes + other.dropped_bytes,
                         max(self.max_queue_s, other.max_queue_s))


def is_srtp(data: bytes) -> bool:
    """SRTP rather than SRTCP, STUN or DTLS (RFC 7983, RFC 5761 §4)."""
    return len(data) >= 12 and 128 <= data[0] <= 191 and not 192 <= data[1] <= 223


class Lane:
    """One direction: a drop-tail FIFO drained at ``rate_bps``, then a fixed delay."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Callable[[bytes], None], *,
                 rate_bps: float | None, queue_ms: float, delay_s: float,
                 overhead_bytes: int = IP_UDP_OVERHEAD) -> None:
        self._loop = loop
        self._send = send
        self.rate_bps = rate_bps
        self.queue_ms = queue_ms
        self.delay_s = delay_s
        self.overhead_bytes = overhead_bytes
        self.stats = LaneStats()
        self._busy_until = 0.0  # when the link has sent everything queued
        self._queued: deque[tuple[float, int]] = deque()  # (departure, wire bytes)
        self._queued_bytes = 0
        self._line: deque[tuple[float, bytes]] = deque()  # (due, datagram), due ascending
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def queue_delay_s(self, now: float) -> float:
        """How long a datagram arriving now would wait before the link sends it."""
        return max(0.0, self._busy_until - now)

    def submit(self, data: bytes) -> None:
        if self._closed:
            return
        now = self._loop.time()
        rate = self.rate_bps
        stats = self.stats
        if rate is None:
            depart = now
        else:
            queued = self._queued
            while queued and queued[0][0] <= now:
                self._queued_bytes -= queued.popleft()[1]
            wire = max(len(data) + self.overhead_bytes, 1)
            limit = max(rate * self.queue_ms / 8000.0, MIN_QUEUE_BYTES)
            if self._queued_bytes + wire > limit:
                stats.dropped += 1
                stats.dropped_bytes += len(data)
                return
            depart = max(now, self._busy_until) + wire * 8.0 / rate
            self._busy_until = depart
            queued.append((depart, wire))
            self._queued_bytes += wire
            if depart - now > stats.max_queue_s:
                stats.max_queue_s = depart - now
        stats.packets += 1
        stats.bytes += len(data)
        if is_srtp(data):
            stats.rtp_packets += 1
            stats.rtp_bytes += len(data)
        due = depart + self.delay_s
        if due <= now and not self._line:
            self._send(data)
            return
        self._line.append((due, data))
        if self._timer is None:
            self._timer = self._loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        line = self._line
        while line and line[0][0] <= now:
            self._send(line.popleft()[1])
        if line:
            self._timer = self._loop.call_at(line[0][0], self._fire)

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._line.clear()


class _Upstream(asyncio.DatagramProtocol):
    """A flow's socket towards the SFU: what arrives on it goes down to the client."""

    def __init__(self, flow: _Flow) -> None:
        self.flow = flow

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _datagram(transport)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        if addr == self.flow.relay.sfu:
            self.flow.down.submit(data)


class _Flow:
    """One client source address ↔ its own socket towards the SFU, and its two lanes."""

    def __init__(self, relay: ShapingRelay, client: Addr) -> None:
        self.relay = relay
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        loop = asyncio.get_running_loop()
        self.down = Lane(loop, self._to_client, rate_bps=relay.down_bps,
                         queue_ms=relay.queue_ms, delay_s=relay.delay_ms / 1000,
                         overhead_bytes=relay.overhead_bytes)
        self.up = Lane(loop, self._to_sfu, rate_bps=relay.up_bps, queue_ms=relay.queue_ms,
                       delay_s=relay.delay_ms / 1000, overhead_bytes=relay.overhead_bytes)
        self.pending: list[bytes] = []  # from the client before the socket is open

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Upstream(self), local_addr=(HOST, 0))
        self.transport = cast(asyncio.DatagramTransport, transport)
        for data in self.pending:
            self.up.submit(data)
        self.pending.clear()

    def from_client(self, data: bytes) -> None:
        if self.transport is None:
            self.pending.append(data)
        else:
            self.up.submit(data)

    def _to_sfu(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, self.relay.sfu)

    def _to_client(self, data: bytes) -> None:
        self.relay.send_to_client(data, self.client)

    def close(self) -> None:
        self.down.close()
        self.up.close()
        if self.transport is not None:
            self.transport.close()


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, relay: ShapingRelay) -> None:
        self.relay = relay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _datagram(transport)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.relay.from_client(data, addr)


class ShapingRelay:
    """See the module docstring. ``down_bps`` caps SFU → client, ``up_bps`` client → SFU
    (``None``: no cap); ``queue_ms`` sizes the drop-tail queues at the current cap;
    ``delay_ms`` is added in each direction."""

    def __init__(self, sfu: Addr, *, down_bps: float | None = None,
                 up_bps: float | None = None, queue_ms: float = 250.0,
                 delay_ms: float = 5.0, overhead_bytes: int = IP_UDP_OVERHEAD) -> None:
        if sfu[0] != HOST:
            raise ValueError(f"the relay only talks to {HOST}, not {sfu[0]}")
        for name, bps in (("down_bps", down_bps), ("up_bps", up_bps)):
            if bps is not None and bps <= 0:
                raise ValueError(f"{name} must be positive or None, not {bps}")
        self.sfu = sfu
        self.down_bps = down_bps
        self.up_bps = up_bps
        self.queue_ms = queue_ms
        self.delay_ms = delay_ms
        self.overhead_bytes = overhead_bytes
        self.flows: dict[Addr, _Flow] = {}
        self._listener: asyncio.DatagramTransport | None = None
        self._opening: set[asyncio.Task[None]] = set()

    async def start(self) -> Addr:
        """Bind the client-facing socket; returns :attr:`address`."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Listener(self), local_addr=(HOST, 0))
        self._listener = cast(asyncio.DatagramTransport, transport)
        return self.address

    @property
    def address(self) -> Addr:
        """Where clients send instead of the SFU."""
        if self._listener is None:
            raise RuntimeError("the relay is not started")
        host, port = self._listener.get_extra_info("sockname")[:2]
        return host, port

    def set_cap(self, down_bps: float | None, up_bps: float | None = None, *,
                overhead_bytes: int | None = None) -> None:
        """New caps (``None``: no cap), and optionally a new per-datagram overhead, for
        every flow, now and to come."""
        self.down_bps = down_bps
        self.up_bps = up_bps
        if overhead_bytes is not None:
            self.overhead_bytes = overhead_bytes
        for flow in self.flows.values():
            flow.down.rate_bps = down_bps
            flow.up.rate_bps = up_bps
            flow.down.overhead_bytes = flow.up.overhead_bytes = self.overhead_bytes

    def from_client(self, data: bytes, addr: Addr) -> None:
        flow = self.flows.get(addr)
        if flow is None:
            flow = self.flows[addr] = _Flow(self, addr)
            task = asyncio.get_running_loop().create_task(flow.open())
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)
        flow.from_client(data)

    def send_to_client(self, data: bytes, client: Addr) -> None:
        listener = self._listener
        if listener is not None and not listener.is_closing():
            listener.sendto(data, client)

    def totals(self) -> tuple[LaneStats, LaneStats]:
        """(down, up) summed over flows, without resetting anything."""
        down, up = LaneStats(), LaneStats()
        for flow in self.flows.values():
            down = down.add(flow.down.stats)
            up = up.add(flow.up.stats)
        return down, up

    def sample(self) -> tuple[LaneStats, LaneStats, float]:
        """(down, up) totals, and the down queue's delay now (s); resets the longest
        queueing delays, so each sample says the longest since the previous one."""
        down, up = self.totals()
        loop = asyncio.get_running_loop()
        queue_s = max((f.down.queue_delay_s(loop.time()) for f in self.flows.values()),
                      default=0.0)
        for flow in self.flows.values():
            flow.down.stats = replace(flow.down.stats, max_queue_s=0.0)
            flow.up.stats = replace(flow.up.stats, max_queue_s=0.0)
        return down, up, queue_s

    def close(self) -> None:
        for task in self._opening:
            task.cancel()
        for flow in self.flows.values():
            flow.close()
        self.flows.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
