"""Allocations, permissions and channel bindings (RFC 8656 §6, §9, §12) as plain data.

Every lifetime is an ``expires_at`` (monotonic seconds); nothing here runs a timer. The server
calls :meth:`Allocation.expire` from ``handle_timeout(now)`` and checks ``expires_at`` on the
data path, so a late timer never relays one packet too many.

Permissions are kept as ``peer IP → expires_at`` and channel bindings as two dicts (number →
binding, peer → binding), which is all the data path needs: two dict look-ups per packet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from turn.stun import Addr

__all__ = [
    "CHANNEL_LIFETIME_S",
    "DEFAULT_LIFETIME_S",
    "MAX_LIFETIME_S",
    "PERMISSION_LIFETIME_S",
    "RESERVATION_LIFETIME_S",
    "Allocation",
    "ChannelBinding",
    "Reservation",
    "TokenBucket",
    "granted_lifetime",
]

DEFAULT_LIFETIME_S = 600
MAX_LIFETIME_S = 3600
PERMISSION_LIFETIME_S = 300
CHANNEL_LIFETIME_S = 600
RESERVATION_LIFETIME_S = 30
MAX_PERMISSIONS = 256  # per allocation; past it CreatePermission gets 508


def granted_lifetime(requested: int | None, default_s: int = DEFAULT_LIFETIME_S,
                     max_s: int = MAX_LIFETIME_S) -> int:
    """RFC 8656 §7.2/§8.2: min(requested, max), but never below the default."""
    if requested is None:
        return default_s
    return max(default_s, min(requested, max_s))


class ChannelBinding:
    __slots__ = ("expires_at", "number", "peer")

    def __init__(self, number: int, peer: Addr, expires_at: float) -> None:
        self.number = number
        self.peer = peer
        self.expires_at = expires_at


class TokenBucket:
    """Bytes/s cap; the burst is one second of traffic but at least one 64 KiB packet."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate_bps: float, now: float) -> None:
        self.rate = float(rate_bps)
        self.burst = max(self.rate, 65535.0)
        self.tokens = self.burst
        self.last = now

    def take(self, n: int, now: float) -> bool:
        tokens = self.tokens + (now - self.last) * self.rate
        self.last = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens < n:
            self.tokens = tokens
            return False
        self.tokens = tokens - n
        return True


@dataclass(slots=True, eq=False)
class Allocation:
    """One allocation: its 5-tuple, relay address, credentials and what it may relay to."""

    id: int
    transport: str  # the listener it was made on: "udp", "tcp", "tls", maybe "/n" suffixed
    client: Addr
    relay: Addr  # advertised relayed transport address
    username: str
    identity: str  # what the per-user quota counts
    key: bytes  # the long-term key that created it; later requests must use it
    expires_at: float
    create_tid: bytes
    create_response: bytes
    stream: bool = False
    family: int = 1
    permissions: dict[str, float] = field(default_factory=dict)
    channels: dict[int, ChannelBinding] = field(default_factory=dict)
    peer_channels: dict[Addr, ChannelBinding] = field(default_factory=dict)
    bucket: TokenBucket | None = None
    scheduled_at: float = float("inf")  # earliest time queued for this allocation's timer

    def permitted(self, ip: str, now: float) -> bool:
        expires_at = self.permissions.get(ip)
        return expires_at is not None and expires_at > now

    def next_expiry(self) -> float:
        t = self.expires_at
        for exp in self.permissions.values():
            if exp < t:
                t = exp
        for binding in self.channels.values():
            if binding.expires_at < t:
                t = binding.expires_at
        return t

    def expire(self, now: float) -> bool:
        """Drop expired permissions and channel bindings; True if the allocation expired."""
        if self.expires_at <= now:
            return True
        for ip in [ip for ip, exp in self.permissions.items() if exp <= now]:
            del self.permissions[ip]
        for number in [n for n, b in self.channels.items() if b.expires_at <= now]:
            binding = self.channels.pop(number)
            if self.peer_channels.get(binding.peer) is binding:
                del self.peer_channels[binding.peer]
        return False


@dataclass(slots=True)
class Reservation:
    """A relay port held for a later Allocate with RESERVATION-TOKEN (EVEN-PORT R bit)."""

    token: bytes
    relay_id: int
    bound: Addr  # the address the relay socket is bound to
    relay: Addr  # advertised
    family: int
    expires_at: float
