"""WebRTC transports on one shared UDP port, against real peers over 127.0.0.1.

The peers are aiortc's ``RTCPeerConnection`` (a full ICE agent and DTLS client) and, for the
200-transport test, light clients: a STUN Binding request and an aiortc DTLS client per socket.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aioice.ice
import pytest
import uvloop
from aioice import stun
from aiortc import RTCCertificate, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from sfu.webrtc import sdp
from sfu.webrtc.dtls import (
    DtlsSrtpTransport,
    IceTransportAdapter,
    fingerprints_from_sdp_values,
    serve_transport,
)
from sfu.webrtc.errors import WebRtcError
from sfu.webrtc.ice import IceCredentials, IceLiteMux
from sfu.webrtc.udp import UdpEndpoint, udp_socket_drops

LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def certificate() -> RTCCertificate:
    return RTCCertificate.generateCertificate()


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice 0.13 has no flag for loopback: it gathers every address except 127.0.0.1.
    Make it gather 127.0.0.1 only, so no test datagram leaves the loopback interface."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [LOOPBACK])


@pytest.fixture
async def endpoint() -> AsyncIterator[UdpEndpoint]:
    ep = await UdpEndpoint.open(LOOPBACK, 0)
    yield ep
    ep.close()
    await ep.wait_closed()


def rtp_packet(seq: int, ssrc: int = 0x11223344, payload: bytes = b"\x01" * 20) -> bytes:
    return struct.pack("!BBHII", 0x80, 111, seq, seq * 960, ssrc) + payload


async def until(predicate: object, timeout_s: float = 5.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# -- an aiortc RTCPeerConnection as the client ----------------------------------------------


@dataclass
class AiortcSession:
    pc: RTCPeerConnection
    transport: DtlsSrtpTransport
    offer: sdp.Offer
    channel: RTCDataChannel
    rtp: list[bytes] = field(default_factory=list)
    rtcp: list[bytes] = field(default_factory=list)
    outside_task: list[bool] = field(default_factory=list)


async def connect_aiortc(
    endpoint: UdpEndpoint, certificate: RTCCertificate, transport_id: str = "p1"
) -> AiortcSession:
    """An aiortc client offers one audio track and a data channel; we answer as the SFU."""
    pc = RTCPeerConnection()
    pc.addTrack(AudioStreamTrack())
    channel = pc.createDataChannel("chat")
    await pc.setLocalDescription(await pc.createOffer())
    offer = sdp.parse_offer(pc.localDescription.sdp)
    credentials = IceCredentials.generate()
    transport = serve_transport(endpoint, transport_id, credentials, certificate)
    session = AiortcSession(pc, transport, offer, channel)

    def on_rtp(data: bytes) -> None:
        session.rtp.append(data)
        # Called from datagram_received, not from a task consuming a queue.
        session.outside_task.append(asyncio.current_task() is None)

    transport.on_rtp = on_rtp
    transport.on_rtcp = session.rtcp.append
    answer = sdp.build_answer(
        offer,
        credentials=credentials,
        fingerprints=transport.local_fingerprint_values,
        candidate=(LOOPBACK, endpoint.local_addr[1]),
    )
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await transport.start(fingerprints_from_sdp_values(offer.fingerprints), timeout_s=10)
    return session


@pytest.mark.timeout(30)
async def test_aiortc_peer_connects_and_its_rtp_reaches_the_sync_callback(
    loopback_only: None, endpoint: UdpEndpoint, certificate: RTCCertificate
) -> None:
    session = await connect_aiortc(endpoint, certificate)
    try:
        assert session.transport.state == "connected"
        assert session.pc.iceConnectionState == "completed"
        client_ssrc = int(re.findall(r"a=ssrc:(\d+)", session.pc.localDescription.sdp)[0])

        # aiortc sends Opus every 20 ms and an RTCP sender report within 1.5 s.
        await until(lambda: len(session.rtp) >= 10 and session.rtcp)

        for packet in session.rtp:
            version, payload_type = packet[0] >> 6, packet[1] & 0x7F
            (ssrc,) = struct.unpack_from("!I", packet, 8)
            assert (version, payload_type, ssrc) == (2, 96, client_ssrc)
        seqs = [struct.unpack_from("!H", p, 2)[0] for p in session.rtp]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert all(session.outside_task)
        assert session.rtcp[0][1] == 200  # a decrypted sender report
        assert session.transport.srtp_errors == 0
        assert endpoint.drops == {}
        assert endpoint.datagrams_in > len(session.rtp) and endpoint.datagrams_out > 0
    finally:
        await session.pc.close()
        await session.transport.stop()
    assert "p1" not in endpoint.mux


@pytest.mark.timeout(30)
async def test_data_channel_over_our_dtls_transport(
    loopback_only: None, endpoint: UdpEndpoint, certificate: RTCCertificate
) -> None:
    session = await connect_aiortc(endpoint, certificate)
    try:
        data_section = session.offer.media[1]
        sctp = await session.transport.start_sctp(remote_port=data_section.sctp_port or 5000)
        channels: asyncio.Queue = asyncio.Queue()
        sctp.on("datachannel", channels.put_nowait)
        server_channel = await asyncio.wait_for(channels.get(), 10)
        assert server_channel.label == "chat"

        received: asyncio.Queue = asyncio.Queue()
        def on_message(message: str) -> None:
            received.put_nowait(message)
            server_channel.send(f"re: {message}")

        server_channel.on("message", on_message)
        client = session.channel
        replies: asyncio.Queue = asyncio.Queue()
        client.on("message", replies.put_nowait)
        await until(lambda: client.readyState == "open")

        client.send("hello sfu")
        assert await asyncio.wait_for(received.get(), 5) == "hello sfu"
        assert await asyncio.wait_for(replies.get(), 5) == "re: hello sfu"
        await sctp.stop()
    finally:
        await session.pc.close()
        await session.transport.stop()


@pytest.mark.timeout(30)
async def test_unknown_tuples_and_malformed_datagrams_are_counted_and_dropped(
    loopback_only: None, endpoint: UdpEndpoint, certificate: RTCCertificate
) -> None:
    session = await connect_aiortc(endpoint, certificate)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind((LOOPBACK, 0))
    stranger.setblocking(False)
    try:
        await until(lambda: len(session.rtp) >= 2)
        server = (LOOPBACK, endpoint.local_addr[1])
        ufrag = endpoint.mux.local_ufrags("p1")[0]
        bad_check = stun.Message(
            stun.Method.BINDING, stun.Class.REQUEST,
            attributes={"USERNAME": f"{ufrag}:x", "ICE-CONTROLLING": 1},
        )
        bad_check.add_message_integrity(b"not-the-password-at-all")
        datagrams = {
            "unknown_tuple": [rtp_packet(1), bytes([22, 0xFE, 0xFD]) + bytes(40)],
            "malformed_stun": [b"\x00\x01\x00\x08\x21\x12\xa4\x42" + bytes(12)],
            "bad_integrity": [bytes(bad_check)],
            "unknown_first_byte": [b"\xff" * 50],
            "empty": [b""],
        }
        before = dict(endpoint.drops)
        rtp_before = len(session.rtp)
        for payloads in datagrams.values():
            for payload in payloads:
                stranger.sendto(payload, server)
        await until(lambda: sum(endpoint.drops.values()) - sum(before.values()) >= 6)

        assert {k: endpoint.drops.get(k, 0) - before.get(k, 0) for k in datagrams} == {
            k: len(v) for k, v in datagrams.items()
        }
        await asyncio.sleep(0.2)
        with pytest.raises(BlockingIOError):  # nothing unauthenticated is answered
            stranger.recvfrom(2048)
        # The real session goes on.
        await until(lambda: len(session.rtp) >= rtp_before + 5)
        assert session.transport.srtp_errors == 0
    finally:
        stranger.close()
        await session.pc.close()
        await session.transport.stop()


@pytest.mark.timeout(30)
def test_aiortc_peer_under_uvloop(loopback_only: None, certificate: RTCCertificate) -> None:
    """The shell on uvloop (no transport.max_size there), as the daemon runs it."""

    async def run() -> int:
        endpoint = await UdpEndpoint.open(LOOPBACK, 0)
        session = await connect_aiortc(endpoint, certificate)
        try:
            await until(lambda: len(session.rtp) >= 5)
            return len(session.rtp)
        finally:
            await session.pc.close()
            await session.transport.stop()
            endpoint.close()

    assert uvloop.run(asyncio.wait_for(run(), 20)) >= 5


# -- light clients: one socket, one STUN check, one aiortc DTLS client each -------------------


class LightClient(asyncio.DatagramProtocol):
    """A minimal WebRTC client: ICE by hand (one check with USE-CANDIDATE), aiortc DTLS."""

    def __init__(self, certificate: RTCCertificate) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.server: tuple[str, int] | None = None
        self.stun_responses: asyncio.Queue[bytes] = asyncio.Queue()
        self.rtp: list[bytes] = []
        self.dtls = DtlsSrtpTransport(self._send, certificate, role="client", on_rtp=self.rtp.append)

    @classmethod
    async def open(cls, certificate: RTCCertificate) -> LightClient:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_datagram_endpoint(
            lambda: cls(certificate), local_addr=(LOOPBACK, 0)
        )
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data[0] < 4:
            self.stun_responses.put_nowait(data)
        elif 19 < data[0] < 64:
            self.dtls.dtls_received(data)
        elif 127 < data[0] < 192:
            self.dtls.srtp_received(data)

    def _send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data, self.server)

    def fileno(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("socket").fileno()

    async def check(self, server: tuple[str, int], credentials: IceCredentials) -> stun.Message:
        self.server = server
        request = stun.Message(
            stun.Method.BINDING, stun.Class.REQUEST,
            attributes={
                "USERNAME": f"{credentials.ufrag}:lite",
                "PRIORITY": 1853824767,
                "ICE-CONTROLLING": 42,
                "USE-CANDIDATE": None,
            },
        )
        request.add_message_integrity(credentials.pwd.encode())
        self._send(bytes(request))
        response = stun.parse_message(await asyncio.wait_for(self.stun_responses.get(), 5))
        assert response.transaction_id == request.transaction_id
        assert response.check_message_integrity(credentials.pwd.encode())
        return response

    def close(self) -> None:
        self.dtls.ice.close()
        if self.transport is not None:
            self.transport.close()


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.timeout(60)
async def test_200_transports_share_one_port_without_an_fd_each(
    certificate: RTCCertificate,
) -> None:
    n = 200
    fds_before = open_fds()
    endpoint = await UdpEndpoint.open(LOOPBACK, 0)
    server = (LOOPBACK, endpoint.local_addr[1])
    client_certificate = RTCCertificate.generateCertificate()
    received: dict[str, list[bytes]] = {f"t{i}": [] for i in range(n)}
    creds = [IceCredentials.generate() for _ in range(n)]
    transports = [
        serve_transport(endpoint, f"t{i}", creds[i], certificate, on_rtp=received[f"t{i}"].append)
        for i in range(n)
    ]
    clients = [await LightClient.open(client_certificate) for _ in range(n)]
    client_fds = {str(c.fileno()) for c in clients}
    started = time.monotonic()
    try:
        for client, credentials in zip(clients, creds, strict=True):
            response = await client.check(server, credentials)
            assert response.attributes["XOR-MAPPED-ADDRESS"] == client.transport.get_extra_info(  # type: ignore[union-attr]
                "sockname"
            )
        client_fps = fingerprints_from_sdp_values(
            f"{fp.algorithm} {fp.value}" for fp in client_certificate.getFingerprints()
        )
        server_fps = transports[0].local_fingerprints
        await asyncio.gather(
            *(t.start(client_fps, timeout_s=30) for t in transports),
            *(c.dtls.start(server_fps, timeout_s=30) for c in clients),
        )
        handshakes_s = time.monotonic() - started

        for i, client in enumerate(clients):
            client.dtls.send_rtp(rtp_packet(1, ssrc=i))
            transports[i].send_rtp(rtp_packet(7, ssrc=1000 + i))
        await until(lambda: all(received.values()) and all(c.rtp for c in clients), 10)

        for i in range(n):
            assert received[f"t{i}"] == [rtp_packet(1, ssrc=i)]
            assert clients[i].rtp == [rtp_packet(7, ssrc=1000 + i)]
        assert len(endpoint.mux) == n
        assert endpoint.drops == {}
        server_fds = open_fds() - client_fds - fds_before
        assert len(server_fds) < 50, server_fds
        print(f"\n{n} transports: ICE + DTLS in {handshakes_s:.2f} s, server fds +{len(server_fds)}")
    finally:
        for client in clients:
            client.close()
        await asyncio.gather(*(t.stop() for t in transports))
        endpoint.close()
        await endpoint.wait_closed()
    assert len(endpoint.mux) == 0


@pytest.mark.timeout(30)
async def test_dtls_before_start_is_buffered(
    endpoint: UdpEndpoint, certificate: RTCCertificate
) -> None:
    """A ClientHello can arrive before the server has the peer's fingerprint (offer race)."""
    credentials = IceCredentials.generate()
    transport = serve_transport(endpoint, "early", credentials, certificate)
    client = await LightClient.open(certificate)
    try:
        await client.check((LOOPBACK, endpoint.local_addr[1]), credentials)
        client_start = asyncio.ensure_future(
            client.dtls.start(transport.local_fingerprints, timeout_s=10)
        )
        await until(lambda: len(transport.ice._queue) > 0)  # the ClientHello waits
        await asyncio.sleep(0.2)
        await transport.start(client.dtls.local_fingerprints, timeout_s=10)
        await client_start
        assert transport.state == client.dtls.state == "connected"
    finally:
        client.close()
        await transport.stop()


