"""DTLS-SRTP over the shared UDP port, with aiortc's ``RTCDtlsTransport`` doing the DTLS.

This is the only module that touches aiortc's private names (``_recv``, ``_send``,
``_set_role``, ``_rx_srtp``, ``_tx_srtp``): aiortc is pinned in ``pyproject.toml`` for that.

* :class:`IceTransportAdapter` is what ``RTCDtlsTransport`` needs of an ICE transport:
  ``role``, ``async _recv()`` (survives cancellation, raises ``ConnectionError`` once closed)
  and ``async _send(data)``. DTLS datagrams are fed to it synchronously and queued, also
  before the handshake starts (a ClientHello can beat the SDP answer).
* :class:`DtlsSrtpTransport` wraps ``RTCDtlsTransport``. SRTP/SRTCP never goes through
  aiortc's receive loop: the UDP shell calls :meth:`DtlsSrtpTransport.srtp_received`, which
  unprotects with the SRTP session aiortc set up and calls ``on_rtp`` / ``on_rtcp`` in the
  same ``datagram_received``. Data channels: ``RTCSctpTransport(transport.dtls)``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from typing import Literal, cast

import pylibsrtp
from aiortc import (
    RTCCertificate,
    RTCDtlsFingerprint,
    RTCDtlsParameters,
    RTCDtlsTransport,
    RTCIceTransport,
    RTCSctpTransport,
)
from aiortc.rtcsctptransport import RTCSctpCapabilities

from .errors import WebRtcError
from .ice import Addr, IceCredentials
from .udp import TransportHandler, UdpEndpoint

__all__ = [
    "DtlsSrtpTransport",
    "IceTransportAdapter",
    "fingerprints_from_sdp_values",
    "serve_transport",
]

#: RFC 5761 §4: with rtcp-mux, RTCP packet types 192..223 sit where RTP has its M bit and PT.
_RTCP_TYPES = range(192, 224)
_MIN_SRTP = 12


class IceTransportAdapter:
    """The ICE transport ``RTCDtlsTransport`` runs over: a queue in, a send function out."""

    def __init__(
        self,
        send: Callable[[bytes], object],
        *,
        role: str = "controlled",
        max_queued: int = 64,
    ) -> None:
        self.role = role
        self._send_fn = send
        self._queue: deque[bytes] = deque()
        self._max_queued = max_queued
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        #: DTLS datagrams dropped because the queue was full or the adapter closed.
        self.dropped = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def feed(self, data: bytes) -> None:
        """A DTLS datagram from the wire (synchronous, from ``datagram_received``)."""
        if self._closed or len(self._queue) >= self._max_queued:
            self.dropped += 1
            return
        self._queue.append(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        self._closed = True
        self._queue.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _recv(self) -> bytes:
        # Cancel-safe: nothing is taken from the queue until the result is returned, so a
        # cancelled wait_for() inside RTCDtlsTransport loses no datagram.
        while not self._queue:
            if self._closed:
                raise ConnectionError("ICE transport is closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()

    async def _send(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionError("ICE transport is closed")
        self._send_fn(data)


class DtlsSrtpTransport:
    """One participant's DTLS-SRTP transport, DTLS server by default (``a=setup:passive``).

    :param send: sends one datagram to the peer (``partial(endpoint.send, transport_id)``).
    :param role: ``"client"`` only for test peers and load generators.
    """

    def __init__(
        self,
        send: Callable[[bytes], object],
        certificate: RTCCertificate,
        *,
        role: Literal["server", "client"] = "server",
        on_rtp: Callable[[bytes], None] | None = None,
        on_rtcp: Callable[[bytes], None] | None = None,
    ) -> None:
        self._send = send
        self.ice = IceTransportAdapter(
            send, role="controlled" if role == "server" else "controlling"
        )
        self.dtls = RTCDtlsTransport(cast(RTCIceTransport, self.ice), [certificate])
        self.dtls._set_role(role)
        self.role = role
        #: Called with each decrypted RTP packet, synchronously.
        self.on_rtp = on_rtp
        #: Called with each decrypted RTCP compound packet, synchronously.
        self.on_rtcp = on_rtcp
        self._rx: pylibsrtp.Session | None = None
        self._tx: pylibsrtp.Session | None = None
        self.srtp_in = 0
        self.srtp_out = 0
        self.srtp_early = 0  # SRTP before the keys (dropped)
        self.srtp_errors = 0  # authentication or replay failures (dropped)
        self.on_close: Callable[[], None] | None = None

    # -- SDP ------------------------------------------------------------------------------

    @property
    def local_fingerprints(self) -> list[RTCDtlsFingerprint]:
        """``a=fingerprint`` values of our certificate (sha-256, sha-384, sha-512)."""
        return self.dtls.getLocalParameters().fingerprints

    @property
    def local_fingerprint_values(self) -> list[str]:
        """The same as ``a=fingerprint`` values: ``"sha-256 AB:CD:..."``."""
        return [f"{fp.algorithm} {fp.value}" for fp in self.local_fingerprints]

    @property
    def state(self) -> str:
        """aiortc's DTLS state: new, connecting, connected, closed or failed."""
        return self.dtls.state

    # -- life cycle -----------------------------------------------------------------------

    async def start(
        self, remote_fingerprints: Iterable[RTCDtlsFingerprint], *, timeout_s: float = 30.0
    ) -> None:
        """Run the DTLS handshake and take the SRTP sessions. Raises :class:`WebRtcError`
        if it fails, the peer's certificate does not match, or it takes over ``timeout_s``."""
        params = RTCDtlsParameters(
            fingerprints=list(remote_fingerprints),
            role="client" if self.role == "server" else "server",
        )
        if not params.fingerprints:
            raise WebRtcError("the peer sent no DTLS fingerprint")
        try:
            await asyncio.wait_for(self.dtls.start(params), timeout_s)
        except TimeoutError:
            await self.stop()
            raise WebRtcError(f"DTLS handshake timed out after {timeout_s} s") from None
        if self.dtls.state != "connected":
            await self.stop()
            raise WebRtcError(f"DTLS handshake failed (state {self.dtls.state})")
        self._rx = self.dtls._rx_srtp
        self._tx = self.dtls._tx_srtp

    async def start_sctp(
        self, *, remote_port: int = 5000, max_message_size: int = 65536
    ) -> RTCSctpTransport:
        """An SCTP association (data channels) over this DTLS transport; call after start."""
        sctp = RTCSctpTransport(self.dtls)
        await sctp.start(RTCSctpCapabilities(maxMessageSize=max_message_size), remote_port)
        return sctp

    async def stop(self) -> None:
        """Send close_notify (if connected), stop aiortc's loop and close the adapter."""
        try:
            await self.dtls.stop()
        finally:
            self.ice.close()
            self._rx = self._tx = None
            if self.on_close is not None:
                on_close, self.on_close = self.on_close, None
                on_close()

    # -- datagrams ------------------------------------------------------------------------

    def dtls_received(self, data: bytes) -> None:
        """A DTLS datagram from the wire: queued for aiortc's handshake / receive loop."""
        self.ice.feed(data)

    def srtp_received(self, data: bytes) -> None:
        """An SRTP or SRTCP datagram from the wire: unprotected and handed on, synchronously."""
        rx = self._rx
        if rx is None or len(data) < _MIN_SRTP:
            self.srtp_early += 1
            return
        try:
            if data[1] in _RTCP_TYPES:
                plain = rx.unprotect_rtcp(data)
                callback = self.on_rtcp
            else:
                plain = rx.unprotect(data)
                callback = self.on_rtp
        except pylibsrtp.Error:
            self.srtp_errors += 1
            return
        self.srtp_in += 1
        if callback is not None:
            callback(plain)

    def unprotect_rtp(self, data: bytes) -> bytes:
        """Decrypt an SRTP packet; raises ``pylibsrtp.Error`` (auth, replay) or WebRtcError."""
        return self._rx_session().unprotect(data)

    def unprotect_rtcp(self, data: bytes) -> bytes:
        return self._rx_session().unprotect_rtcp(data)

    def protect_rtp(self, data: bytes) -> bytes:
        """Encrypt an RTP packet for this peer (each SSRC's packets in sequence order)."""
        return self._tx_session().protect(data)

    def protect_rtcp(self, data: bytes) -> bytes:
        return self._tx_session().protect_rtcp(data)

    def send_rtp(self, data: bytes) -> None:
        """Protect and send one RTP packet (synchronous)."""
        self._send(self._tx_session().protect(data))
        self.srtp_out += 1

    def send_rtcp(self, data: bytes) -> None:
        self._send(self._tx_session().protect_rtcp(data))
        self.srtp_out += 1

    def _rx_session(self) -> pylibsrtp.Session:
        if self._rx is None:
            raise WebRtcError("SRTP is not set up: DTLS is not connected")
        return self._rx

    def _tx_session(self) -> pylibsrtp.Session:
        if self._tx is None:
            raise WebRtcError("SRTP is not set up: DTLS is not connected")
        return self._tx


