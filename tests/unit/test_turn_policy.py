"""turn.policy through the core: one CreatePermission per default-denied range gets
``403 Forbidden IP`` (and ChannelBind too), public peers pass, and the operator's allow/deny
lists and the SFU's always-allowed media address behave as documented."""

from __future__ import annotations

import pytest

from tests.unit.test_turn_harness import (
    NOW,
    PUBLIC_PEER,
    RELAY_V4,
    RELAY_V6,
    Client,
    code,
    make_server,
    to_peer,
)
from turn import stun
from turn.policy import DEFAULT_DENIED, PeerPolicy

# One address inside every default-denied range, with the reason it is counted under.
DENIED = [
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("10.0.0.1", "private"),
    ("10.255.255.254", "private"),
    ("100.64.0.1", "cgnat"),
    ("100.127.255.254", "cgnat"),
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("169.254.169.254", "link_local"),  # cloud metadata
    ("169.254.0.1", "link_local"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("224.0.0.251", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::a00:1", "reserved"),  # IPv4-compatible, deprecated
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: judged as the IPv4 address
    ("::ffff:10.1.2.3", "private"),
    ("::ffff:169.254.169.254", "link_local"),
    ("::ffff:100.64.1.1", "cgnat"),
    ("::ffff:0.0.0.0", "unspecified"),
    ("::ffff:224.0.0.1", "multicast"),
    ("64:ff9b::a9fe:a9fe", "nat64"),  # NAT64 of 169.254.169.254
    ("64:ff9b:1::1", "nat64"),
    ("2002:7f00:1::1", "6to4"),  # 6to4 of 127.0.0.1
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fe80::1", "link_local"),
    ("fec0::1", "private"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
]

PUBLIC = ["8.8.8.8", "203.0.113.7", "100.128.0.1", "172.32.0.1", "2001:4860:4860::8888",
          "::ffff:8.8.8.8"]


def _client(ip: str, **kw: object) -> Client:
    srv = make_server(relay_ips=(RELAY_V4, RELAY_V6), **kw)
    c = Client(srv)
    family = stun.FAMILY_IPV6 if ":" in ip else stun.FAMILY_IPV4
    assert code(c.allocate((stun.REQUESTED_ADDRESS_FAMILY, family))) == 0
    return c


@pytest.mark.parametrize(("ip", "reason"), DENIED, ids=[ip for ip, _ in DENIED])
def test_create_permission_to_a_default_denied_range_is_403(ip: str, reason: str) -> None:
    c = _client(ip)
    r = c.permit((ip, 3478))
    assert r.get(stun.ERROR_CODE) == (403, "Forbidden IP")
    assert r.check_integrity(c.key)
    assert c.srv.stats.denied == {reason: 1}
    alloc = c.srv.allocation_for("udp", c.addr)
    assert alloc is not None and alloc.permissions == {}


@pytest.mark.parametrize(("ip", "reason"), DENIED[::4], ids=[ip for ip, _ in DENIED[::4]])
def test_channel_bind_to_a_default_denied_range_is_403(ip: str, reason: str) -> None:
    c = _client(ip)
    assert code(c.bind(0x4000, (ip, 3478))) == 403
    assert c.srv.stats.denied == {reason: 1}


def test_every_default_range_is_covered_by_a_test() -> None:
    import ipaddress

    for cidr, _ in DEFAULT_DENIED:
        net = ipaddress.ip_network(cidr)
        assert any(ipaddress.ip_address(ip) in net for ip, _ in DENIED
                   if ipaddress.ip_address(ip).version == net.version), cidr


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_peers_are_allowed(ip: str) -> None:
    c = _client(ip)
    assert code(c.permit((ip, 3478))) == 0


def test_one_denied_peer_fails_the_whole_create_permission() -> None:
    c = _client("8.8.8.8")
    assert code(c.permit(PUBLIC_PEER, ("192.168.0.1", 1))) == 403
    alloc = c.srv.allocation_for("udp", c.addr)
    assert alloc is not None and alloc.permissions == {}


def test_allow_list_overrides_the_default_deny_and_covers_mapped_forms() -> None:
    c = _client("127.0.0.1", allow_peers=["127.0.0.1/32"])
    assert code(c.permit(("127.0.0.1", 9))) == 0
    assert code(c.permit(("127.0.0.2", 9))) == 403
    c6 = _client("::ffff:127.0.0.1", allow_peers=["127.0.0.1/32"])
    assert code(c6.permit(("::ffff:127.0.0.1", 9))) == 0


def test_the_most_specific_of_allow_and_deny_wins() -> None:
    c = _client("10.1.2.3", allow_peers=["10.0.0.0/8"], deny_peers=["10.1.0.0/16", "8.8.8.0/24"])
    assert code(c.permit(("10.2.0.1", 1))) == 0
    assert code(c.permit(("10.1.2.3", 1))) == 403
    assert code(c.permit(("8.8.8.8", 1))) == 403
    assert c.srv.stats.denied == {"deny_list": 2}
    policy = PeerPolicy(allow=["10.1.2.3/32"], deny=["10.1.2.3/32"])
    assert policy.denial("10.1.2.3", 1) == "deny_list"  # a tie denies


def test_the_sfu_media_address_is_always_allowed_but_only_on_its_port() -> None:
    c = _client("127.0.0.1", always_allow=[("127.0.0.1", 7882)])
    srv = c.srv
    assert code(c.permit(("127.0.0.1", 7882))) == 0
    assert code(c.bind(0x4000, ("127.0.0.1", 7882))) == 0
    assert code(c.permit(("127.0.0.1", 53))) == 403
    assert code(c.bind(0x4001, ("127.0.0.1", 53))) == 403
    # The permission is for the IP, yet other ports of it stay unreachable both ways.
    assert c.send_indication(("127.0.0.1", 53), b"dns?") == []
    assert to_peer(c.send_indication(("127.0.0.1", 7882), b"stun")) == [(("127.0.0.1", 7882),
                                                                           b"stun")]
    assert srv.relay_received(c.relay_id, b"x", ("127.0.0.1", 53), NOW) == []
    assert srv.relay_received(c.relay_id, b"x", ("127.0.0.1", 7882), NOW)
    assert srv.stats.denied["port_restricted"] == 2


def test_always_allowed_cidrs() -> None:
    c = _client("10.9.0.1", always_allow=["10.9.0.0/16"])
    assert code(c.permit(("10.9.0.1", 5))) == 0
    assert code(c.permit(("10.8.0.1", 5))) == 403


def test_bad_cidrs_are_refused() -> None:
    with pytest.raises(ValueError, match="not an IP network: '10.0.0.0/33'"):
        PeerPolicy(allow=["10.0.0.0/33"])