@pytest.mark.timeout(30)
async def test_wrong_peer_fingerprint_fails_the_handshake(
    endpoint: UdpEndpoint, certificate: RTCCertificate
) -> None:
    credentials = IceCredentials.generate()
    transport = serve_transport(endpoint, "mitm", credentials, certificate)
    client = await LightClient.open(RTCCertificate.generateCertificate())
    try:
        await client.check((LOOPBACK, endpoint.local_addr[1]), credentials)
        client_start = asyncio.ensure_future(
            client.dtls.start(transport.local_fingerprints, timeout_s=10)
        )
        signalled = RTCCertificate.generateCertificate().getFingerprints()  # not the client's
        with pytest.raises(WebRtcError, match="failed"):
            await transport.start(signalled, timeout_s=10)
        assert "mitm" not in endpoint.mux
        with pytest.raises(WebRtcError):
            transport.protect_rtp(rtp_packet(1))
        client_start.cancel()
    finally:
        client.close()


@pytest.mark.timeout(30)
async def test_consent_expiry_is_reported_by_the_shell() -> None:
    now = [0.0]
    expired: list[str] = []
    endpoint = await UdpEndpoint.open(
        LOOPBACK, 0, mux=IceLiteMux(consent_timeout_s=5.0), clock=lambda: now[0],
        tick_s=0.01, on_consent_expired=expired.append,
    )
    try:
        endpoint.mux.add("quiet", "quie", "quietpasswordquietpassw", now=0.0)
        await asyncio.sleep(0.05)
        assert expired == []
        now[0] = 5.0
        await until(lambda: expired == ["quiet"], 2)
    finally:
        endpoint.close()