def serve_transport(
    endpoint: UdpEndpoint,
    transport_id: str,
    credentials: IceCredentials,
    certificate: RTCCertificate,
    *,
    now: float | None = None,
    on_rtp: Callable[[bytes], None] | None = None,
    on_rtcp: Callable[[bytes], None] | None = None,
    on_selected: Callable[[Addr], None] | None = None,
) -> DtlsSrtpTransport:
    """Register a server transport on the shared port: ICE credentials in the mux, DTLS
    and SRTP routed to a new :class:`DtlsSrtpTransport`. ``await transport.start(...)``
    once the peer's fingerprints are known; ``await transport.stop()`` removes it again."""
    endpoint.mux.add(transport_id, credentials.ufrag, credentials.pwd, now=now)
    transport = DtlsSrtpTransport(
        partial(endpoint.send, transport_id), certificate, on_rtp=on_rtp, on_rtcp=on_rtcp
    )
    endpoint.attach(
        transport_id,
        TransportHandler(
            on_dtls=transport.dtls_received,
            on_srtp=transport.srtp_received,
            on_selected=on_selected,
        ),
    )
    transport.on_close = partial(endpoint.detach, transport_id)
    return transport


def fingerprints_from_sdp_values(values: Iterable[str]) -> list[RTCDtlsFingerprint]:
    """``a=fingerprint`` values (``"sha-256 AB:CD:..."``) as aiortc fingerprints."""
    result = []
    for value in values:
        algorithm, _, digest = value.strip().partition(" ")
        if not digest:
            raise WebRtcError(f"bad a=fingerprint value {value!r}")
        result.append(RTCDtlsFingerprint(algorithm=algorithm.lower(), value=digest.strip()))
    return result
