"""A harness that drives the TurnServer core with our own codec as the client (no sockets, no
clock), shared by the other test_turn_* unit modules, and the tests of the harness itself."""

from __future__ import annotations

import os
import random
from typing import Any

from turn import stun
from turn.actions import TO_CLIENT, TO_PEER, Action
from turn.auth import Credentials
from turn.client import error_code
from turn.server import TurnServer
from turn.stun import Addr, Message, long_term_key

REALM = "example.org"
NOW = 1_700_000_000.0  # Unix-like, so REST expiry times compare with it (wall_offset_s = 0)
SECRET = "rest-secret-for-tests-0123456789"
RELAY_V4 = "192.0.2.1"
RELAY_V6 = "2001:db8::1"
PUBLIC_PEER = ("203.0.113.50", 5000)

__all__ = ["NOW", "PUBLIC_PEER", "REALM", "RELAY_V4", "RELAY_V6", "SECRET", "Client",
           "FakeRelays", "code", "make_server"]

code = error_code


class FakeRelays:
    """RelaySockets that records what the core opened; ports in ``busy`` fail to bind."""

    def __init__(self) -> None:
        self.opened: dict[int, Addr] = {}
        self.busy: set[int] = set()

    def open(self, relay_id: int, ip: str, port: int) -> bool:
        assert relay_id not in self.opened
        if port in self.busy:
            return False
        self.opened[relay_id] = (ip, port)
        return True

    def close(self, relay_id: int) -> None:
        del self.opened[relay_id]  # a double close is a bug: KeyError


def make_server(**kw: Any) -> TurnServer:
    kw.setdefault("rng", random.Random(5))
    kw.setdefault("relay_ips", (RELAY_V4,))
    relays = kw.pop("relays", None) or FakeRelays()
    users = kw.pop("users", {"alice": "pw", "bob": "pw2"})
    secrets = kw.pop("secrets", [SECRET])
    return TurnServer(Credentials(REALM, users, secrets), relays, **kw)


def relays_of(srv: TurnServer) -> FakeRelays:
    sockets = srv.ports.sockets
    assert isinstance(sockets, FakeRelays)
    return sockets


class Client:
    """A TURN client on one 5-tuple that talks to the core directly."""

    def __init__(self, srv: TurnServer, addr: Addr = ("198.51.100.1", 40000), *,
                 transport: str = "udp", username: str = "alice", password: str = "pw") -> None:
        self.srv = srv
        self.addr = addr
        self.transport = transport
        self.username = username
        self.key = long_term_key(username, REALM, password)
        self.nonce: str | None = None
        self.relayed: Addr | None = None

    def send(self, data: bytes, now: float = NOW) -> list[Action]:
        return self.srv.receive(data, self.addr, self.transport, now)

    def ask(self, msg: Message, now: float = NOW, *, sign: bool = True) -> Message:
        """Send one request; exactly one response to this client must come back."""
        if sign and self.nonce is not None:
            msg.add(stun.USERNAME, self.username).add(stun.REALM, REALM)
            msg.add(stun.NONCE, self.nonce)
            raw = msg.encode(self.key, fingerprint=True)
        else:
            raw = msg.encode(fingerprint=True)
        out = self.send(raw, now)
        assert len(out) == 1, out
        kind, route, addr, data = out[0]
        assert (kind, route, addr) == (TO_CLIENT, self.transport, self.addr)
        response = Message.parse(data)
        assert response.transaction_id == msg.transaction_id
        assert response.fingerprint
        return response

    def request(self, method: int, *attrs: tuple[int, Any], now: float = NOW) -> Message:
        """A request with the 401 dance done first when no nonce is known yet."""
        if self.nonce is None:
            challenge = self.ask(Message(method, stun.REQUEST, os.urandom(12), list(attrs)), now)
            assert code(challenge) == 401, challenge
            assert challenge.integrity is None
            self.nonce = challenge.get(stun.NONCE)
            assert challenge.get(stun.REALM) == REALM
        response = self.ask(Message(method, stun.REQUEST, os.urandom(12), list(attrs)), now)
        if response.cls == stun.SUCCESS or code(response) not in (400, 401, 438):
            assert response.check_integrity(self.key), response
        return response

    def allocate(self, *attrs: tuple[int, Any], now: float = NOW,
                 transport_attr: bool = True) -> Message:
        extra = [(stun.REQUESTED_TRANSPORT, stun.TRANSPORT_UDP)] if transport_attr else []
        response = self.request(stun.ALLOCATE, *extra, *attrs, now=now)
        if response.cls == stun.SUCCESS:
            self.relayed = response.get(stun.XOR_RELAYED_ADDRESS)
        return response

    def permit(self, *peers: Addr, now: float = NOW) -> Message:
        return self.request(stun.CREATE_PERMISSION,
                            *[(stun.XOR_PEER_ADDRESS, p) for p in peers], now=now)

    def bind(self, number: int, peer: Addr, now: float = NOW) -> Message:
        return self.request(stun.CHANNEL_BIND, (stun.CHANNEL_NUMBER, number),
                            (stun.XOR_PEER_ADDRESS, peer), now=now)

    def refresh(self, lifetime: int | None = None, now: float = NOW) -> Message:
        attrs = [(stun.LIFETIME, lifetime)] if lifetime is not None else []
        return self.request(stun.REFRESH, *attrs, now=now)

    def send_indication(self, peer: Addr, data: bytes, now: float = NOW) -> list[Action]:
        msg = Message(stun.SEND, stun.INDICATION, os.urandom(12))
        msg.add(stun.XOR_PEER_ADDRESS, peer).add(stun.DATA_ATTR, data)
        return self.send(msg.encode(), now)

    @property
    def relay_id(self) -> int:
        alloc = self.srv.allocation_for(self.transport, self.addr)
        assert alloc is not None
        return alloc.id


def to_peer(out: list[Action]) -> list[tuple[Addr, bytes]]:
    assert all(kind == TO_PEER for kind, *_ in out), out
    return [(addr, data) for _, _, addr, data in out]


def test_fake_relays_refuse_busy_ports_and_double_close() -> None:
    relays = FakeRelays()
    relays.busy.add(50000)
    assert not relays.open(1, RELAY_V4, 50000)
    assert relays.open(1, RELAY_V4, 50001)
    relays.close(1)
    try:
        relays.close(1)
    except KeyError:
        pass
    else:  # pragma: no cover
        raise AssertionError("double close went unnoticed")


def test_client_does_the_401_dance_once() -> None:
    srv = make_server()
    c = Client(srv)
    assert code(c.allocate()) == 0
    nonce = c.nonce
    assert code(c.refresh()) == 0
    assert c.nonce == nonce
