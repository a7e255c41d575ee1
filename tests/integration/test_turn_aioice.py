"""aioice's TURN client (a second real client) and our own codec client against the asyncio
shell (turn.shell.TurnService) running in the test's event loop, over real 127.0.0.1 sockets:
UDP, TCP and TLS relaying to an echo peer, REST credentials that calls outlive, and refusals
(403, 486, 401) as they appear on the wire."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aioice.turn import create_turn_endpoint

from turn import stun
from turn.auth import mint_rest_credentials
from turn.client import TurnClient, error_code
from turn.config import TurnConfig
from turn.shell import TurnService

pytestmark = pytest.mark.timeout(30)

SECRET = "aioice-test-secret-0123456789"


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, addr))


def _self_signed(tmp: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256()))
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    return str(tmp / "cert.pem"), str(tmp / "key.pem")


@pytest.fixture
async def echo_peer() -> AsyncIterator[tuple[str, int]]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    yield transport.get_extra_info("sockname")[:2]
    transport.close()


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[TurnService]:
    cert, key = _self_signed(tmp_path)
    (tmp_path / "secret").write_text(SECRET)
    cfg = TurnConfig(listen=["127.0.0.1:0"], allow_peers=["127.0.0.1/32"], tls_cert=cert,
                     tls_key=key, tls_listen="127.0.0.1:0", secret_file=str(tmp_path / "secret"),
                     user_quota=3, realm="example.org")
    svc = TurnService(cfg, users={"alice": "pw"})
    await svc.start()
    yield svc
    await svc.close()


def _client_tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _round_trips(svc: TurnService, peer: tuple[str, int], transport: str,
                       server: tuple[str, int], count: int = 50, **kw: Any) -> None:
    turn, inbox = await create_turn_endpoint(Inbox, server, "alice", "pw",
                                             transport=transport, **kw)
    relayed = turn.get_extra_info("sockname")
    assert relayed[0] == "127.0.0.1"
    for i in range(count):
        payload = b"%d:" % i + b"x" * (i % 7)  # odd lengths exercise the stream padding
        turn.sendto(payload, peer)
        data, addr = await asyncio.wait_for(inbox.queue.get(), 2)
        assert (data, addr) == (payload, peer)
    turn.close()
    for _ in range(100):  # the allocation is deleted (Refresh with LIFETIME 0)
        if svc.server.allocations_active == 0:
            break
        await asyncio.sleep(0.01)
    assert svc.server.allocations_active == 0


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_aioice_relays_through_us(service: TurnService, echo_peer: tuple[str, int],
                                        transport: str) -> None:
    await _round_trips(service, echo_peer, transport, service.udp_addrs[0])
    stats = service.stats
    assert stats["packets_to_peer"] == 50 and stats["packets_from_peer"] == 50
    assert stats["requests"]["channel_bind"] == 1
    assert stats["allocations_deleted"] == {"refresh_zero": 1}


async def test_aioice_over_tls(service: TurnService, echo_peer: tuple[str, int]) -> None:
    assert service.tls_addr is not None
    await _round_trips(service, echo_peer, "tcp", service.tls_addr, ssl=_client_tls())
    assert service.stats["packets_from_peer"] == 50


async def test_our_client_over_every_transport(service: TurnService,
                                               echo_peer: tuple[str, int]) -> None:
    def run(transport: str, server: tuple[str, int]) -> None:
        with TurnClient(server, "alice", "pw", transport=transport) as c:
            assert error_code(c.allocate()) == 0
            assert error_code(c.channel_bind(0x4000, echo_peer)) == 0
            c.send_channel(0x4000, b"abcde")
            assert c.receive() == (0x4000, b"abcde")
            assert error_code(c.create_permission(echo_peer)) == 0
            c.send_indication(echo_peer, b"via send")
            assert c.receive() == (0x4000, b"via send")  # bound peer: answered on the channel
            assert error_code(c.refresh(0)) == 0

    assert service.tls_addr is not None
    for transport, server in (("udp", service.udp_addrs[0]), ("tcp", service.tcp_addrs[0]),
                              ("tls", service.tls_addr)):
        await asyncio.to_thread(run, transport, server)
    assert service.stats["packets_from_peer"] == 6


async def test_refusals_on_the_wire(service: TurnService) -> None:
    def run() -> None:
        server = service.udp_addrs[0]
        with TurnClient(server, "alice", "pw") as c:
            assert error_code(c.allocate()) == 0
            r = c.create_permission(("10.0.0.1", 53))
            assert r.get(stun.ERROR_CODE) == (403, "Forbidden IP")
            assert r.check_integrity(c.key or b"")
            assert error_code(c.channel_bind(0x4000, ("169.254.169.254", 80))) == 403
        with TurnClient(server, "alice", "wrong") as c:
            assert error_code(c.allocate()) == 401
        extra = [TurnClient(server, "alice", "pw") for _ in range(3)]
        codes = [error_code(c.allocate()) for c in extra]
        assert codes == [0, 0, 486]  # quota 3, one still held by the first client
        for c in extra:
            c.close()

    await asyncio.to_thread(run)
    stats = service.stats
    assert stats["denied"] == {"private": 1, "link_local": 1, "quota_user": 1}
    assert stats["auth_failures"] == 1


async def test_rest_credentials_outlive_their_expiry_on_the_wire(service: TurnService) -> None:
    expiry = int(time.time()) + 2
    username, password = mint_rest_credentials(SECRET, "participant", expiry - 1.0, 1.0)

    def run() -> None:
        server = service.udp_addrs[0]
        with TurnClient(server, username, password) as c:
            assert error_code(c.allocate()) == 0
            while time.time() <= expiry + 0.1:
                time.sleep(0.05)
            assert error_code(c.refresh(600)) == 0
            assert error_code(c.create_permission(("127.0.0.1", 9))) == 0
            with TurnClient(server, username, password) as late:
                assert error_code(late.allocate()) == 401

    await asyncio.to_thread(run)


async def test_ice_servers_mints_working_credentials(service: TurnService,
                                                     echo_peer: tuple[str, int]) -> None:
    [entry] = service.ice_servers("participant-7")
    port = service.udp_addrs[0][1]
    assert entry["urls"][:2] == [f"turn:127.0.0.1:{port}?transport=udp",
                                 f"turn:127.0.0.1:{port}?transport=tcp"]
    assert entry["urls"][2].startswith("turns:127.0.0.1:")
    assert entry["username"].endswith(":participant-7")
    turn, inbox = await create_turn_endpoint(Inbox, service.udp_addrs[0], entry["username"],
                                             entry["credential"])
    turn.sendto(b"ping", echo_peer)
    assert await asyncio.wait_for(inbox.queue.get(), 2) == (b"ping", echo_peer)
    turn.close()


async def test_stream_connections_are_capped(service: TurnService) -> None:
    service.max_streams = 3
    host, port = service.tcp_addrs[0]
    conns = [await asyncio.open_connection(host, port) for _ in range(4)]
    reader, _ = conns[3]
    assert await asyncio.wait_for(reader.read(), 2) == b""  # closed at once
    assert service.stats["stream_connections"] == 3
    assert service.stats["dropped"] == {"stream_limit": 1}
    for _, writer in conns:
        writer.close()
