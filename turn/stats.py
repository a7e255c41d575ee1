"""Plain counters kept by the core; the daemon's metrics module reads them at scrape time.

The data path only bumps ints here: no metric objects, no labels, no locks. Every counter is
monotonic except the gauges computed on :meth:`TurnStats.snapshot` (``allocations_active``,
``reservations_active``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

__all__ = ["TurnStats"]


class TurnStats:
    __slots__ = (
        "allocations_created",
        "allocations_deleted",
        "auth_failures",
        "bytes_from_peer",
        "bytes_to_peer",
        "denied",
        "dropped",
        "errors",
        "packets_from_peer",
        "packets_to_peer",
        "requests",
        "stale_nonces",
    )

    def __init__(self) -> None:
        self.allocations_created = 0
        # reason ("expired", "refresh_zero", "connection_closed", "shutdown") -> count
        self.allocations_deleted: Counter[str] = Counter()
        # Requests whose MESSAGE-INTEGRITY matched no key (bad user or password), plus
        # Allocates with expired REST credentials.
        self.auth_failures = 0
        self.stale_nonces = 0
        # Relayed traffic: "to_peer" is client → relay → peer, "from_peer" the way back.
        self.packets_to_peer = 0
        self.bytes_to_peer = 0
        self.packets_from_peer = 0
        self.bytes_from_peer = 0
        # Refused relaying, by reason: a policy reason ("loopback", "private", "link_local",
        # "cgnat", "multicast", "unspecified", "reserved", "nat64", "6to4", "deny_list"),
        # "no_permission", "no_binding", "quota_user", "quota_total", "bandwidth".
        self.denied: Counter[str] = Counter()
        # Input dropped before any decision: "malformed", "no_allocation", "unknown_attribute",
        # "family_mismatch", "unexpected_class".
        self.dropped: Counter[str] = Counter()
        # Error responses sent, by STUN error code.
        self.errors: Counter[int] = Counter()
        # Requests and indications handled, by method name.
        self.requests: Counter[str] = Counter()

    def snapshot(self, allocations_active: int = 0, reservations_active: int = 0
                 ) -> dict[str, Any]:
        return {
            "allocations_active": allocations_active,
            "reservations_active": reservations_active,
            "allocations_created": self.allocations_created,
            "allocations_deleted": dict(self.allocations_deleted),
            "auth_failures": self.auth_failures,
            "stale_nonces": self.stale_nonces,
            "packets_to_peer": self.packets_to_peer,
            "bytes_to_peer": self.bytes_to_peer,
            "packets_from_peer": self.packets_from_peer,
            "bytes_from_peer": self.bytes_from_peer,
            "denied": dict(self.denied),
            "dropped": dict(self.dropped),
            "errors": {str(k): v for k, v in self.errors.items()},
            "requests": dict(self.requests),
        }
