"""What the core asks its shell to do, as plain tuples (no per-packet objects).

``(TO_CLIENT, transport, client_addr, data)``: send ``data`` to a client on the listener named
``transport`` (for TCP/TLS, on the connection from ``client_addr``).

``(TO_PEER, relay_id, peer_addr, data)``: send ``data`` from relay socket ``relay_id`` to a peer.
"""

from __future__ import annotations

from typing import Any

from turn.stun import Addr

__all__ = ["TO_CLIENT", "TO_PEER", "Action"]

TO_CLIENT = 0
TO_PEER = 1
Action = tuple[int, Any, Addr, bytes]
