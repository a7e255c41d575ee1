"""Relay port choice within the configured range, and the socket hook the shell implements.

The core decides which port to use (random within ``[min_port, max_port]``, even for EVEN-PORT,
an even/odd pair for EVEN-PORT with the R bit) and asks :class:`RelaySockets` to bind it,
synchronously, before it answers the Allocate: the relayed address it returns is always a
bound socket. A port another process holds just fails to bind and the next one is tried (pion's
``RelayAddressGenerator`` plays the same role).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Protocol

__all__ = ["MAX_BIND_TRIES", "PortPool", "RelaySockets"]

MAX_BIND_TRIES = 64


class RelaySockets(Protocol):
    """Opens and closes the UDP relay sockets; ``relay_id`` names the socket to the core."""

    def open(self, relay_id: int, ip: str, port: int) -> bool:
        """Bind a UDP socket to ``(ip, port)`` and start reading it; False if it cannot."""
        ...

    def close(self, relay_id: int) -> None:
        ...


class PortPool:
    """Ports in use per relay IP; picks and binds free ones."""

    def __init__(self, sockets: RelaySockets, min_port: int, max_port: int,
                 rng: random.Random) -> None:
        if not 1 <= min_port <= max_port <= 65535:
            raise ValueError(f"bad relay port range {min_port}-{max_port}")
        self.sockets = sockets
        self.min_port = min_port
        self.max_port = max_port
        self._rng = rng
        self._used: dict[str, set[int]] = {}

    def in_use(self, ip: str) -> int:
        return len(self._used.get(ip, ()))

    def _candidates(self, ip: str, step: int) -> Iterator[int]:
        used = self._used.setdefault(ip, set())
        first = self.min_port + (-self.min_port % step)
        count = (self.max_port - first) // step + 1 if first <= self.max_port else 0
        if count <= 0:
            return
        start = self._rng.randrange(count)
        for i in range(count):
            port = first + ((start + i) % count) * step
            if port not in used:
                yield port

    def open(self, relay_id: int, ip: str, even: bool = False) -> int | None:
        """Bind one port (an even one if asked); None when none could be bound."""
        used = self._used.setdefault(ip, set())
        for tries, port in enumerate(self._candidates(ip, 2 if even else 1)):
            if tries >= MAX_BIND_TRIES:
                break
            if self.sockets.open(relay_id, ip, port):
                used.add(port)
                return port
        return None

    def open_pair(self, relay_id: int, reserve_id: int, ip: str) -> int | None:
        """Bind an even port P for ``relay_id`` and P+1 for ``reserve_id``; None if impossible."""
        used = self._used.setdefault(ip, set())
        for tries, port in enumerate(self._candidates(ip, 2)):
            if tries >= MAX_BIND_TRIES:
                break
            if port + 1 > self.max_port or port + 1 in used:
                continue
            if not self.sockets.open(relay_id, ip, port):
                continue
            if self.sockets.open(reserve_id, ip, port + 1):
                used.update((port, port + 1))
                return port
            self.sockets.close(relay_id)
        return None

    def release(self, relay_id: int, ip: str, port: int) -> None:
        self.sockets.close(relay_id)
        self._used.get(ip, set()).discard(port)