@pytest.mark.timeout(30)
def test_kernel_receive_buffer_drops_are_read_from_proc() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        receiver.bind((LOOPBACK, 0))
        assert udp_socket_drops(receiver) == 0
        for _ in range(500):  # nobody reads: the small buffer overflows
            sender.sendto(b"x" * 1000, receiver.getsockname())
        drops = udp_socket_drops(receiver)
        assert 0 < drops < 500
    finally:
        receiver.close()
        sender.close()


# -- the ICE adapter under RTCDtlsTransport ---------------------------------------------------


@pytest.mark.timeout(10)
async def test_adapter_recv_survives_cancellation_and_raises_when_closed() -> None:
    sent: list[bytes] = []
    adapter = IceTransportAdapter(sent.append, max_queued=2)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(adapter._recv(), 0.01)
    adapter.feed(b"\x16one")
    adapter.feed(b"\x16two")
    adapter.feed(b"\x16three")  # over the bound: dropped, counted
    assert adapter.dropped == 1
    assert await adapter._recv() == b"\x16one"
    await adapter._send(b"\x16out")
    assert sent == [b"\x16out"]

    waiter = asyncio.ensure_future(adapter._recv())
    assert await waiter == b"\x16two"
    waiter = asyncio.ensure_future(adapter._recv())
    await asyncio.sleep(0)
    adapter.close()
    with pytest.raises(ConnectionError):
        await waiter
    with pytest.raises(ConnectionError):
        await adapter._send(b"late")
