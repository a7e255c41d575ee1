"""RTP stream statistics for RTCP reports (RFC 3550 6.4, A.3, A.8).

:class:`ReceiveStats` follows one incoming SSRC and produces the report block of our RRs
(or SRs); :class:`SenderStats` counts one outgoing SSRC for our SRs;
:func:`rtt_from_report_block` measures RTT from a report block about one of our streams.

Times: ``arrival_time_s``/``now_s`` are monotonic seconds from the shell (one clock per
object); NTP values are 64-bit NTP timestamps (see :mod:`sfu.rtp.ntp`).
"""

from __future__ import annotations

from sfu.rtp.ntp import ntp_middle32, ntp_short_from_seconds
from sfu.rtp.rtcp import ReportBlock, SenderReport


class ReceiveStats:
    """Loss, jitter and LSR/DLSR bookkeeping for one incoming SSRC.

    Sequence numbers are extended (unwrapped once by the caller). Duplicates count as
    received, as in RFC 3550, so cumulative loss may go negative. Jitter is updated for
    in-order packets only (as libwebrtc does), so retransmissions and reordering do not
    inflate it; timestamps may be 32-bit or extended, a wrap is handled.
    """

    __slots__ = ("received", "base_ext_seq", "max_ext_seq", "jitter", "_last_transit",
                 "_expected_prior", "_received_prior", "_lsr", "_sr_arrival_s")

    def __init__(self) -> None:
        self.received = 0
        self.base_ext_seq: int | None = None
        self.max_ext_seq = -1
        self.jitter = 0.0  # RTP timestamp units
        self._last_transit: float | None = None
        self._expected_prior = 0
        self._received_prior = 0
        self._lsr = 0
        self._sr_arrival_s: float | None = None

    def on_packet(self, ext_seq: int, rtp_ts: int, arrival_time_s: float,
                  clock_rate: int) -> None:
        self.received += 1
        base = self.base_ext_seq
        if base is None:
            self.base_ext_seq = ext_seq
            self.max_ext_seq = ext_seq
        elif ext_seq > self.max_ext_seq:
            self.max_ext_seq = ext_seq
        else:
            if ext_seq < base:
                self.base_ext_seq = ext_seq
            return
        transit = arrival_time_s * clock_rate - rtp_ts
        last = self._last_transit
        self._last_transit = transit
        if last is not None:
            d = (transit - last + 2147483648.0) % 4294967296.0 - 2147483648.0
            self.jitter += (abs(d) - self.jitter) / 16.0

    @property
    def expected(self) -> int:
        if self.base_ext_seq is None:
            return 0
        return self.max_ext_seq - self.base_ext_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (expected - received; negative with duplicates)."""
        return self.expected - self.received

    def on_sender_report(self, ntp_ts_64: int, arrival_time_s: float) -> None:
        self._lsr = ntp_middle32(ntp_ts_64)
        self._sr_arrival_s = arrival_time_s

    def report_block(self, ssrc: int, now_s: float) -> ReportBlock:
        """The report block about ``ssrc`` now; starts a new fraction-lost interval."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        lost = max(-0x800000, min(0x7FFFFF, expected - self.received))
        sr_arrival_s = self._sr_arrival_s
        dlsr = 0 if sr_arrival_s is None else ntp_short_from_seconds(now_s - sr_arrival_s)
        return ReportBlock(
            ssrc=ssrc,
            fraction_lost=fraction,
            cumulative_lost=lost,
            ext_highest_seq=max(self.max_ext_seq, 0) & 0xFFFFFFFF,
            jitter=min(int(self.jitter), 0xFFFFFFFF),
            lsr=self._lsr,
            dlsr=dlsr,
        )


class SenderStats:
    """Packet and payload-octet counts of one outgoing SSRC, for its sender reports."""

    __slots__ = ("ssrc", "packet_count", "octet_count")

    def __init__(self, ssrc: int) -> None:
        self.ssrc = ssrc
        self.packet_count = 0
        self.octet_count = 0  # payload octets: no header, no padding (RFC 3550 6.4.1)

    def on_packet(self, payload_size: int) -> None:
        self.packet_count += 1
        self.octet_count += payload_size

    def sender_report(self, now_ntp: int, now_rtp_ts: int,
                      reports: tuple[ReportBlock, ...] = ()) -> SenderReport:
        """An SR for this stream; ``now_rtp_ts`` is the RTP time matching ``now_ntp``."""
        return SenderReport(
            ssrc=self.ssrc,
            ntp_timestamp=now_ntp,
            rtp_timestamp=now_rtp_ts & 0xFFFFFFFF,
            packet_count=self.packet_count & 0xFFFFFFFF,
            octet_count=self.octet_count & 0xFFFFFFFF,
            reports=reports,
        )


def rtt_from_report_block(lsr: int, dlsr: int, arrival_ntp: int) -> float | None:
    """Round-trip time in seconds from a report block about one of our SRs.

    RFC 3550 6.4.1: RTT = A - LSR - DLSR with A the block's arrival as NTP, all in 16.16
    seconds modulo 2^32. None when the block carries no LSR (no SR received yet); 0.0
    when clock noise makes it negative.
    """
    if lsr == 0:
        return None
    rtt = (ntp_middle32(arrival_ntp) - lsr - dlsr) & 0xFFFFFFFF
    if rtt >= 0x80000000:  # negative: the peer's DLSR overshoots by a little
        return 0.0
    return rtt / 65536.0
