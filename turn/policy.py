"""Which peer addresses the relay may reach (secure by default).

A TURN relay inside a network is an open proxy into it unless peers are restricted, so by
default it refuses loopback, private (RFC 1918, ULA), link-local (including the cloud metadata
address 169.254.169.254), CGNAT (100.64/10), multicast, unspecified and reserved addresses,
NAT64 (64:ff9b::/96, 64:ff9b:1::/48) and 6to4 (2002::/16). An IPv4-mapped IPv6 address
(``::ffff:a.b.c.d``) is judged as the IPv4 address it maps.

Decision order: an always-allowed address (the SFU's own media address, given by the daemon)
wins; then the most specific of the operator's explicit allow and deny CIDRs (a tie denies);
then the default denied ranges. :meth:`PeerPolicy.denial` returns the reason for a refusal
(a metric label), or None.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["DEFAULT_DENIED", "PeerPolicy", "parse_network"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IP = ipaddress.IPv4Address | ipaddress.IPv6Address

# (CIDR, reason). More specific entries first where reasons differ.
DEFAULT_DENIED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "cgnat"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link_local"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "reserved"),
    ("64:ff9b::/96", "nat64"),
    ("64:ff9b:1::/48", "nat64"),
    ("2002::/16", "6to4"),
    ("fc00::/7", "private"),
    ("fe80::/10", "link_local"),
    ("fec0::/10", "private"),
    ("ff00::/8", "multicast"),
)



def parse_network(text: str) -> Network:
    """A CIDR (or a bare address, meaning /32 or /128); ValueError with the bad text."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"not an IP network: {text!r}") from None


def _unmap(ip: IP) -> IP:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class PeerPolicy:
    """Peer address policy. ``always_allow`` holds ``(ip, port)`` pairs or CIDR strings."""

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = (),
                 always_allow: Iterable[tuple[str, int] | str] = ()) -> None:
        self.allow = [parse_network(c) for c in allow]
        self.deny = [parse_network(c) for c in deny]
        self.always_nets: list[Network] = []
        self.always_addrs: set[tuple[str, int]] = set()
        for item in always_allow:
            if isinstance(item, str):
                self.always_nets.append(parse_network(item))
            else:
                ip, port = item
                self.always_addrs.add((str(_unmap(ipaddress.ip_address(ip))), int(port)))
        self._default = [(ipaddress.ip_network(c), r) for c, r in DEFAULT_DENIED]
        # IPs reachable only on the ports named in always_allow: relaying to or from any other
        # port of such an IP is refused per packet, since permissions are per IP (RFC 8656 §9).
        self.port_restricted: frozenset[str] = frozenset(
            ip for ip, port in self.always_addrs
            if self._denial_ignoring_always(ipaddress.ip_address(ip)) is not None)
        self.denial = lru_cache(maxsize=4096)(self._denial)

    def _denial_ignoring_always(self, ip: IP) -> str | None:
        best_allow = max((n.prefixlen for n in self.allow if n.version == ip.version
                          and ip in n), default=-1)
        best_deny = max((n.prefixlen for n in self.deny if n.version == ip.version
                         and ip in n), default=-1)
        if best_allow > best_deny:
            return None
        if best_deny >= 0:
            return "deny_list"
        for net, reason in self._default:
            if net.version == ip.version and ip in net:
                return reason
        return None

    def _denial(self, ip_text: str, port: int) -> str | None:
        try:
            ip = _unmap(ipaddress.ip_address(ip_text))
        except ValueError:
            return "invalid"
        if (str(ip), port) in self.always_addrs:
            return None
        if any(ip.version == n.version and ip in n for n in self.always_nets):
            return None
        return self._denial_ignoring_always(ip)

    def port_allowed(self, ip: str, port: int) -> bool:
        """Per-packet check for IPs that are allowed only on specific ports."""
        return ip not in self.port_restricted or (ip, port) in self.always_addrs
