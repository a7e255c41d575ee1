"""The asyncio shell of the shared WebRTC UDP port: one socket, one :class:`IceLiteMux`.

It feeds every datagram to the mux, sends STUN responses, hands DTLS to the transport's
adapter and SRTP/SRTCP to the transport's synchronous callback, and ticks the mux's timers
once a second. Counters are plain ints and dicts, for the metrics module to read.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import structlog

from .ice import Addr, IceLiteMux, Kind

__all__ = ["TransportHandler", "UdpEndpoint", "udp_socket_drops"]

log = structlog.get_logger("sfu.webrtc.udp")

#: Read buffer for the stdlib loop: it otherwise reads each datagram into a fresh 256 KiB
#: buffer (mmap + munmap per packet). WebRTC datagrams fit in one MTU.
STDLIB_MAX_SIZE = 2048


@dataclass(slots=True)
class TransportHandler:
    """Synchronous per-transport callbacks, called from ``datagram_received``."""

    on_dtls: Callable[[bytes], None]
    on_srtp: Callable[[bytes], None]
    #: Called with the new selected 5-tuple (first authenticated check, USE-CANDIDATE).
    on_selected: Callable[[Addr], None] | None = None


class UdpEndpoint(asyncio.DatagramProtocol):
    """The one UDP socket of all WebRTC transports. Create with :meth:`open`.

    Drop reasons added by the shell to ``drops`` (which is ``mux.drops``): ``no_handler``
    (a transport in the mux without :meth:`attach`), ``handler_error`` (a callback raised),
    ``send_no_tuple`` (sending before the first check), ``send_error`` (socket closed) and
    ``icmp_error`` (an ICMP error, e.g. port unreachable, reported by the kernel).
    """

    def __init__(
        self,
        mux: IceLiteMux | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        tick_s: float = 1.0,
        on_consent_expired: Callable[[str], None] | None = None,
    ) -> None:
        self.mux = mux if mux is not None else IceLiteMux()
        self.clock = clock
        self.tick_s = tick_s
        self.on_consent_expired = on_consent_expired
        self.datagrams_in = 0
        self.datagrams_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        #: The mux's own dict: drops by reason, from the mux and from this shell.
        self.drops: dict[str, int] = self.mux.drops
        self.rcvbuf_bytes = 0
        self.sndbuf_bytes = 0
        self._handlers: dict[str, TransportHandler] = {}
        self._failed: set[str] = set()
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed: asyncio.Future[None] | None = None

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        rcvbuf_bytes: int = 4 * 1024 * 1024,
        sndbuf_bytes: int = 4 * 1024 * 1024,
        mux: IceLiteMux | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick_s: float = 1.0,
        on_consent_expired: Callable[[str], None] | None = None,
    ) -> UdpEndpoint:
        """Bind ``(host, port)`` (port 0 picks one) with the given kernel buffer sizes.

        The kernel caps the buffers at ``net.core.rmem_max`` / ``wmem_max``; the sizes it
        granted are in :attr:`rcvbuf_bytes` / :attr:`sndbuf_bytes` (Linux reports double)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf_bytes)
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self = cls(mux, clock=clock, tick_s=tick_s, on_consent_expired=on_consent_expired)
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, sock=sock)
        self._sock = sock
        self.rcvbuf_bytes = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.sndbuf_bytes = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        return self

    # -- asyncio.DatagramProtocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        if hasattr(transport, "max_size"):  # stdlib loop only; uvloop reads into its own buffer
            transport.max_size = STDLIB_MAX_SIZE
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        self._timer = loop.call_later(self.tick_s, self._tick)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable from a departed client) arrive here on Linux.
        self._count("icmp_error")

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.datagrams_in += 1
        self.bytes_in += len(data)
        decision = self.mux.receive_datagram(data, addr, self.clock())
        kind = decision.kind
        if kind is Kind.DROP:
            if decision.response is not None:
                self._sendto(decision.response, addr)
            return
        handler = self._handlers.get(decision.transport_id)  # type: ignore[arg-type]
        if kind is Kind.STUN:
            self._sendto(decision.response, addr)  # type: ignore[arg-type]
            if not decision.selected or handler is None or handler.on_selected is None:
                return
        elif handler is None:
            self._count("no_handler")
            return
        try:
            if kind is Kind.RTP:
                handler.on_srtp(data)
            elif kind is Kind.DTLS:
                handler.on_dtls(data)
            elif handler.on_selected is not None:
                handler.on_selected(addr)
        except Exception:
            # A failure in one transport is counted, logged once, and spares the others.
            self._count("handler_error")
            transport_id = str(decision.transport_id)
            if transport_id not in self._failed:
                self._failed.add(transport_id)
                log.exception("webrtc_transport_handler_failed", transport=transport_id)

    # -- transports -----------------------------------------------------------------------

    def attach(self, transport_id: str, handler: TransportHandler) -> None:
        """Route the datagrams the mux assigns to ``transport_id`` to ``handler``."""
        self._handlers[transport_id] = handler
        self._failed.discard(transport_id)

    def detach(self, transport_id: str) -> None:
        """Stop routing to ``transport_id`` and remove it from the mux."""
        self._handlers.pop(transport_id, None)
        self._failed.discard(transport_id)
        self.mux.remove(transport_id)

    def send(self, transport_id: str, data: bytes) -> bool:
        """Send to the transport's selected 5-tuple; ``False`` if it has none (counted)."""
        addr = self.mux.selected_addr(transport_id)
        if addr is None:
            self._count("send_no_tuple")
            return False
        return self._sendto(data, addr)

    def _sendto(self, data: bytes, addr: Addr) -> bool:
        transport = self._transport
        if transport is None or transport.is_closing():
            self._count("send_error")
            return False
        transport.sendto(data, addr)
        self.datagrams_out += 1
        self.bytes_out += len(data)
        return True

    # -- timers, counters, life cycle -----------------------------------------------------

    def _tick(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.tick_s, self._tick)
        for transport_id in self.mux.handle_timeout(self.clock()):
            log.info("webrtc_consent_expired", transport=transport_id)
            if self.on_consent_expired is not None:
                self.on_consent_expired(transport_id)

    def _count(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    @property
    def local_addr(self) -> Addr:
        """The bound address, e.g. ``("127.0.0.1", 40123)``."""
        if self._sock is None:
            raise RuntimeError("endpoint is not open")
        return tuple(self._sock.getsockname())

    def kernel_rx_drops(self) -> int:
        """Datagrams the kernel dropped because our receive buffer was full (Linux)."""
        if self._sock is None:
            return 0
        return udp_socket_drops(self._sock)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        if self._closed is not None:
            await self._closed


def udp_socket_drops(sock: socket.socket) -> int:
    """The ``drops`` column of ``/proc/net/udp{,6}`` for ``sock`` (matched by inode): datagrams
    the kernel discarded for this socket, mostly because its receive buffer was full.
    Returns 0 where ``/proc/net`` does not exist (not Linux) or the socket is not listed."""
    inode = str(_socket_inode(sock))
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as f:
                next(f, None)  # header
                for line in f:
                    fields = line.split()
                    # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
                    if len(fields) >= 13 and fields[9] == inode:
                        return int(fields[12])
        except FileNotFoundError:
            continue
    return 0


def _socket_inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino
