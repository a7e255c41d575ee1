"""Recently received RTP packets of one incoming stream, for retransmission on NACK.

:class:`PacketCache` is a ring of ``capacity`` slots indexed by the low bits of the
extended sequence number: ``put`` and ``get`` are O(1), the number of stored packets is
fixed and nothing is allocated per packet (the cache keeps a reference to the caller's
``bytes``). A slot holds the newest packet that maps to it, so a late packet never evicts
a newer one.
"""

from __future__ import annotations


class PacketCache:
    """Decrypted RTP packets by extended sequence number; the newest ``capacity`` kept.

    ``capacity`` must be a power of two.
    """

    __slots__ = ("capacity", "_mask", "_seqs", "_packets")

    def __init__(self, capacity: int = 512) -> None:
        if capacity < 1 or capacity & (capacity - 1):
            raise ValueError(f"packet cache capacity {capacity} is not a power of two")
        self.capacity = capacity
        self._mask = capacity - 1
        self._seqs = [-1 << 62] * capacity
        self._packets: list[bytes | None] = [None] * capacity

    def put(self, ext_seq: int, packet: bytes) -> None:
        """Store ``packet``, unless its slot holds a newer one (or the same seq again)."""
        i = ext_seq & self._mask
        if ext_seq > self._seqs[i]:
            self._seqs[i] = ext_seq
            self._packets[i] = packet

    def get(self, ext_seq: int) -> bytes | None:
        """The packet stored for ``ext_seq``, or None if never stored or evicted."""
        i = ext_seq & self._mask
        if self._seqs[i] == ext_seq:
            return self._packets[i]
        return None

    def clear(self) -> None:
        capacity = self.capacity
        self._seqs = [-1 << 62] * capacity
        self._packets = [None] * capacity
