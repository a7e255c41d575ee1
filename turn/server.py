"""The TURN server core (RFC 8656): bytes and ``now`` in, decisions out. No I/O, no clock.

* :meth:`TurnServer.receive` takes what a client sent on a listener and returns actions.
* :meth:`TurnServer.relay_received` takes what a peer sent to an allocation's relay socket.
* :meth:`TurnServer.handle_timeout` expires allocations, permissions, channel bindings and
  port reservations; :meth:`TurnServer.get_timer` says when it next needs to run.
* :meth:`TurnServer.connection_lost` ends the allocation of a TCP/TLS connection.

Actions are plain tuples (no per-packet objects): ``(TO_CLIENT, transport, client_addr, data)``
or ``(TO_PEER, relay_id, peer_addr, data)``, where ``relay_id`` is the allocation id the shell
gave to :meth:`RelaySockets.open`. Relay sockets are opened and closed through the injected
:class:`~turn.ports.RelaySockets`, synchronously, so an Allocate is only answered once its
relayed address is bound.

``transport`` names the listener a message arrived on: ``"udp"``, ``"tcp"`` or ``"tls"``,
optionally suffixed (``"udp/1"``) when the shell has several listeners of one kind. With the
client address it is the allocation's 5-tuple.

Requests are dispatched from a table by (class, method) to the stateless handlers in
:mod:`turn.handlers`; a handler raises :class:`~turn.errors.TurnError` and the dispatcher turns
it into the error response. No input makes :meth:`receive` raise.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from turn import stun
from turn.actions import TO_CLIENT, TO_PEER, Action
from turn.allocation import (
    DEFAULT_LIFETIME_S,
    MAX_LIFETIME_S,
    RESERVATION_LIFETIME_S,
    Allocation,
    Reservation,
)
from turn.auth import Credentials, Nonces, UserKey
from turn.channeldata import LEGACY_MAX_CHANNEL, MAX_CHANNEL
from turn.errors import TurnError
from turn.handlers import HANDLERS
from turn.policy import PeerPolicy
from turn.ports import PortPool, RelaySockets
from turn.stats import TurnStats
from turn.stun import Addr, Message

__all__ = ["TO_CLIENT", "TO_PEER", "Action", "Request", "TurnServer"]

_ALLOCATION = 0
_RESERVATION = 1
_PAD = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")
_DATA_INDICATION_TYPE = stun.message_type(stun.DATA, stun.INDICATION).to_bytes(2, "big")


class Request:
    """One STUN request or indication being handled."""

    __slots__ = ("client", "key", "msg", "now", "transport", "user")

    def __init__(self, msg: Message, transport: str, client: Addr, now: float) -> None:
        self.msg = msg
        self.transport = transport
        self.client = client
        self.now = now
        # Set once MESSAGE-INTEGRITY is verified: responses are then signed with this key.
        self.key: bytes | None = None
        self.user: UserKey | None = None


class TurnServer:
    """Sans-I/O TURN server. See the module docstring for the contract."""

    def __init__(
        self,
        credentials: Credentials,
        relays: RelaySockets,
        *,
        relay_ips: Sequence[str] = ("127.0.0.1",),
        advertised_ips: Mapping[str, str] | None = None,
        allow_peers: Iterable[str] = (),
        deny_peers: Iterable[str] = (),
        always_allow: Iterable[tuple[str, int] | str] = (),
        min_port: int = 49152,
        max_port: int = 65535,
        user_quota: int = 12,
        total_quota: int = 1000,
        bandwidth_bps: int = 0,
        max_lifetime_s: int = MAX_LIFETIME_S,
        nonce_lifetime_s: float = 600.0,
        legacy_channels: bool = False,
        software: str = "",
        rng: random.Random | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.credentials = credentials
        self.realm = credentials.realm
        self.rng = rng if rng is not None else random.SystemRandom()
        # Transaction ids of Data indications only need to be unpredictable enough to salt the
        # XOR of the peer address, not secret: a fast generator seeded from ``rng``.
        self._fast_rng = random.Random(self.rng.getrandbits(64))
        self.nonces = Nonces(self.rng.randbytes(32), nonce_lifetime_s)
        self.policy = PeerPolicy(allow_peers, deny_peers, always_allow)
        self.ports = PortPool(relays, min_port, max_port, self.rng)
        self.relay_ips: dict[int, str] = {}
        for ip in relay_ips:
            family = stun.FAMILY_IPV6 if ":" in ip else stun.FAMILY_IPV4
            self.relay_ips.setdefault(family, ip)
        self.advertised_ips = dict(advertised_ips or {})
        self.user_quota = user_quota
        self.total_quota = total_quota
        self.bandwidth_bps = bandwidth_bps
        self.max_lifetime_s = max(max_lifetime_s, DEFAULT_LIFETIME_S)
        self.max_channel = LEGACY_MAX_CHANNEL if legacy_channels else MAX_CHANNEL
        self.software = software
        self.on_event = on_event
        # Unix time = now + wall_offset_s; REST usernames carry Unix expiry times. The shell
        # sets it (time.time() - loop.time()); tests leave 0 and pass Unix times as ``now``.
        self.wall_offset_s = 0.0
        self.stats = TurnStats()
        self._allocs: dict[int, Allocation] = {}
        self._by_tuple: dict[tuple[str, Addr], Allocation] = {}
        self._per_identity: dict[str, int] = {}
        self._reservations: dict[bytes, Reservation] = {}
        self._bound: dict[int, Addr] = {}  # relay id -> bound socket address
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._next_id = 1
        self._xpa_cache: dict[Addr, bytes] = {}

    # --- public surface --------------------------------------------------------------------

    @property
    def allocations_active(self) -> int:
        return len(self._allocs)

    def snapshot(self) -> dict[str, Any]:
        """Counters for the metrics module (plain ints and dicts of ints)."""
        return self.stats.snapshot(len(self._allocs), len(self._reservations))

    def allocation(self, relay_id: int) -> Allocation | None:
        return self._allocs.get(relay_id)

    def allocation_for(self, transport: str, client: Addr) -> Allocation | None:
        return self._by_tuple.get((transport, client))

    def receive(self, data: bytes, client: Addr, transport: str, now: float) -> list[Action]:
        """Handle one datagram (UDP) or one frame (TCP/TLS) from a client."""
        if not data:
            self.stats.dropped["malformed"] += 1
            return []
        first = data[0]
        if 0x40 <= first <= 0x7F:
            return self._channel_data(data, client, transport, now)
        if first < 0x40:
            return self._stun(data, client, transport, now)
        self.stats.dropped["malformed"] += 1
        return []

    def relay_received(self, relay_id: int, data: bytes, peer: Addr, now: float) -> list[Action]:
        """Handle a datagram a peer sent to relay socket ``relay_id``; ``peer`` is (ip, port)."""
        alloc = self._allocs.get(relay_id)
        if alloc is None:
            self.stats.dropped["no_allocation"] += 1
            return []
        ip = peer[0]
        expires_at = alloc.permissions.get(ip)
        if expires_at is None or expires_at <= now:
            self.stats.denied["no_permission"] += 1
            return []
        if ip in self.policy.port_restricted and not self.policy.port_allowed(ip, peer[1]):
            self.stats.denied["port_restricted"] += 1
            return []
        n = len(data)
        bucket = alloc.bucket
        if bucket is not None and not bucket.take(n, now):
            self.stats.denied["bandwidth"] += 1
            return []
        binding = alloc.peer_channels.get(peer)
        if binding is not None and binding.expires_at > now and n <= 0xFFFF:
            out = ((binding.number << 16) | n).to_bytes(4, "big") + data
            if alloc.stream:
                out += _PAD[n & 3]
        else:
            out = self._data_indication(alloc, peer, data)
            if not out:
                return []
        st = self.stats
        st.packets_from_peer += 1
        st.bytes_from_peer += n
        return [(TO_CLIENT, alloc.transport, alloc.client, out)]

    def connection_lost(self, transport: str, client: Addr, now: float) -> None:
        """A TCP/TLS connection closed: its allocation goes with it (RFC 8656 §7.1)."""
        alloc = self._by_tuple.get((transport, client))
        if alloc is not None:
            self.delete_allocation(alloc, "connection_closed")

    def get_timer(self) -> float | None:
        """When :meth:`handle_timeout` should next run (None: nothing pending)."""
        return self._heap[0][0] if self._heap else None

    def handle_timeout(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            t, _, kind, key = heapq.heappop(heap)
            if kind == _ALLOCATION:
                alloc = self._allocs.get(key)
                if alloc is None or alloc.scheduled_at != t:
                    continue
                alloc.scheduled_at = float("inf")
                if alloc.expire(now):
                    self.delete_allocation(alloc, "expired")
                else:
                    self.schedule(alloc, alloc.next_expiry())
            else:
                res = self._reservations.get(key)
                if res is not None and res.expires_at <= now:
                    del self._reservations[key]
                    self._release(res.relay_id)

    def close(self) -> None:
        """Delete every allocation and reservation (shutdown)."""
        for alloc in list(self._allocs.values()):
            self.delete_allocation(alloc, "shutdown")
        for res in list(self._reservations.values()):
            self._release(res.relay_id)
        self._reservations.clear()
        self._heap.clear()

    # --- STUN dispatch --------------------------------------------------------------------

    def _stun(self, data: bytes, client: Addr, transport: str, now: float) -> list[Action]:
        try:
            msg = Message.parse(data)
        except ValueError:
            self.stats.dropped["malformed"] += 1
            return []
        req = Request(msg, transport, client, now)
        handler = HANDLERS.get((msg.cls, msg.method))
        if msg.cls == stun.REQUEST:
            self.stats.requests[stun.method_name(msg.method)] += 1
            if handler is None:
                return [self.error_response(req, TurnError(400, "unknown method"))]
            try:
                return handler(self, req)
            except TurnError as exc:
                return [self.error_response(req, exc)]
        if msg.cls == stun.INDICATION and handler is not None:
            self.stats.requests[stun.method_name(msg.method)] += 1
            try:
                return handler(self, req)
            except TurnError:
                return []  # indications are never answered
        self.stats.dropped["unexpected_class"] += 1
        return []

    def success_response(self, req: Request, attributes: list[tuple[int, Any]]) -> Action:
        msg = Message(req.msg.method, stun.SUCCESS, req.msg.transaction_id, attributes)
        if self.software:
            msg.add(stun.SOFTWARE, self.software)
        data = msg.encode(req.key, fingerprint=req.msg.fingerprint)
        return (TO_CLIENT, req.transport, req.client, data)

    def error_response(self, req: Request, exc: TurnError) -> Action:
        code = exc.code
        self.stats.errors[code] += 1
        msg = Message(req.msg.method, stun.ERROR, req.msg.transaction_id)
        msg.add(stun.ERROR_CODE, (code, exc.reason))
        key = req.key
        if code in (401, 438):
            msg.add(stun.REALM, self.realm)
            msg.add(stun.NONCE, self.nonces.issue(req.client[0], req.now))
            key = None
        elif code == 420:
            msg.add(stun.UNKNOWN_ATTRIBUTES, req.msg.unknown_required)
        if self.software:
            msg.add(stun.SOFTWARE, self.software)
        data = msg.encode(key, fingerprint=req.msg.fingerprint)
        return (TO_CLIENT, req.transport, req.client, data)

    def authenticate(self, req: Request) -> Allocation | None:
        """Long-term credential checks (RFC 8489 §9.2.4); returns the 5-tuple's allocation.

        A request on an existing allocation is checked against the key that created it, so
        it keeps working after a REST credential expired; a different username gets 441.
        """
        msg = req.msg
        alloc = self._by_tuple.get((req.transport, req.client))
        if msg.integrity is None:
            raise TurnError(401, "credentials required")
        username = msg.get(stun.USERNAME)
        realm = msg.get(stun.REALM)
        nonce = msg.get(stun.NONCE)
        if username is None or realm is None or nonce is None:
            raise TurnError(400, "MESSAGE-INTEGRITY without USERNAME, REALM and NONCE")
        if alloc is not None and username == alloc.username:
            candidates = [UserKey(alloc.key, alloc.identity, None)]
        else:
            candidates = self.credentials.keys_for(username)
        user = next((k for k in candidates if msg.check_integrity(k.key)), None)
        if user is None:
            self.stats.auth_failures += 1
            raise TurnError(401, "wrong credentials")
        if not self.nonces.is_valid(nonce, req.client[0], req.now):
            self.stats.stale_nonces += 1
            raise TurnError(438)
        req.key = user.key
        req.user = user
        if alloc is not None and username != alloc.username:
            raise TurnError(441, "the allocation belongs to another user")
        if msg.unknown_required:
            raise TurnError(420)
        return alloc

    # --- allocations ------------------------------------------------------------------------

    def wall_time(self, now: float) -> float:
        return now + self.wall_offset_s

    def new_id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid

    def check_quota(self, identity: str) -> None:
        if len(self._allocs) >= self.total_quota:
            self.stats.denied["quota_total"] += 1
            raise TurnError(486, "server allocation quota reached")
        if self._per_identity.get(identity, 0) >= self.user_quota:
            self.stats.denied["quota_user"] += 1
            raise TurnError(486, "user allocation quota reached")

    def open_relay(self, family: int, even: bool | None, now: float
                   ) -> tuple[int, Addr, Addr, Reservation | None]:
        """Bind a relay socket: ``(relay_id, bound, advertised, reservation)``; 440 or 508."""
        ip = self.relay_ips.get(family)
        if ip is None:
            raise TurnError(440, "no relay address of that family")
        relay_id = self.new_id()
        reservation = None
        if even is True:
            reserve_id = self.new_id()
            port = self.ports.open_pair(relay_id, reserve_id, ip)
            if port is not None:
                token = self.rng.randbytes(8)
                reservation = Reservation(token, reserve_id, (ip, port + 1),
                                          (self.advertised_ips.get(ip, ip), port + 1), family,
                                          now + RESERVATION_LIFETIME_S)
                self._bound[reserve_id] = (ip, port + 1)
                self._reservations[token] = reservation
                self._push(reservation.expires_at, _RESERVATION, token)
        else:
            port = self.ports.open(relay_id, ip, even=even is False)
        if port is None:
            raise TurnError(508, "no relay port available")
        self._bound[relay_id] = (ip, port)
        return relay_id, (ip, port), (self.advertised_ips.get(ip, ip), port), reservation

    def take_reservation(self, token: bytes, now: float) -> Reservation:
        res = self._reservations.pop(token, None)
        if res is None or res.expires_at <= now:
            if res is not None:
                self._release(res.relay_id)
            raise TurnError(508, "unknown or expired RESERVATION-TOKEN")
        return res

    def add_allocation(self, alloc: Allocation) -> None:
        self._allocs[alloc.id] = alloc
        self._by_tuple[(alloc.transport, alloc.client)] = alloc
        self._per_identity[alloc.identity] = self._per_identity.get(alloc.identity, 0) + 1
        self.stats.allocations_created += 1
        self.schedule(alloc, alloc.expires_at)
        if self.on_event is not None:
            self.on_event("allocation_created", {
                "allocation": alloc.id, "transport": alloc.transport,
                "client": f"{alloc.client[0]}:{alloc.client[1]}",
                "relay": f"{alloc.relay[0]}:{alloc.relay[1]}", "user": alloc.identity})

    def delete_allocation(self, alloc: Allocation, reason: str) -> None:
        if self._allocs.pop(alloc.id, None) is None:
            return
        self._by_tuple.pop((alloc.transport, alloc.client), None)
        left = self._per_identity.get(alloc.identity, 1) - 1
        if left > 0:
            self._per_identity[alloc.identity] = left
        else:
            self._per_identity.pop(alloc.identity, None)
        self._release(alloc.id)
        self.stats.allocations_deleted[reason] += 1
        if self.on_event is not None:
            self.on_event("allocation_deleted", {"allocation": alloc.id, "reason": reason,
                                                 "user": alloc.identity})

    def _release(self, relay_id: int) -> None:
        bound = self._bound.pop(relay_id, None)
        if bound is not None:
            self.ports.release(relay_id, bound[0], bound[1])

    def schedule(self, alloc: Allocation, t: float) -> None:
        """Make sure the allocation's timer runs no later than ``t``."""
        if t < alloc.scheduled_at:
            alloc.scheduled_at = t
            self._push(t, _ALLOCATION, alloc.id)

    def _push(self, t: float, kind: int, key: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, key))

    # --- data path --------------------------------------------------------------------------

    def _channel_data(self, data: bytes, client: Addr, transport: str, now: float
                      ) -> list[Action]:
        alloc = self._by_tuple.get((transport, client))
        if alloc is None:
            self.stats.dropped["no_allocation"] += 1
            return []
        n = len(data)
        if n < 4:
            self.stats.dropped["malformed"] += 1
            return []
        length = (data[2] << 8) | data[3]
        if length + 4 > n:
            self.stats.dropped["malformed"] += 1
            return []
        binding = alloc.channels.get((data[0] << 8) | data[1])
        if binding is None or binding.expires_at <= now:
            self.stats.denied["no_binding"] += 1
            return []
        peer = binding.peer
        expires_at = alloc.permissions.get(peer[0])
        if expires_at is None or expires_at <= now:
            self.stats.denied["no_permission"] += 1
            return []
        bucket = alloc.bucket
        if bucket is not None and not bucket.take(length, now):
            self.stats.denied["bandwidth"] += 1
            return []
        st = self.stats
        st.packets_to_peer += 1
        st.bytes_to_peer += length
        return [(TO_PEER, alloc.id, peer, data[4:4 + length])]

    def relay_to_peer(self, alloc: Allocation, peer: Addr, data: bytes, now: float
                      ) -> list[Action]:
        """The Send-indication path: permission, port restriction, bandwidth."""
        if not alloc.permitted(peer[0], now):
            reason = self.policy.denial(peer[0], peer[1])
            self.stats.denied[reason or "no_permission"] += 1
            return []
        if not self.policy.port_allowed(peer[0], peer[1]):
            self.stats.denied["port_restricted"] += 1
            return []
        bucket = alloc.bucket
        if bucket is not None and not bucket.take(len(data), now):
            self.stats.denied["bandwidth"] += 1
            return []
        self.stats.packets_to_peer += 1
        self.stats.bytes_to_peer += len(data)
        return [(TO_PEER, alloc.id, peer, data)]

    def _data_indication(self, alloc: Allocation, peer: Addr, data: bytes) -> bytes:
        n = len(data)
        if n > 0xFFFF - 32:
            self.stats.dropped["too_large"] += 1
            return b""
        tid = self._fast_rng.randbytes(12)
        if alloc.family == stun.FAMILY_IPV4:
            xpa = self._xpa_cache.get(peer)
            if xpa is None:
                if len(self._xpa_cache) > 4096:
                    self._xpa_cache.clear()
                xpa = self._xpa_cache[peer] = _xor_peer_attr(peer, tid)
        else:
            xpa = _xor_peer_attr(peer, tid)
        data_attr = (0x00130000 | n).to_bytes(4, "big") + data + _PAD[n & 3]
        body_len = len(xpa) + len(data_attr)
        return (_DATA_INDICATION_TYPE + body_len.to_bytes(2, "big") + stun.COOKIE_BYTES + tid
                + xpa + data_attr)


def _xor_peer_attr(peer: Addr, tid: bytes) -> bytes:
    """XOR-PEER-ADDRESS attribute bytes (for IPv4 they do not depend on the transaction id)."""
    value = stun.ATTRIBUTES[stun.XOR_PEER_ADDRESS].encode(peer, tid)
    return (stun.XOR_PEER_ADDRESS << 16 | len(value)).to_bytes(4, "big") + value
