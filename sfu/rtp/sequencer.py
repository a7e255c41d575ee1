"""Which source packet each outgoing sequence number carried, for one down-track.

A subscriber NACKs the sequence numbers it saw (the munged ones). :class:`Sequencer`
records, per outgoing 16-bit seq, the incoming extended seq it was made from (to fetch the
packet from :class:`~sfu.rtp.cache.PacketCache`), when it was sent, its outgoing timestamp
and an opaque ``codec_state`` int (e.g. the VP8 picture id and TL0PICIDX written into it),
so a retransmission is rewritten exactly like the original even after a source switch.
Storage is preallocated lists indexed by ``out_seq & (capacity - 1)``; ``push`` allocates
nothing. Pure: times are monotonic seconds passed in.
"""

from __future__ import annotations

from typing import NamedTuple

MIN_RETRANSMIT_INTERVAL_S = 0.01


class SequencerEntry(NamedTuple):
    in_ext_seq: int
    sent_at_s: float
    out_ts: int
    codec_state: int


class Sequencer:
    """Outgoing seq → (incoming ext seq, send time, last retransmit time, ts, codec state).

    ``capacity`` (a power of two, at most 65536) is how many recent outgoing packets can be
    retransmitted.
    """

    __slots__ = ("capacity", "_mask", "_out", "_in", "_sent", "_rtx", "_ts", "_codec")

    def __init__(self, capacity: int = 1024) -> None:
        if capacity < 1 or capacity & (capacity - 1) or capacity > 0x10000:
            raise ValueError(f"sequencer capacity {capacity} is not a power of two <= 65536")
        self.capacity = capacity
        self._mask = capacity - 1
        self._out = [-1] * capacity  # which 16-bit out seq the slot holds
        self._in = [0] * capacity
        self._sent = [0.0] * capacity
        self._rtx = [0.0] * capacity  # last retransmit time; -inf: never
        self._ts = [0] * capacity
        self._codec = [0] * capacity

    def push(self, out_seq16: int, in_ext_seq: int, now_s: float, out_ts: int = 0,
             codec_state: int = 0) -> None:
        """Record a packet sent as ``out_seq16`` (0..65535) at ``now_s``."""
        i = out_seq16 & self._mask
        self._out[i] = out_seq16
        self._in[i] = in_ext_seq
        self._sent[i] = now_s
        self._rtx[i] = -1e300
        self._ts[i] = out_ts
        self._codec[i] = codec_state

    def get(self, out_seq16: int) -> SequencerEntry | None:
        """What was sent as ``out_seq16``, or None if unknown or overwritten."""
        i = out_seq16 & self._mask
        if self._out[i] != out_seq16:
            return None
        return SequencerEntry(self._in[i], self._sent[i], self._ts[i], self._codec[i])

    def nacked(self, out_seqs: list[int], now_s: float, rtt_s: float) -> list[tuple[int, int]]:
        """``(in_ext_seq, out_seq16)`` to retransmit for a NACK of ``out_seqs``.

        Unknown or overwritten seqs are skipped, and so is a packet retransmitted less
        than ``max(rtt_s, 10 ms)`` ago (at most once per packet per RTT); the ones
        returned are marked as retransmitted at ``now_s``. Order follows ``out_seqs``;
        a seq repeated in the list is returned once.
        """
        interval = rtt_s if rtt_s > MIN_RETRANSMIT_INTERVAL_S else MIN_RETRANSMIT_INTERVAL_S
        mask = self._mask
        outs = self._out
        rtx = self._rtx
        ins = self._in
        result: list[tuple[int, int]] = []
        for seq in out_seqs:
            i = seq & mask
            if outs[i] == seq and now_s - rtx[i] >= interval:
                rtx[i] = now_s
                result.append((ins[i], seq))
        return result
