"""Stateless request and indication handlers, chosen by (class, method) from :data:`HANDLERS`.

Each handler takes the server and the request, raises :class:`~turn.errors.TurnError` for an
error response, and returns the actions to perform. The order of the checks follows RFC 8656
§7.2 (Allocate), §8.2 (Refresh), §10.2 (CreatePermission), §11.2 (Send), §12.2 (ChannelBind).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from turn import stun
from turn.actions import TO_CLIENT, Action
from turn.allocation import (
    CHANNEL_LIFETIME_S,
    MAX_PERMISSIONS,
    PERMISSION_LIFETIME_S,
    Allocation,
    ChannelBinding,
    TokenBucket,
    granted_lifetime,
)
from turn.channeldata import MIN_CHANNEL
from turn.errors import TurnError
from turn.stun import Addr

if TYPE_CHECKING:
    from turn.server import Request, TurnServer

__all__ = ["HANDLERS"]

Handler = Callable[["TurnServer", "Request"], list[Action]]


def _family(addr: Addr) -> int:
    return stun.FAMILY_IPV6 if ":" in addr[0] else stun.FAMILY_IPV4


def _check_peer(srv: TurnServer, alloc: Allocation, peer: Addr) -> None:
    if _family(peer) != alloc.family:
        raise TurnError(443, "peer address family differs from the relayed address")
    reason = srv.policy.denial(peer[0], peer[1])
    if reason is not None:
        srv.stats.denied[reason] += 1
        raise TurnError(403, f"peer {peer[0]} refused: {reason}")


def handle_binding(srv: TurnServer, req: Request) -> list[Action]:
    if req.msg.unknown_required:
        raise TurnError(420)
    return [srv.success_response(req, [(stun.XOR_MAPPED_ADDRESS, req.client)])]


def handle_allocate(srv: TurnServer, req: Request) -> list[Action]:
    alloc = srv.authenticate(req)
    msg, now = req.msg, req.now
    if alloc is not None:
        if msg.transaction_id == alloc.create_tid:  # a retransmission: the same answer
            return [(TO_CLIENT, req.transport, req.client, alloc.create_response)]
        raise TurnError(437, "this 5-tuple already has an allocation")
    transport = msg.get(stun.REQUESTED_TRANSPORT)
    if transport is None:
        raise TurnError(400, "REQUESTED-TRANSPORT missing")
    if transport != stun.TRANSPORT_UDP:
        raise TurnError(442)
    token = msg.get(stun.RESERVATION_TOKEN)
    even = msg.get(stun.EVEN_PORT)
    family = msg.get(stun.REQUESTED_ADDRESS_FAMILY)
    additional = msg.get(stun.ADDITIONAL_ADDRESS_FAMILY)
    if token is not None and (even is not None or family is not None or additional is not None):
        raise TurnError(400, "RESERVATION-TOKEN with EVEN-PORT or an address family")
    if family is not None and additional is not None:
        raise TurnError(400, "REQUESTED-ADDRESS-FAMILY with ADDITIONAL-ADDRESS-FAMILY")
    if additional is not None and additional != stun.FAMILY_IPV6:
        raise TurnError(400, "ADDITIONAL-ADDRESS-FAMILY must be IPv6")
    if family is not None and family not in (stun.FAMILY_IPV4, stun.FAMILY_IPV6):
        raise TurnError(440, "unknown address family")
    user = req.user
    if user is None:  # authenticate() sets it; unreachable
        raise TurnError(500, "unauthenticated allocate")
    if user.expires_at is not None and user.expires_at <= srv.wall_time(now):
        srv.stats.auth_failures += 1
        raise TurnError(401, "credentials expired")
    srv.check_quota(user.identity)
    lifetime = granted_lifetime(msg.get(stun.LIFETIME), max_s=srv.max_lifetime_s)
    reservation = None
    if token is not None:
        res = srv.take_reservation(token, now)
        relay_id, relay, family = res.relay_id, res.relay, res.family
    else:
        family = family or stun.FAMILY_IPV4
        relay_id, _bound, relay, reservation = srv.open_relay(family, even, now)
    attrs: list[tuple[int, Any]] = [
        (stun.XOR_RELAYED_ADDRESS, relay),
        (stun.LIFETIME, lifetime),
    ]
    if reservation is not None:
        attrs.append((stun.RESERVATION_TOKEN, reservation.token))
    attrs.append((stun.XOR_MAPPED_ADDRESS, req.client))
    if additional is not None and stun.FAMILY_IPV6 not in srv.relay_ips:
        attrs.append((stun.ADDRESS_ERROR_CODE, (stun.FAMILY_IPV6, 440,
                                                "Address Family not Supported")))
    response = srv.success_response(req, attrs)
    alloc = Allocation(
        id=relay_id, transport=req.transport, client=req.client, relay=relay,
        username=msg.get(stun.USERNAME), identity=user.identity, key=user.key,
        expires_at=now + lifetime, create_tid=msg.transaction_id, create_response=response[3],
        stream=not req.transport.startswith("udp"), family=family,
        bucket=TokenBucket(srv.bandwidth_bps, now) if srv.bandwidth_bps > 0 else None,
    )
    srv.add_allocation(alloc)
    return [response]


def handle_refresh(srv: TurnServer, req: Request) -> list[Action]:
    alloc = srv.authenticate(req)
    if alloc is None:
        raise TurnError(437, "no allocation for this 5-tuple")
    msg, now = req.msg, req.now
    family = msg.get(stun.REQUESTED_ADDRESS_FAMILY)
    if family is not None and family != alloc.family:
        raise TurnError(443, "REQUESTED-ADDRESS-FAMILY differs from the allocation's")
    requested = msg.get(stun.LIFETIME)
    if requested == 0:
        srv.delete_allocation(alloc, "refresh_zero")
        return [srv.success_response(req, [(stun.LIFETIME, 0)])]
    lifetime = granted_lifetime(requested, max_s=srv.max_lifetime_s)
    alloc.expires_at = now + lifetime
    srv.schedule(alloc, alloc.expires_at)
    return [srv.success_response(req, [(stun.LIFETIME, lifetime)])]


def handle_create_permission(srv: TurnServer, req: Request) -> list[Action]:
    alloc = srv.authenticate(req)
    if alloc is None:
        raise TurnError(437, "no allocation for this 5-tuple")
    peers: list[Addr] = req.msg.get_all(stun.XOR_PEER_ADDRESS)
    if not peers:
        raise TurnError(400, "XOR-PEER-ADDRESS missing")
    for peer in peers:  # all or nothing (RFC 8656 §10.2)
        _check_peer(srv, alloc, peer)
    new = {p[0] for p in peers} - alloc.permissions.keys()
    if len(alloc.permissions) + len(new) > MAX_PERMISSIONS:
        raise TurnError(508, "too many permissions")
    expires_at = req.now + PERMISSION_LIFETIME_S
    for peer in peers:
        alloc.permissions[peer[0]] = expires_at
    srv.schedule(alloc, expires_at)
    return [srv.success_response(req, [])]


def handle_channel_bind(srv: TurnServer, req: Request) -> list[Action]:
    alloc = srv.authenticate(req)
    if alloc is None:
        raise TurnError(437, "no allocation for this 5-tuple")
    msg, now = req.msg, req.now
    number = msg.get(stun.CHANNEL_NUMBER)
    peer: Addr | None = msg.get(stun.XOR_PEER_ADDRESS)
    if number is None or peer is None:
        raise TurnError(400, "CHANNEL-NUMBER or XOR-PEER-ADDRESS missing")
    if not MIN_CHANNEL <= number <= srv.max_channel:
        raise TurnError(400, f"channel number 0x{number:04X} out of range")
    _check_peer(srv, alloc, peer)
    alloc.expire(now)  # forget lapsed bindings before checking for conflicts
    bound = alloc.channels.get(number)
    if bound is not None and bound.peer != peer:
        raise TurnError(400, "channel bound to another peer")
    other = alloc.peer_channels.get(peer)
    if other is not None and other.number != number:
        raise TurnError(400, "peer bound to another channel")
    if len(alloc.permissions) >= MAX_PERMISSIONS and peer[0] not in alloc.permissions:
        raise TurnError(508, "too many permissions")
    if bound is None:
        bound = ChannelBinding(number, peer, now + CHANNEL_LIFETIME_S)
        alloc.channels[number] = bound
        alloc.peer_channels[peer] = bound
    else:
        bound.expires_at = now + CHANNEL_LIFETIME_S
    alloc.permissions[peer[0]] = now + PERMISSION_LIFETIME_S
    srv.schedule(alloc, now + PERMISSION_LIFETIME_S)
    return [srv.success_response(req, [])]


def handle_send(srv: TurnServer, req: Request) -> list[Action]:
    alloc = srv.allocation_for(req.transport, req.client)
    if alloc is None:
        srv.stats.dropped["no_allocation"] += 1
        return []
    msg = req.msg
    peer: Addr | None = msg.get(stun.XOR_PEER_ADDRESS)
    data: bytes | None = msg.get(stun.DATA_ATTR)
    if peer is None or data is None:
        srv.stats.dropped["malformed"] += 1
        return []
    if msg.unknown_required:
        srv.stats.dropped["unknown_attribute"] += 1
        return []
    if _family(peer) != alloc.family:
        srv.stats.dropped["family_mismatch"] += 1
        return []
    return srv.relay_to_peer(alloc, peer, data, req.now)


def _ignore(srv: TurnServer, req: Request) -> list[Action]:
    return []


HANDLERS: dict[tuple[int, int], Handler] = {
    (stun.REQUEST, stun.BINDING): handle_binding,
    (stun.REQUEST, stun.ALLOCATE): handle_allocate,
    (stun.REQUEST, stun.REFRESH): handle_refresh,
    (stun.REQUEST, stun.CREATE_PERMISSION): handle_create_permission,
    (stun.REQUEST, stun.CHANNEL_BIND): handle_channel_bind,
    (stun.INDICATION, stun.SEND): handle_send,
    (stun.INDICATION, stun.BINDING): _ignore,  # keep-alives (RFC 8489 §6.3.2)
}
