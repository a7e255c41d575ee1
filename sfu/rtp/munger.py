"""Sequence number and timestamp rewriting for one down-track (subscriber x track).

:class:`RtpMunger` maps a source's extended sequence numbers and timestamps to the
subscriber's by subtracting offsets (``out = in - offset``; never a counter), so
reordered and retransmitted packets keep their place. The offsets change only when

- the SFU drops a packet on purpose (:meth:`RtpMunger.drop`: padding-only, unselected
  layer): the sequence offset grows by one so the subscriber sees no gap;
- the source changes (:meth:`RtpMunger.switch_source`: new simulcast layer, republish,
  unmute after a long mute): the next packet continues at ``last_out_seq + 1`` and at a
  timestamp advanced by the wall-clock time since the last forwarded packet.

Packets that belong to before the last switch are refused (``translate`` returns None).
Pure: time comes in as ``now_s`` (monotonic seconds).
"""

from __future__ import annotations

# Drops remembered for reordered packets: a packet older than the oldest remembered drop
# is refused. Consecutive drops share one entry, so this is rarely reached.
MAX_DROP_RANGES = 64

_NEVER = -(1 << 62)


class RtpMunger:
    """Incoming extended seq/ts → outgoing 16-bit seq / 32-bit ts for one subscriber.

    ``last_out_seq``/``last_out_ts`` are the highest extended outgoing values used so far
    (None before the first forwarded packet); ``last_forwarded_at_s`` is when the newest
    in-order packet was forwarded. Before any :meth:`switch_source` the mapping is the
    identity (the subscriber sees the source's own numbers).
    """

    __slots__ = ("_seq_offset", "_ts_offset", "_highest_in", "_floor_in", "_floor_offset",
                 "_drops", "_last_out_seq", "_last_out_ts", "last_forwarded_at_s",
                 "late_drops")

    def __init__(self) -> None:
        self._seq_offset = 0  # extended in seq - extended out seq, for seqs > the last drop
        self._ts_offset = 0
        self._highest_in = _NEVER  # highest incoming ext seq forwarded or dropped
        self._floor_in = _NEVER  # packets below this (before the switch) are refused
        self._floor_offset = 0  # seq offset for packets from the floor to the first drop
        # drop ranges since the floor, oldest first: (first dropped, first after, offset after)
        self._drops: list[tuple[int, int, int]] = []
        self._last_out_seq = _NEVER
        self._last_out_ts = _NEVER
        self.last_forwarded_at_s = 0.0
        self.late_drops = 0  # reordered packets dropped after their slot was taken

    @property
    def last_out_seq(self) -> int | None:
        return None if self._last_out_seq == _NEVER else self._last_out_seq

    @property
    def last_out_ts(self) -> int | None:
        return None if self._last_out_ts == _NEVER else self._last_out_ts

    @property
    def seq_offset(self) -> int:
        """The current sequence offset (incoming ext seq - outgoing ext seq)."""
        return self._seq_offset

    @property
    def ts_offset(self) -> int:
        return self._ts_offset

    def translate(self, ext_seq: int, ext_ts: int, now_s: float) -> tuple[int, int] | None:
        """``(out_seq16, out_ts32)`` for a forwarded packet, or None to drop it.

        None means the packet is older than the last source switch (or than the oldest
        remembered drop), or it is a packet that was dropped before.
        """
        if ext_seq > self._highest_in:
            self._highest_in = ext_seq
            out_seq = ext_seq - self._seq_offset
            out_ts = ext_ts - self._ts_offset
            self._last_out_seq = out_seq
            if out_ts > self._last_out_ts:
                self._last_out_ts = out_ts
            self.last_forwarded_at_s = now_s
            return out_seq & 0xFFFF, out_ts & 0xFFFFFFFF
        offset = self._offset_for(ext_seq)
        if offset is None:
            return None
        out_ts = ext_ts - self._ts_offset
        if out_ts > self._last_out_ts:
            self._last_out_ts = out_ts
        return (ext_seq - offset) & 0xFFFF, out_ts & 0xFFFFFFFF

    def _offset_for(self, ext_seq: int) -> int | None:
        """The seq offset in force for a reordered packet, None if it must be refused."""
        if ext_seq < self._floor_in:
            return None
        drops = self._drops
        i = len(drops) - 1
        while i >= 0:
            first, after, offset = drops[i]
            if ext_seq >= after:
                return offset
            if ext_seq >= first:
                return None  # dropped on purpose before: its slot is gone
            i -= 1
        return self._floor_offset

    def drop(self, ext_seq: int) -> None:
        """The SFU does not forward this packet: close the gap it would leave.

        A packet newer than everything seen shifts the offset for all later packets
        (packets still missing before it keep the old offset, so they fit in when they
        arrive). A reordered packet's slot is already taken: it is counted in
        ``late_drops`` and leaves a gap.
        """
        if ext_seq <= self._highest_in:
            if self._offset_for(ext_seq) is not None:
                self.late_drops += 1
            return
        self._highest_in = ext_seq
        offset = self._seq_offset + 1
        self._seq_offset = offset
        drops = self._drops
        if drops and drops[-1][1] == ext_seq:  # extends the previous drop range
            drops[-1] = (drops[-1][0], ext_seq + 1, offset)
            return
        drops.append((ext_seq, ext_seq + 1, offset))
        if len(drops) > MAX_DROP_RANGES:
            _, after, oldest_offset = drops.pop(0)
            self._floor_in = after
            self._floor_offset = oldest_offset

    def switch_source(self, ext_seq: int, ext_ts: int, now_s: float, clock_rate: int) -> None:
        """The next packet, ``(ext_seq, ext_ts)``, is the first of a new source.

        It will go out as ``last_out_seq + 1`` with timestamp ``last_out_ts +
        max(1, round((now_s - last_forwarded_at_s) * clock_rate))``; ``ext_seq``/``ext_ts``
        are in the new source's extended numbering. Packets before ``ext_seq`` are
        refused from now on. Before anything was forwarded the mapping stays the identity.
        Call :meth:`translate` for the packet afterwards.
        """
        if self._last_out_seq == _NEVER:
            seq_offset = ts_offset = 0
        else:
            step = round((now_s - self.last_forwarded_at_s) * clock_rate)
            if step < 1:
                step = 1
            seq_offset = ext_seq - (self._last_out_seq + 1)
            ts_offset = ext_ts - (self._last_out_ts + step)
        self._seq_offset = seq_offset
        self._ts_offset = ts_offset
        self._highest_in = ext_seq - 1
        self._floor_in = ext_seq
        self._floor_offset = seq_offset
        self._drops = []
