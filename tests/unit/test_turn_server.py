"""turn.server core: every error code, lifetimes and expiry through handle_timeout, the relay
data path (ChannelData, Send/Data indications, padding over streams), REST credentials that
calls outlive, quotas, reservations, bandwidth caps, metrics, and fuzzing: the core never
raises on any input."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_turn_harness import (
    NOW,
    PUBLIC_PEER,
    REALM,
    RELAY_V4,
    RELAY_V6,
    SECRET,
    Client,
    code,
    make_server,
    relays_of,
    to_peer,
)
from turn import stun
from turn.actions import TO_CLIENT, TO_PEER
from turn.auth import mint_rest_credentials
from turn.server import TurnServer
from turn.stun import Message

PEER2 = ("203.0.113.51", 6000)


def allocated(**kw: object) -> tuple[Client, TurnServer]:
    srv = make_server(**kw)
    c = Client(srv)
    assert code(c.allocate()) == 0
    return c, srv


# --- STUN Binding and authentication ----------------------------------------------------------


def test_binding_request_gets_xor_mapped_address_without_auth() -> None:
    c = Client(make_server(), ("198.51.100.9", 1234))
    r = c.ask(Message(stun.BINDING, stun.REQUEST, os.urandom(12)), sign=False)
    assert r.cls == stun.SUCCESS
    assert r.get(stun.XOR_MAPPED_ADDRESS) == ("198.51.100.9", 1234)
    assert r.integrity is None


def test_first_allocate_is_challenged_with_realm_and_nonce_unsigned() -> None:
    c = Client(make_server())
    r = c.ask(Message(stun.ALLOCATE, stun.REQUEST, os.urandom(12))
              .add(stun.REQUESTED_TRANSPORT, 17), sign=False)
    assert code(r) == 401
    assert r.get(stun.ERROR_CODE) == (401, "Unauthorized")
    assert r.get(stun.REALM) == REALM and r.get(stun.NONCE)
    assert r.integrity is None


def test_allocate_success_is_signed_and_carries_relay_lifetime_and_mapped_address() -> None:
    srv = make_server(min_port=50000, max_port=50099)
    c = Client(srv, ("198.51.100.1", 40000))
    r = c.allocate()
    assert code(r) == 0 and r.check_integrity(c.key)
    ip, port = r.get(stun.XOR_RELAYED_ADDRESS)
    assert ip == RELAY_V4 and 50000 <= port <= 50099
    assert r.get(stun.LIFETIME) == 600
    assert r.get(stun.XOR_MAPPED_ADDRESS) == ("198.51.100.1", 40000)
    assert list(relays_of(srv).opened.values()) == [(RELAY_V4, port)]
    assert srv.allocations_active == 1


def test_wrong_password_gets_401_and_counts_an_auth_failure() -> None:
    srv = make_server()
    c = Client(srv, password="not-the-password")
    r = c.allocate()
    assert code(r) == 401 and r.integrity is None and r.get(stun.NONCE)
    assert srv.stats.auth_failures == 1
    assert srv.allocations_active == 0


def test_unknown_user_gets_401() -> None:
    srv = make_server()
    assert code(Client(srv, username="mallory").allocate()) == 401
    assert srv.stats.auth_failures == 1


def test_integrity_without_username_is_400() -> None:
    c = Client(make_server())
    c.nonce = "whatever"
    msg = Message(stun.ALLOCATE, stun.REQUEST, os.urandom(12)).add(stun.REQUESTED_TRANSPORT, 17)
    msg.add(stun.REALM, REALM).add(stun.NONCE, "n")
    out = c.send(msg.encode(c.key))
    r = Message.parse(out[0][3])
    assert code(r) == 400 and r.integrity is None


def test_stale_nonce_gets_438_with_a_fresh_nonce_and_the_retry_works() -> None:
    srv = make_server(nonce_lifetime_s=60)
    c = Client(srv)
    assert code(c.allocate()) == 0
    later = NOW + 61
    r = c.refresh(now=later)
    assert code(r) == 438 and r.integrity is None
    assert r.get(stun.REALM) == REALM and r.get(stun.NONCE) != c.nonce
    assert srv.stats.stale_nonces == 1
    c.nonce = r.get(stun.NONCE)
    assert code(c.refresh(now=later)) == 0


def test_a_nonce_from_another_ip_or_a_forged_one_is_stale() -> None:
    srv = make_server()
    a = Client(srv, ("198.51.100.1", 1))
    assert code(a.allocate()) == 0
    b = Client(srv, ("198.51.100.2", 1))
    b.nonce = a.nonce  # seen on the wire
    assert code(b.allocate()) == 438
    b.nonce = "ffffffffffff.0123456789abcdef01234567"
    assert code(b.allocate()) == 438


def test_allocate_retransmission_gets_the_same_response_and_a_new_one_437() -> None:
    c, srv = allocated()
    msg = Message(stun.ALLOCATE, stun.REQUEST, b"R" * 12).add(stun.REQUESTED_TRANSPORT, 17)
    msg.add(stun.USERNAME, "alice").add(stun.REALM, REALM).add(stun.NONCE, c.nonce)
    # The first Allocate of this 5-tuple was another transaction: this one is a mismatch.
    assert code(Message.parse(c.send(msg.encode(c.key))[0][3])) == 437
    other = Client(srv, ("198.51.100.7", 7))
    assert code(other.allocate()) == 0
    alloc = srv.allocation_for("udp", other.addr)
    assert alloc is not None
    first = alloc.create_response
    retransmit = Message(stun.ALLOCATE, stun.REQUEST, alloc.create_tid)
    retransmit.add(stun.REQUESTED_TRANSPORT, 17).add(stun.USERNAME, "alice")
    retransmit.add(stun.REALM, REALM).add(stun.NONCE, other.nonce)
    assert other.send(retransmit.encode(other.key, fingerprint=True))[0][3] == first
    assert srv.allocations_active == 2


@pytest.mark.parametrize("method", [stun.REFRESH, stun.CREATE_PERMISSION, stun.CHANNEL_BIND])
def test_requests_without_an_allocation_get_437(method: int) -> None:
    c = Client(make_server())
    by_method: dict[int, list[tuple[int, Any]]] = {
        stun.REFRESH: [],
        stun.CREATE_PERMISSION: [(stun.XOR_PEER_ADDRESS, PUBLIC_PEER)],
        stun.CHANNEL_BIND: [(stun.CHANNEL_NUMBER, 0x4000), (stun.XOR_PEER_ADDRESS, PUBLIC_PEER)],
    }
    attrs = by_method[method]
    r = c.request(method, *attrs)
    assert code(r) == 437 and r.check_integrity(c.key)


def test_missing_requested_transport_is_400_and_tcp_relaying_is_442() -> None:
    c = Client(make_server())
    assert code(c.allocate(transport_attr=False)) == 400
    r = c.allocate((stun.REQUESTED_TRANSPORT, 6), transport_attr=False)
    assert r.get(stun.ERROR_CODE) == (442, "Unsupported Transport Protocol")


def test_unknown_comprehension_required_attributes_get_420_listing_them() -> None:
    c = Client(make_server())
    r = c.allocate((0x0024, b"\x00\x00\x00\x01"), (0x7FFF, b""), (0x802F, b"https://x"))
    assert code(r) == 420 and r.check_integrity(c.key)
    assert r.get(stun.UNKNOWN_ATTRIBUTES) == (0x0024, 0x7FFF)  # 0x802F is optional


def test_binding_with_unknown_required_attribute_is_420() -> None:
    c = Client(make_server())
    r = c.ask(Message(stun.BINDING, stun.REQUEST, os.urandom(12)).add(0x07AD, b"1234"), sign=False)
    assert code(r) == 420 and r.get(stun.UNKNOWN_ATTRIBUTES) == (0x07AD,)


def test_ipv6_relay_requested_without_an_ipv6_relay_ip_is_440() -> None:
    c = Client(make_server())
    assert code(c.allocate((stun.REQUESTED_ADDRESS_FAMILY, stun.FAMILY_IPV6))) == 440
    assert code(c.allocate((stun.REQUESTED_ADDRESS_FAMILY, 7))) == 440


def test_ipv6_relay_and_dual_allocation_request() -> None:
    srv = make_server(relay_ips=(RELAY_V4, RELAY_V6))
    c6 = Client(srv, ("2001:db8::99", 4000))
    r = c6.allocate((stun.REQUESTED_ADDRESS_FAMILY, stun.FAMILY_IPV6))
    assert code(r) == 0 and r.get(stun.XOR_RELAYED_ADDRESS)[0] == RELAY_V6
    # Dual allocation is not offered: the IPv4 one is made, the IPv6 half refused with 440.
    srv4 = make_server()
    r = Client(srv4).allocate((stun.ADDITIONAL_ADDRESS_FAMILY, stun.FAMILY_IPV6))
    assert code(r) == 0
    assert r.get(stun.ADDRESS_ERROR_CODE) == (stun.FAMILY_IPV6, 440, "Address Family not Supported")


def test_another_user_on_the_same_5_tuple_gets_441() -> None:
    c, srv = allocated()
    bob = Client(srv, c.addr, username="bob", password="pw2")
    bob.nonce = c.nonce
    r = bob.refresh()
    assert code(r) == 441 and r.check_integrity(bob.key)


def test_peer_family_mismatch_is_443() -> None:
    c, _ = allocated()
    assert code(c.permit(("2001:db8::5", 1))) == 443
    assert code(c.bind(0x4000, ("2001:db8::5", 1))) == 443
    assert code(c.request(stun.REFRESH, (stun.REQUESTED_ADDRESS_FAMILY,
                                         stun.FAMILY_IPV6))) == 443


def test_per_user_quota_486_and_it_frees_up() -> None:
    srv = make_server(user_quota=2)
    clients = [Client(srv, ("198.51.100.1", p)) for p in (1, 2, 3)]
    assert code(clients[0].allocate()) == 0
    assert code(clients[1].allocate()) == 0
    r = clients[2].allocate()
    assert r.get(stun.ERROR_CODE) == (486, "Allocation Quota Reached")
    assert srv.stats.denied["quota_user"] == 1
    assert code(Client(srv, ("198.51.100.1", 4), username="bob", password="pw2").allocate()) == 0
    assert code(clients[0].refresh(0)) == 0
    assert code(clients[2].allocate()) == 0


def test_total_quota_486() -> None:
    srv = make_server(total_quota=1)
    assert code(Client(srv, ("198.51.100.1", 1)).allocate()) == 0
    r = Client(srv, ("198.51.100.1", 2), username="bob", password="pw2").allocate()
    assert code(r) == 486 and srv.stats.denied["quota_total"] == 1


def test_port_range_exhausted_is_508_and_busy_ports_are_skipped() -> None:
    srv = make_server(min_port=50000, max_port=50001)
    relays_of(srv).busy.add(50000)
    a = Client(srv, ("198.51.100.1", 1))
    assert code(a.allocate()) == 0 and a.relayed == (RELAY_V4, 50001)
    r = Client(srv, ("198.51.100.1", 2)).allocate()
    assert r.get(stun.ERROR_CODE) == (508, "Insufficient Capacity")


def test_even_port_with_reservation_and_the_token_used_by_another_5_tuple() -> None:
    srv = make_server(min_port=50000, max_port=50100)
    a = Client(srv, ("198.51.100.1", 1))
    r = a.allocate((stun.EVEN_PORT, True))
    ip, port = r.get(stun.XOR_RELAYED_ADDRESS)
    token = r.get(stun.RESERVATION_TOKEN)
    assert port % 2 == 0 and len(token) == 8
    assert (ip, port + 1) in relays_of(srv).opened.values()
    b = Client(srv, ("198.51.100.1", 2))
    r = b.allocate((stun.RESERVATION_TOKEN, token))
    assert code(r) == 0 and r.get(stun.XOR_RELAYED_ADDRESS) == (ip, port + 1)
    c = Client(srv, ("198.51.100.1", 3))
    assert code(c.allocate((stun.RESERVATION_TOKEN, token))) == 508  # used up
    assert code(c.allocate((stun.RESERVATION_TOKEN, token), (stun.EVEN_PORT, False))) == 400


def test_an_unused_reservation_expires_after_30_s_and_its_port_is_closed() -> None:
    srv = make_server()
    a = Client(srv)
    token = a.allocate((stun.EVEN_PORT, True)).get(stun.RESERVATION_TOKEN)
    assert len(relays_of(srv).opened) == 2
    srv.handle_timeout(NOW + 30)
    assert len(relays_of(srv).opened) == 1
    assert code(Client(srv, ("198.51.100.1", 9)).allocate((stun.RESERVATION_TOKEN, token))) == 508


def test_even_port_without_reservation() -> None:
    srv = make_server(min_port=50001, max_port=50010)
    r = Client(srv).allocate((stun.EVEN_PORT, False))
    assert r.get(stun.XOR_RELAYED_ADDRESS)[1] % 2 == 0 and not r.has(stun.RESERVATION_TOKEN)


# --- lifetimes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("requested", "granted"), [(None, 600), (30, 600), (1200, 1200),
                                                     (3600, 3600), (100000, 3600)])
def test_allocation_lifetime_rules(requested: int | None, granted: int) -> None:
    c = Client(make_server())
    attrs = [(stun.LIFETIME, requested)] if requested is not None else []
    assert c.allocate(*attrs).get(stun.LIFETIME) == granted
    assert c.refresh(requested).get(stun.LIFETIME) == granted


def test_allocation_expires_through_handle_timeout_and_its_relay_closes() -> None:
    c, srv = allocated(nonce_lifetime_s=3600)
    assert srv.get_timer() == NOW + 600
    srv.handle_timeout(NOW + 599.9)
    assert srv.allocations_active == 1
    srv.handle_timeout(NOW + 600)
    assert srv.allocations_active == 0 and relays_of(srv).opened == {}
    assert srv.stats.allocations_deleted["expired"] == 1
    assert srv.get_timer() is None
    assert code(c.refresh(now=NOW + 601)) == 437


def test_refresh_extends_the_allocation_and_lifetime_zero_deletes_it() -> None:
    c, srv = allocated(nonce_lifetime_s=3600)
    assert code(c.refresh(600, now=NOW + 500)) == 0
    srv.handle_timeout(NOW + 700)
    assert srv.allocations_active == 1
    r = c.refresh(0, now=NOW + 800)
    assert code(r) == 0 and r.get(stun.LIFETIME) == 0
    assert srv.allocations_active == 0 and relays_of(srv).opened == {}
    assert srv.stats.allocations_deleted["refresh_zero"] == 1


def test_permission_lasts_300_s_and_is_expired_by_the_timer() -> None:
    c, srv = allocated()
    assert code(c.permit(PUBLIC_PEER)) == 0
    assert srv.relay_received(c.relay_id, b"in", PUBLIC_PEER, NOW + 299)
    assert srv.get_timer() == NOW + 300
    srv.handle_timeout(NOW + 300)
    alloc = srv.allocation_for("udp", c.addr)
    assert alloc is not None and alloc.permissions == {}
    assert srv.relay_received(c.relay_id, b"in", PUBLIC_PEER, NOW + 300) == []
    assert srv.stats.denied["no_permission"] == 1


def test_channel_binding_lasts_600_s_and_refreshes_its_permission() -> None:
    c, srv = allocated(nonce_lifetime_s=3600)
    assert code(c.refresh(3600)) == 0
    assert code(c.bind(0x4000, PUBLIC_PEER)) == 0
    assert code(c.bind(0x4000, PUBLIC_PEER, now=NOW + 250)) == 0  # refresh: permission too
    srv.handle_timeout(NOW + 400)
    assert to_peer(c.send(b"\x40\x00\x00\x01x", NOW + 400)) == [(PUBLIC_PEER, b"x")]
    srv.handle_timeout(NOW + 850)
    alloc = srv.allocation_for("udp", c.addr)
    assert alloc is not None and alloc.channels == {} and alloc.peer_channels == {}
    assert c.send(b"\x40\x00\x00\x01x", NOW + 850) == []
    assert srv.stats.denied["no_binding"] == 1


# --- channel binding rules ---------------------------------------------------------------------


@pytest.mark.parametrize(("number", "legacy", "expected"), [
    (0x4000, False, 0), (0x4FFF, False, 0), (0x3FFF, False, 400), (0x5000, False, 400),
    (0x7FFF, False, 400), (0x5000, True, 0), (0x7FFF, True, 0), (0x8000, True, 400),
])
def test_channel_number_range(number: int, legacy: bool, expected: int) -> None:
    c, _ = allocated(legacy_channels=legacy)
    assert code(c.bind(number, PUBLIC_PEER)) == expected


def test_a_channel_and_a_peer_bind_only_once() -> None:
    c, _ = allocated()
    assert code(c.bind(0x4000, PUBLIC_PEER)) == 0
    assert code(c.bind(0x4000, PUBLIC_PEER)) == 0  # the same binding again: a refresh
    assert code(c.bind(0x4000, PEER2)) == 400
    assert code(c.bind(0x4001, PUBLIC_PEER)) == 400
    assert code(c.bind(0x4001, PEER2)) == 0


# --- the data path -----------------------------------------------------------------------------


def test_channel_data_goes_to_the_peer_and_comes_back_as_channel_data() -> None:
    c, srv = allocated()
    assert code(c.bind(0x4001, PUBLIC_PEER)) == 0
    out = c.send(b"\x40\x01\x00\x05hello\x00\x00\x00")  # padding is ignored
    assert out == [(TO_PEER, c.relay_id, PUBLIC_PEER, b"hello")]
    back = srv.relay_received(c.relay_id, b"world!", PUBLIC_PEER, NOW)
    assert back == [(TO_CLIENT, "udp", c.addr, b"\x40\x01\x00\x06world!")]  # no padding on UDP
    st_ = srv.stats
    assert (st_.packets_to_peer, st_.bytes_to_peer) == (1, 5)
    assert (st_.packets_from_peer, st_.bytes_from_peer) == (1, 6)


def test_channel_data_to_a_stream_client_is_padded() -> None:
    srv = make_server()
    c = Client(srv, ("198.51.100.1", 40000), transport="tcp")
    assert code(c.allocate()) == 0 and code(c.bind(0x4001, PUBLIC_PEER)) == 0
    back = srv.relay_received(c.relay_id, b"world!", PUBLIC_PEER, NOW)
    assert back == [(TO_CLIENT, "tcp", c.addr, b"\x40\x01\x00\x06world!\x00\x00")]


def test_data_from_a_permitted_peer_without_channel_comes_as_a_data_indication() -> None:
    c, srv = allocated()
    assert code(c.permit(PUBLIC_PEER)) == 0
    [(kind, route, addr, data)] = srv.relay_received(c.relay_id, b"abc", PUBLIC_PEER, NOW)
    assert (kind, route, addr) == (TO_CLIENT, "udp", c.addr)
    m = Message.parse(data)
    assert (m.method, m.cls) == (stun.DATA, stun.INDICATION)
    assert m.get(stun.XOR_PEER_ADDRESS) == PUBLIC_PEER and m.get(stun.DATA_ATTR) == b"abc"


def test_send_indication_needs_a_permission() -> None:
    c, srv = allocated()
    assert c.send_indication(PUBLIC_PEER, b"x") == []
    assert srv.stats.denied["no_permission"] == 1
    assert code(c.permit(PUBLIC_PEER)) == 0
    assert to_peer(c.send_indication(PUBLIC_PEER, b"x")) == [(PUBLIC_PEER, b"x")]
    # Permissions are per IP: any port of a permitted IP is reachable (RFC 8656 §9).
    assert to_peer(c.send_indication((PUBLIC_PEER[0], 1), b"y")) == [((PUBLIC_PEER[0], 1), b"y")]


def test_a_send_indication_to_a_denied_address_is_dropped_silently_and_counted() -> None:
    c, srv = allocated()
    assert c.send_indication(("10.0.0.8", 53), b"x") == []
    assert c.send_indication(("169.254.169.254", 80), b"x") == []
    assert srv.stats.denied["private"] == 1 and srv.stats.denied["link_local"] == 1


def test_indications_and_channel_data_from_an_unknown_5_tuple_are_dropped() -> None:
    srv = make_server()
    c = Client(srv)
    assert c.send(b"\x40\x00\x00\x00") == []
    assert c.send_indication(PUBLIC_PEER, b"x") == []
    assert srv.relay_received(99, b"x", PUBLIC_PEER, NOW) == []
    assert srv.stats.dropped["no_allocation"] == 3


def test_connection_lost_ends_a_tcp_allocation() -> None:
    srv = make_server()
    c = Client(srv, transport="tls")
    assert code(c.allocate()) == 0
    srv.connection_lost("tls", c.addr, NOW + 1)
    assert srv.allocations_active == 0 and relays_of(srv).opened == {}
    assert srv.stats.allocations_deleted["connection_closed"] == 1


def test_bandwidth_cap_drops_what_exceeds_the_bucket() -> None:
    c, srv = allocated(bandwidth_bps=100_000)
    assert code(c.bind(0x4000, PUBLIC_PEER)) == 0
    packet = b"\x40\x00\x04\x00" + bytes(1024)
    sent = sum(len(c.send(packet, NOW + 1)) for _ in range(200))
    assert sent == 100_000 // 1024  # the burst is one second's worth
    assert srv.stats.denied["bandwidth"] == 200 - sent
    assert len(c.send(packet, NOW + 1.05)) == 1  # 50 ms later: 5000 bytes refilled


# --- REST credentials: calls outlive them ------------------------------------------------------


def test_rest_credentials_allocate_and_outlive_their_expiry() -> None:
    srv = make_server(users={})
    username, password = mint_rest_credentials(SECRET, "participant-1", NOW, ttl_s=60)
    c = Client(srv, username=username, password=password)
    assert code(c.allocate()) == 0
    alloc = srv.allocation_for("udp", c.addr)
    assert alloc is not None and alloc.identity == "participant-1"
    after = NOW + 120  # the credential expired a minute ago
    assert code(c.refresh(now=after)) == 0
    assert code(c.permit(PUBLIC_PEER, now=after)) == 0
    assert code(c.bind(0x4000, PUBLIC_PEER, now=after)) == 0
    fresh = Client(srv, ("198.51.100.2", 1), username=username, password=password)
    r = fresh.allocate(now=after)
    assert code(r) == 401 and r.integrity is None
    assert srv.stats.auth_failures == 1


def test_rest_credentials_from_any_configured_secret_and_not_from_others() -> None:
    srv = make_server(users={}, secrets=["old-secret-0123456789", "new-secret-0123456789"])
    for i, secret in enumerate(["old-secret-0123456789", "new-secret-0123456789"]):
        u, p = mint_rest_credentials(secret, f"id{i}", NOW, 3600)
        assert code(Client(srv, ("198.51.100.1", i), username=u, password=p).allocate()) == 0
    u, p = mint_rest_credentials("unknown-secret-01234567", "x", NOW, 3600)
    assert code(Client(srv, ("198.51.100.1", 9), username=u, password=p).allocate()) == 401


# --- malformed input and metrics ---------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b"", b"\x00", b"\x00\x01\x00\x00\x21\x12\xa4\x42", b"\x80\x00\x00\x00",
    b"\x00\x01\x00\x04\x21\x12\xa4\x42" + bytes(12) + b"\x00\x06\x00\x08",
    b"\x40\x00\x00\x08abc", b"\xff" * 30,
    Message(stun.ALLOCATE, stun.SUCCESS, bytes(12)).encode(),  # a response from a client
])
def test_malformed_truncated_and_unexpected_input_is_dropped_without_answer(raw: bytes) -> None:
    c, srv = allocated()
    assert c.send(raw) == []
    assert sum(srv.stats.dropped.values()) >= 1


def test_unknown_request_method_is_400() -> None:
    c = Client(make_server())
    r = c.ask(Message(0x0AB, stun.REQUEST, os.urandom(12)), sign=False)
    assert code(r) == 400


def test_snapshot_exposes_plain_counters() -> None:
    c, srv = allocated()
    assert code(c.permit(("10.1.1.1", 1))) == 403
    snap = srv.snapshot()
    assert snap["allocations_active"] == 1 and snap["allocations_created"] == 1
    assert snap["denied"] == {"private": 1}
    assert snap["errors"] == {"401": 1, "403": 1}
    assert snap["requests"] == {"allocate": 2, "create_permission": 1}
    assert {"packets_to_peer", "bytes_to_peer", "packets_from_peer", "bytes_from_peer",
            "auth_failures", "stale_nonces", "dropped", "reservations_active"} <= snap.keys()


def test_on_event_hook_reports_allocations() -> None:
    events: list[tuple[str, dict[str, object]]] = []
    srv = make_server(on_event=lambda name, fields: events.append((name, fields)))
    c = Client(srv)
    assert code(c.allocate()) == 0 and code(c.refresh(0)) == 0
    assert [name for name, _ in events] == ["allocation_created", "allocation_deleted"]
    assert events[1][1]["reason"] == "refresh_zero"


# --- fuzzing: the core never raises -----------------------------------------------------------


def _valid_messages(c: Client) -> list[bytes]:
    sign = {"key": c.key}

    def signed(msg: Message) -> bytes:
        msg.add(stun.USERNAME, "alice").add(stun.REALM, REALM).add(stun.NONCE, c.nonce or "")
        return msg.encode(sign["key"], fingerprint=True)

    tid = bytes(range(12))
    return [
        signed(Message(stun.ALLOCATE, stun.REQUEST, tid).add(stun.REQUESTED_TRANSPORT, 17)
               .add(stun.EVEN_PORT, True)),
        signed(Message(stun.CHANNEL_BIND, stun.REQUEST, tid).add(stun.CHANNEL_NUMBER, 0x4001)
               .add(stun.XOR_PEER_ADDRESS, PEER2)),
        signed(Message(stun.CREATE_PERMISSION, stun.REQUEST, tid)
               .add(stun.XOR_PEER_ADDRESS, ("2001:db8::7", 9))),
        signed(Message(stun.REFRESH, stun.REQUEST, tid).add(stun.LIFETIME, 0)),
        Message(stun.SEND, stun.INDICATION, tid).add(stun.XOR_PEER_ADDRESS, PUBLIC_PEER)
        .add(stun.DATA_ATTR, b"data").encode(),
        Message(stun.BINDING, stun.REQUEST, tid).encode(fingerprint=True),
        b"\x40\x00\x00\x04data",
    ]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_the_core_never_raises(data: st.DataObject) -> None:
    srv = make_server(relay_ips=(RELAY_V4, RELAY_V6), legacy_channels=data.draw(st.booleans()))
    c = Client(srv, transport=data.draw(st.sampled_from(["udp", "tcp", "tls", "udp/1"])))
    assert code(c.allocate()) == 0 and code(c.bind(0x4000, PUBLIC_PEER)) == 0
    bases = _valid_messages(c)
    now = NOW
    for _ in range(data.draw(st.integers(1, 8))):
        choice = data.draw(st.integers(0, 4))
        if choice == 0:
            raw = data.draw(st.binary(max_size=120))
        else:
            mutable = bytearray(data.draw(st.sampled_from(bases)))
            for pos, value in data.draw(st.lists(st.tuples(st.integers(0, 150),
                                                           st.integers(0, 255)), max_size=4)):
                if pos < len(mutable):
                    mutable[pos] = value
            if choice == 4:
                del mutable[data.draw(st.integers(0, len(mutable))):]
            raw = bytes(mutable)
        now += data.draw(st.floats(0, 400))
        for out in (c.send(raw, now),
                    srv.relay_received(c.relay_id if srv.allocations_active else 1, raw,
                                       PUBLIC_PEER, now)):
            for kind, _route, addr, payload in out:
                assert kind in (TO_CLIENT, TO_PEER) and isinstance(payload, bytes)
                assert isinstance(addr, tuple) and len(addr) == 2
        srv.handle_timeout(now)
    srv.close()
    assert relays_of(srv).opened == {}
