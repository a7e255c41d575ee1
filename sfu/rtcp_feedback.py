"""Receiver-side RTCP towards a publisher: transport-cc feedback, Receiver Reports, REMB.

Without this feedback Chromium never ramps its send bitrate up. ``PublisherReceiver`` is the
pure core: it takes decrypted RTP/RTCP with ``now`` and says which RTCP packets are due.
``PublisherFeedback`` is its shell: it stamps arrival times and sends what is due on a timer.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from sfu import metrics
from sfu.rtp.header import RtpView, SeqUnwrapper, parse_rtp, read_transport_seq
from sfu.rtp.rtcp import (
    ReportBlock,
    RtcpPacket,
    SenderReport,
    build_remb,
    build_rr,
    parse_rtcp,
)
from sfu.rtp.stats import ReceiveStats
from sfu.rtp.twcc import TwccRecorder
from sfu.webrtc.sdp import EXT_TRANSPORT_CC, PublisherNegotiation

if TYPE_CHECKING:
    from sfu.webrtc.dtls import DtlsSrtpTransport

TWCC_INTERVAL_S = 0.075  # within the 50-100 ms Chromium's estimator expects
RR_INTERVAL_S = 1.0
REMB_MIN_BPS = 300_000
REMB_MAX_BPS = 20_000_000


class _Stream:
    __slots__ = ("unwrap", "stats", "clock_rate", "bound")

    def __init__(self, clock_rate: int) -> None:
        self.unwrap = SeqUnwrapper()
        self.stats = ReceiveStats()
        self.clock_rate = clock_rate
        #: reported in RRs only once the SFU knows which track (and layer) it is:
        #: Chromium stops sending mid/rid header extensions once an SSRC is reported.
        self.bound = False


class PublisherReceiver:
    """Per publisher transport: arrivals and loss statistics → RTCP feedback packets."""

    def __init__(self, sender_ssrc: int) -> None:
        self.sender_ssrc = sender_ssrc
        self.twcc = TwccRecorder()
        self.twcc_ext_id = 0
        self.clock_rates: dict[int, int] = {}  # payload type -> clock rate
        self.streams: dict[int, _Stream] = {}
        self.bound: set[int] = set()
        #: the report blocks of the last RR, by SSRC (connection quality reads them), and
        #: how many packets each covered (highest seq minus the previous report's)
        self.last_reports: dict[int, ReportBlock] = {}
        self.last_expected: dict[int, int] = {}
        self.media_ssrc = 0
        self.packets = 0
        self.bytes = 0
        self.malformed = 0
        self.sent = {"transport_cc": 0, "rr": 0, "remb": 0}
        self._next_twcc = 0.0
        self._next_rr = 0.0
        self._rate_window_start = 0.0
        self._rate_window_bytes = 0
        self.receive_rate_bps = 0

    def set_negotiation(self, neg: PublisherNegotiation) -> None:
        ids = {m.extension_ids.get(EXT_TRANSPORT_CC, 0) for m in neg.media.values()}
        ids.discard(0)
        self.twcc_ext_id = min(ids) if ids else 0
        for media in neg.media.values():
            for c in media.codecs:
                self.clock_rates[c.payload_type] = c.clock_rate
                if c.rtx_payload_type is not None:
                    self.clock_rates[c.rtx_payload_type] = c.clock_rate

    def on_rtp(self, data: bytes, now: float) -> tuple[RtpView, int] | None:
        """Record one packet; returns its parsed header and extended seq (None: malformed)."""
        try:
            view = parse_rtp(data)
        except ValueError:
            self.malformed += 1
            return None
        self.packets += 1
        size = len(data)
        self.bytes += size
        self._rate_window_bytes += size
        if self.twcc_ext_id:
            seq = read_transport_seq(data, self.twcc_ext_id)
            if seq is not None:
                self.twcc.on_packet(seq, int(now * 1_000_000))
        stream = self.streams.get(view.ssrc)
        if stream is None:
            stream = self.streams[view.ssrc] = _Stream(
                self.clock_rates.get(view.payload_type, 90000))
            stream.bound = view.ssrc in self.bound
        ext_seq = stream.unwrap.unwrap(view.seq)
        stream.stats.on_packet(ext_seq, view.timestamp, now, stream.clock_rate)
        return view, ext_seq

    def bind(self, ssrc: int) -> None:
        """The SSRC is known (its track and layer): receiver reports may name it."""
        self.bound.add(ssrc)
        stream = self.streams.get(ssrc)
        if stream is not None:
            stream.bound = True
        if not self.media_ssrc:
            self.media_ssrc = ssrc

    def on_rtcp(self, data: bytes, now: float) -> list[RtcpPacket]:
        """Record Sender Reports; returns the parsed packets ([] if malformed)."""
        try:
            packets = parse_rtcp(data)
        except ValueError:
            self.malformed += 1
            return []
        for pkt in packets:
            if isinstance(pkt, SenderReport):
                stream = self.streams.get(pkt.ssrc)
                if stream is not None:
                    stream.stats.on_sender_report(pkt.ntp_timestamp, now)
        return packets

    def next_due(self) -> float:
        """When :meth:`due` has something to send next (monotonic seconds)."""
        if self.twcc_ext_id:
            return min(self._next_twcc, self._next_rr)
        return self._next_rr

    def due(self, now: float) -> list[bytes]:
        """RTCP packets to send now (transport-cc every 75 ms; RR and REMB every second)."""
        out: list[bytes] = []
        if self.twcc_ext_id and now >= self._next_twcc:
            self._next_twcc = now + TWCC_INTERVAL_S
            fb = self.twcc.feedback(int(now * 1_000_000), self.sender_ssrc, self.media_ssrc)
            self.sent["transport_cc"] += len(fb)
            out += fb
        if now >= self._next_rr:
            self._next_rr = now + RR_INTERVAL_S
            elapsed = now - self._rate_window_start
            if elapsed > 0 and self._rate_window_start:
                self.receive_rate_bps = int(self._rate_window_bytes * 8 / elapsed)
            self._rate_window_start, self._rate_window_bytes = now, 0
            reported = [ssrc for ssrc, s in self.streams.items() if s.bound]
            if reported:
                blocks = [self.streams[ssrc].stats.report_block(ssrc, now) for ssrc in reported]
                previous = self.last_reports
                self.last_expected = {
                    b.ssrc: (b.ext_highest_seq - previous[b.ssrc].ext_highest_seq
                             if b.ssrc in previous else 0) & 0xFFFFFFFF for b in blocks}
                self.last_reports = {b.ssrc: b for b in blocks}
                for i in range(0, len(blocks), 31):  # at most 31 report blocks per RR
                    out.append(build_rr(self.sender_ssrc, blocks[i:i + 31]))
                    self.sent["rr"] += 1
                if not self.twcc_ext_id:
                    # no transport-cc: a REMB derived from what arrives, with headroom to grow
                    remb = min(REMB_MAX_BPS, max(REMB_MIN_BPS,
                                                 int(self.receive_rate_bps * 1.5) + 100_000))
                    out.append(build_remb(self.sender_ssrc, remb, reported))
                    self.sent["remb"] += 1
        return out


class PublisherFeedback:
    """Shell: feeds the core with arrival times and sends what it says is due."""

    def __init__(self, sender_ssrc: int) -> None:
        self.core = PublisherReceiver(sender_ssrc)
        self._transport: DtlsSrtpTransport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def set_negotiation(self, neg: PublisherNegotiation) -> None:
        self.core.set_negotiation(neg)

    def attach(self, transport: DtlsSrtpTransport) -> None:
        self._transport = transport
        self._tick()

    def detach(self) -> None:
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        transport = self._transport
        if transport is None:
            return
        core = self.core
        reports = core.sent["rr"]
        for packet in core.due(time.monotonic()):
            try:
                transport.send_rtcp(packet)
            except Exception:  # transport closing: stop feeding it
                self.detach()
                return
        if core.sent["rr"] != reports:  # a receiver report went out: its figures
            for ssrc, block in core.last_reports.items():
                stream = core.streams.get(ssrc)
                metrics.packet_loss.labels("up").observe(block.fraction_lost / 256)
                metrics.jitter.labels("up").observe(
                    block.jitter / (stream.clock_rate if stream is not None else 90000))
        # wake exactly when the next feedback is due, not on a polling interval
        delay = max(0.005, self.core.next_due() - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._tick)
