"""Transport-cc feedback for one publisher transport (the receiver side of send-side BWE).

:class:`TwccRecorder` records each incoming packet's transport-wide sequence number and
arrival time, and :meth:`TwccRecorder.feedback` turns what arrived since the previous
feedback into RTCP transport-cc packets (draft-holmer-rmcat-transport-wide-cc-extensions-01),
as libwebrtc's periodic receiver does: every sequence number from the last reported one up
to the highest received gets a status, gaps reported as not received.

A packet that arrives after its sequence number was reported missing is reported again,
received, in a packet of its own range; such ranges are split so that no packet already
reported received is repeated. The shell calls :meth:`~TwccRecorder.feedback` on a timer
(libwebrtc: every 50-250 ms depending on bitrate) and sends what it returns.
"""

from __future__ import annotations

from sfu.rtp.rtcp import TransportCcEncoder


class TwccRecorder:
    """Arrivals of one transport's packets → transport-cc feedback packets.

    ``history_us``: how long reported arrivals are remembered so that late packets can be
    reported; later ones are ignored. ``max_feedback_bytes`` bounds each RTCP packet.
    """

    __slots__ = ("_highest", "_next_seq", "_started", "_arrivals", "_pending", "_late",
                 "_floor", "_fb_pkt_count", "history_us", "max_feedback_bytes", "max_late_gap")

    def __init__(self, *, history_us: int = 500_000, max_feedback_bytes: int = 1200,
                 max_late_gap: int = 16) -> None:
        self.history_us = history_us
        self.max_feedback_bytes = max_feedback_bytes
        self.max_late_gap = max_late_gap
        self._highest: int | None = None  # highest extended transport seq received
        self._next_seq = 0  # first extended seq not yet covered by a feedback
        self._started = False  # a feedback has been produced
        self._arrivals: dict[int, int] = {}  # extended seq -> arrival time (µs)
        self._pending: list[int] = []  # received, seq >= _next_seq: for the next feedback
        self._late: list[int] = []  # reported missing, then arrived
        self._floor = -(1 << 62)  # late packets below this are too old to report
        self._fb_pkt_count = 0

    @property
    def fb_pkt_count(self) -> int:
        """The feedback packet count the next packet will carry (8-bit)."""
        return self._fb_pkt_count

    def on_packet(self, transport_seq: int, arrival_time_us: int) -> None:
        """Record a packet's 16-bit transport-wide seq and its arrival time (µs)."""
        highest = self._highest
        if highest is None:
            ext = self._highest = self._next_seq = transport_seq
        else:
            delta = (transport_seq - highest) & 0xFFFF
            if delta >= 0x8000:
                ext = highest + delta - 0x10000
            else:
                ext = highest + delta
                self._highest = ext
        arrivals = self._arrivals
        if ext in arrivals:
            return  # duplicate: keep the first arrival
        if ext >= self._next_seq:
            self._pending.append(ext)
        elif not self._started:
            self._next_seq = ext  # reordered before the first feedback
            self._pending.append(ext)
        elif ext < self._floor:
            return
        else:
            self._late.append(ext)
        arrivals[ext] = arrival_time_us

    def feedback(self, now_us: int, sender_ssrc: int, media_ssrc: int) -> list[bytes]:
        """RTCP transport-cc packets for everything not yet reported; [] if nothing new.

        ``now_us`` (same clock as the arrival times) only ages the history kept for
        late packets.
        """
        out: list[bytes] = []
        arrivals = self._arrivals
        if self._late:
            late = sorted(set(self._late))
            self._late = []
            late_set = set(late)
            run_start = late[0]
            prev = late[0]
            for seq in late[1:]:
                if seq - prev > self.max_late_gap or any(
                    s in arrivals and s not in late_set for s in range(prev + 1, seq)
                ):
                    self._encode_late(run_start, prev, sender_ssrc, media_ssrc, out)
                    run_start = seq
                prev = seq
            self._encode_late(run_start, prev, sender_ssrc, media_ssrc, out)
        highest = self._highest
        next_seq = self._next_seq
        if highest is not None and highest >= next_seq:
            received = sorted(self._pending)
            self._pending = []
            self._encode(next_seq, received, sender_ssrc, media_ssrc, out)
            self._next_seq = highest + 1
            self._started = True
        self._prune(now_us)
        return out

    def _encode_late(self, first: int, last: int, sender_ssrc: int, media_ssrc: int,
                     out: list[bytes]) -> None:
        arrivals = self._arrivals
        received = [s for s in range(first, last + 1) if s in arrivals]
        self._encode(first, received, sender_ssrc, media_ssrc, out)

    def _encode(self, first: int, received: list[int], sender_ssrc: int, media_ssrc: int,
                out: list[bytes]) -> None:
        """Feedback covering ``first`` up to the last of ``received`` (sorted ext seqs)."""
        arrivals = self._arrivals
        encoder = TransportCcEncoder(first, max_size_bytes=self.max_feedback_bytes)
        seq = first
        for r in received:
            while seq < r:  # the gap before r: not received
                added = encoder.add_missing(r - seq)
                seq += added
                if seq < r:
                    self._flush(encoder, sender_ssrc, media_ssrc, out)
                    encoder = TransportCcEncoder(seq, max_size_bytes=self.max_feedback_bytes)
            if not encoder.add_received(arrivals[r]):
                self._flush(encoder, sender_ssrc, media_ssrc, out)
                encoder = TransportCcEncoder(r, max_size_bytes=self.max_feedback_bytes)
                encoder.add_received(arrivals[r])  # always fits an empty packet
            seq = r + 1
        self._flush(encoder, sender_ssrc, media_ssrc, out)

    def _flush(self, encoder: TransportCcEncoder, sender_ssrc: int, media_ssrc: int,
               out: list[bytes]) -> None:
        if encoder.status_count:
            out.append(encoder.to_bytes(sender_ssrc, media_ssrc, self._fb_pkt_count))
            self._fb_pkt_count = (self._fb_pkt_count + 1) & 0xFF

    def _prune(self, now_us: int) -> None:
        """Forget reported arrivals older than the history window.

        Arrivals are stored in arrival order, so the old ones are at the front: the walk
        stops at the first one to keep, and the cost is proportional to what is dropped.
        """
        cutoff_us = now_us - self.history_us
        next_seq = self._next_seq
        arrivals = self._arrivals
        drop = []
        for seq, arrival_us in arrivals.items():
            if arrival_us >= cutoff_us or seq >= next_seq:
                break
            drop.append(seq)
        if drop:
            for seq in drop:
                del arrivals[seq]
            self._floor = max(self._floor, max(drop) + 1)
