"""A cheap but real WebRTC client transport: one UDP socket, ICE, DTLS client, SRTP.

ICE is done by hand, as a full agent with a single candidate pair would do it against an
ICE-lite server: a STUN Binding request with USERNAME, PRIORITY, ICE-CONTROLLING,
USE-CANDIDATE, MESSAGE-INTEGRITY and FINGERPRINT to the server's candidate, retransmitted
until an authenticated response arrives, then a consent check every few seconds (RFC 7675).
DTLS is :class:`sfu.webrtc.dtls.DtlsSrtpTransport` in the client role over this socket;
SRTP/SRTCP are unprotected synchronously in ``datagram_received`` and handed to callbacks,
with no queue or task per packet.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import Callable
from typing import cast

from aioice import stun
from aiortc import RTCCertificate

from sfu.webrtc.dtls import DtlsSrtpTransport, fingerprints_from_sdp_values
from sfu.webrtc.errors import WebRtcError
from sfu.webrtc.ice import IceCredentials
from sfu.webrtc.udp import udp_socket_drops

__all__ = ["BenchError", "ClientTransport"]

#: Host candidate priority of a client (type preference 126, component 1).
CLIENT_PRIORITY = 2130706431
CONSENT_INTERVAL_S = 5.0
SOCKET_BUFFER_BYTES = 1 << 20


class BenchError(Exception):
    """A bench client could not do what the run needs (signaling refused, ICE or DTLS
    failed...): the message says which client and why."""


class ClientTransport(asyncio.DatagramProtocol):
    """One peer connection's transport on its own UDP socket. Create with :meth:`open`."""

    def __init__(
        self,
        certificate: RTCCertificate,
        *,
        on_rtp: Callable[[bytes], None] | None = None,
        on_rtcp: Callable[[bytes], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.credentials = IceCredentials.generate(rng)
        self.tie_breaker = (rng or random.SystemRandom()).getrandbits(63)
        self.dtls = DtlsSrtpTransport(self._send, certificate, role="client",
                                      on_rtp=on_rtp, on_rtcp=on_rtcp)
        self.server: tuple[str, int] | None = None
        self._server_ufrag = ""
        self._transport: asyncio.DatagramTransport | None = None
        self._server_pwd = b""
        self._pending: dict[bytes, asyncio.Future[None]] = {}
        self._consent: asyncio.TimerHandle | None = None
        self.connected = False
        self.ice_s = 0.0  # time to the first authenticated check response
        self.dtls_s = 0.0  # DTLS handshake time
        self.stun_responses = 0
        self.send_errors = 0
        #: every datagram this client received from and sent to the server (STUN, DTLS,
        #: SRTP, SRTCP), before any simulated loss
        self.datagrams_in = 0
        self.bytes_in = 0
        self.datagrams_out = 0
        self.bytes_out = 0
        #: Fraction of incoming SRTP/SRTCP datagrams dropped on purpose (simulated loss).
        self.drop_rate = 0.0
        self.dropped = 0
        self._rng = rng or random.Random()

    @classmethod
    async def open(
        cls,
        certificate: RTCCertificate,
        *,
        host: str = "127.0.0.1",
        on_rtp: Callable[[bytes], None] | None = None,
        on_rtcp: Callable[[bytes], None] | None = None,
        rng: random.Random | None = None,
    ) -> ClientTransport:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
            sock.bind((host, 0))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: cls(certificate, on_rtp=on_rtp, on_rtcp=on_rtcp, rng=rng), sock=sock)
        return protocol

    # -- asyncio.DatagramProtocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        if hasattr(transport, "max_size"):  # the stdlib loop: no 256 KiB buffer per read
            transport.max_size = 2048

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data:
            return
        self.datagrams_in += 1
        self.bytes_in += len(data)
        first = data[0]
        if 127 < first < 192:
            if self.drop_rate and self._rng.random() < self.drop_rate:
                self.dropped += 1
                return
            self.dtls.srtp_received(data)
        elif 19 < first < 64:
            self.dtls.dtls_received(data)
        elif first < 4:
            self._stun_received(data)

    def error_received(self, exc: Exception) -> None:
        self.send_errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_consent()

    @property
    def local_port(self) -> int:
        if self._transport is None:
            raise BenchError("transport is not open")
        port: int = self._transport.get_extra_info("sockname")[1]
        return port

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped because this socket's receive buffer was full."""
        if self._transport is None:
            return 0
        sock = self._transport.get_extra_info("socket")
        return udp_socket_drops(cast(socket.socket, sock)) if sock is not None else 0

    # -- ICE ----------------------------------------------------------------------------

    def _check(self, use_candidate: bool) -> tuple[bytes, bytes]:
        attributes: dict[str, object] = {
            "USERNAME": f"{self._server_ufrag}:{self.credentials.ufrag}",
            "PRIORITY": CLIENT_PRIORITY,
            "ICE-CONTROLLING": self.tie_breaker,
        }
        if use_candidate:
            attributes["USE-CANDIDATE"] = None
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, attributes=attributes)
        request.add_message_integrity(self._server_pwd)
        request.add_fingerprint()
        return request.transaction_id, bytes(request)

    def _stun_received(self, data: bytes) -> None:
        try:
            message = stun.parse_message(data)
        except ValueError:
            return
        future = self._pending.pop(message.transaction_id, None)
        if future is None or future.done():
            return
        if message.message_class != stun.Class.RESPONSE or not message.check_message_integrity(
                self._server_pwd):
            future.set_exception(BenchError(f"ICE check refused: {message.attributes}"))
            return
        self.stun_responses += 1
        future.set_result(None)

    async def _ice(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        interval = 0.05
        while True:
            transaction_id, request = self._check(use_candidate=True)
            future: asyncio.Future[None] = loop.create_future()
            self._pending[transaction_id] = future
            self._send(request)
            try:
                await asyncio.wait_for(future, min(interval, deadline - loop.time()))
                return
            except TimeoutError:
                self._pending.pop(transaction_id, None)
                if loop.time() >= deadline:
                    raise BenchError(f"no ICE response from {self.server} in {timeout_s} s") from None
                interval = min(interval * 2, 0.5)

    def _consent_check(self) -> None:
        loop = asyncio.get_running_loop()
        self._consent = loop.call_later(CONSENT_INTERVAL_S, self._consent_check)
        _, request = self._check(use_candidate=False)
        self._send(request)

    def _stop_consent(self) -> None:
        if self._consent is not None:
            self._consent.cancel()
            self._consent = None

    # -- life cycle -----------------------------------------------------------------------

    async def connect(
        self,
        server: tuple[str, int],
        server_ufrag: str,
        server_pwd: str,
        fingerprints: list[str],
        *,
        timeout_s: float = 20.0,
    ) -> None:
        """ICE check, then the DTLS handshake as client; raises :class:`BenchError`."""
        self.server = server
        self._server_ufrag = server_ufrag
        self._server_pwd = server_pwd.encode()
        started = time.monotonic()
        await self._ice(timeout_s)
        self.ice_s = time.monotonic() - started
        try:
            await self.dtls.start(fingerprints_from_sdp_values(fingerprints),
                                  timeout_s=max(1.0, timeout_s - self.ice_s))
        except WebRtcError as exc:
            raise BenchError(f"DTLS with {server}: {exc}") from None
        self.dtls_s = time.monotonic() - started - self.ice_s
        self.connected = True
        self._consent = asyncio.get_running_loop().call_later(
            CONSENT_INTERVAL_S * random.random(), self._consent_check)

    def _send(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing() or self.server is None:
            self.send_errors += 1
            return
        transport.sendto(data, self.server)
        self.datagrams_out += 1
        self.bytes_out += len(data)

    def send_rtp(self, data: bytes) -> None:
        if self.connected:
            self.dtls.send_rtp(data)

    def send_rtcp(self, data: bytes) -> None:
        if self.connected:
            self.dtls.send_rtcp(data)

    async def close(self) -> None:
        self.connected = False
        self._stop_consent()
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.dtls.stop(), 2)
        if self._transport is not None:
            self._transport.close()
