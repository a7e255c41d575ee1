"""sfu.rtp.stats and sfu.rtp.ntp: RFC 3550 reception statistics, SR helpers, NTP time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.rtp.ntp import (
    NTP_UNIX_OFFSET_S,
    ntp_from_unix,
    ntp_middle32,
    ntp_short_from_seconds,
    seconds_from_ntp_short,
    unix_from_ntp,
)
from sfu.rtp.rtcp import ReceiverReport, ReportBlock, SenderReport, build_rr, parse_rtcp
from sfu.rtp.stats import ReceiveStats, SenderStats, rtt_from_report_block

VIDEO_HZ = 90_000


def feed(stats: ReceiveStats, seqs: list[int], *, start_s: float = 0.0) -> None:
    for seq in seqs:  # 50 packets/s, perfectly paced: no jitter
        stats.on_packet(seq, seq * 1_800, start_s + seq * 0.02, VIDEO_HZ)


# --- ReceiveStats ------------------------------------------------------------------------


def test_loss_and_fraction_lost_per_interval() -> None:
    s = ReceiveStats()
    feed(s, [i for i in range(100) if i not in (5, 6, 50)])
    assert (s.expected, s.received, s.lost) == (100, 97, 3)
    block = s.report_block(0xAB, now_s=2.0)
    assert (block.ssrc, block.fraction_lost, block.cumulative_lost) == (0xAB, 3 * 256 // 100, 3)
    assert block.ext_highest_seq == 99 and block.jitter == 0

    feed(s, list(range(100, 200)))
    block = s.report_block(0xAB, now_s=4.0)
    assert (block.fraction_lost, block.cumulative_lost) == (0, 3)

    feed(s, list(range(200, 300)) + [250, 251])  # duplicates: more received than expected
    block = s.report_block(0xAB, now_s=6.0)
    assert (block.fraction_lost, block.cumulative_lost) == (0, 1)

    block = s.report_block(0xAB, now_s=8.0)  # nothing new
    assert (block.fraction_lost, block.cumulative_lost) == (0, 1)


def test_everything_lost_in_an_interval() -> None:
    s = ReceiveStats()
    feed(s, [0])
    s.report_block(1, 1.0)
    feed(s, [1000])
    assert s.report_block(1, 2.0).fraction_lost == 999 * 256 // 1000


def test_extended_highest_seq_carries_cycles() -> None:
    s = ReceiveStats()
    feed(s, [65534, 65535, 65536, 65537])  # the caller unwrapped them
    block = s.report_block(1, 0.0)
    assert block.ext_highest_seq == 0x1_0001 and block.cumulative_lost == 0


def test_packet_older_than_the_first_moves_the_base() -> None:
    s = ReceiveStats()
    feed(s, [10, 11, 9])
    assert (s.expected, s.received, s.lost) == (3, 3, 0)


def test_cumulative_lost_is_clamped_to_24_bits() -> None:
    s = ReceiveStats()
    s.on_packet(0, 0, 0.0, VIDEO_HZ)
    s.on_packet(20_000_000, 0, 1.0, VIDEO_HZ)
    assert s.report_block(1, 1.0).cumulative_lost == 0x7FFFFF
    s = ReceiveStats()
    for _ in range(10):
        s.on_packet(5, 0, 0.0, VIDEO_HZ)
    assert s.report_block(1, 1.0).cumulative_lost == -9


def test_jitter_follows_rfc3550_a8() -> None:
    s = ReceiveStats()
    n = 40
    for i in range(n):  # every other packet 1 ms late: |D| = 90 RTP units each time
        s.on_packet(i, i * 1_800, i * 0.02 + (0.001 if i % 2 else 0.0), VIDEO_HZ)
    expected = 90 * (1 - (15 / 16) ** (n - 1))
    assert s.jitter == pytest.approx(expected)
    assert s.report_block(1, 1.0).jitter == int(expected)


def test_jitter_ignores_reordered_packets_and_survives_timestamp_wrap() -> None:
    s = ReceiveStats()
    ts0 = 0xFFFF_FFFF - 3_600
    for i in (0, 1, 2, 3, 4, 6, 5, 7):  # 32-bit timestamps wrapping after packet 2
        s.on_packet(i, (ts0 + i * 1_800) & 0xFFFF_FFFF, 100.0 + i * 0.02, VIDEO_HZ)
    assert s.jitter == pytest.approx(0.0, abs=1e-6)


def test_lsr_and_dlsr() -> None:
    s = ReceiveStats()
    feed(s, [1, 2])
    assert (s.report_block(1, 1.0).lsr, s.report_block(1, 1.0).dlsr) == (0, 0)
    s.on_sender_report(0xAAAA_BBBB_CCCC_DDDD, arrival_time_s=10.0)
    block = s.report_block(1, now_s=12.5)
    assert block.lsr == 0xBBBB_CCCC
    assert block.dlsr == int(2.5 * 65536)


def test_report_block_goes_into_an_rr() -> None:
    s = ReceiveStats()
    feed(s, [0, 1, 3])
    s.on_sender_report(ntp_from_unix(1_700_000_000.25), 0.5)
    block = s.report_block(0x1234, now_s=0.75)
    assert parse_rtcp(build_rr(0x99, [block])) == [ReceiverReport(0x99, (block,))]


# --- SenderStats and RTT -----------------------------------------------------------------


def test_sender_stats_make_a_sender_report() -> None:
    s = SenderStats(0x55)
    for size in (100, 200, 1200):
        s.on_packet(size)
    ntp = ntp_from_unix(1_700_000_000.5)
    sr = s.sender_report(ntp, 0x1_0000_0005)
    assert sr == SenderReport(0x55, ntp, 5, 3, 1500)
    assert parse_rtcp(sr.to_bytes()) == [sr]
    s.octet_count = (1 << 32) + 7  # counts wrap on the wire (RFC 3550 6.4.1)
    assert s.sender_report(ntp, 0).octet_count == 7


def test_rtt_rfc3550_example() -> None:
    # RFC 3550 6.4.1, figure 2: A = 0xb710:8000, LSR = 0xb705:2000, DLSR = 0x0005:4000
    arrival_ntp = 0xB710_8000 << 16
    assert rtt_from_report_block(0xB705_2000, 0x0005_4000, arrival_ntp) == 6.125


def test_rtt_edge_cases() -> None:
    assert rtt_from_report_block(0, 0, 1 << 40) is None  # no SR received by the peer
    arrival_ntp = 0x0001_0000 << 16
    assert rtt_from_report_block(0x0000_F000, 0x0000_2000, arrival_ntp) == 0.0  # negative
    # middle-32 values wrap every 65536 s
    assert rtt_from_report_block(0xFFFF_0000, 0x0000_8000, 0x0000_8000 << 16) == 1.0


def test_rtt_round_trip_through_stats() -> None:
    sent_unix_s = 1_700_000_000.0
    receiver = ReceiveStats()
    feed(receiver, [0])
    receiver.on_sender_report(ntp_from_unix(sent_unix_s), arrival_time_s=50.020)
    block = receiver.report_block(1, now_s=50.120)  # 100 ms in the peer
    rtt_s = rtt_from_report_block(block.lsr, block.dlsr, ntp_from_unix(sent_unix_s + 0.160))
    assert rtt_s == pytest.approx(0.060, abs=1e-4)


# --- NTP ---------------------------------------------------------------------------------


def test_ntp_conversions() -> None:
    assert ntp_from_unix(0) == NTP_UNIX_OFFSET_S << 32
    assert ntp_from_unix(1.5) == ((NTP_UNIX_OFFSET_S + 1) << 32) | 0x8000_0000
    assert ntp_middle32(0x1122_3344_5566_7788) == 0x3344_5566
    assert ntp_short_from_seconds(1.25) == 0x0001_4000
    assert ntp_short_from_seconds(-1.0) == 0
    assert ntp_short_from_seconds(1e9) == 0xFFFF_FFFF
    assert seconds_from_ntp_short(0x0005_4000) == 5.25


@pytest.mark.parametrize("t_s", [0.0, 1_700_000_000.123456, 2_085_978_495.9, 2_085_978_496.0,
                                 2_100_000_000.75, 4_000_000_000.0])
def test_ntp_round_trip_across_the_2036_era(t_s: float) -> None:
    ntp = ntp_from_unix(t_s)
    assert 0 <= ntp < 1 << 64
    assert unix_from_ntp(ntp) == pytest.approx(t_s, abs=1e-6)


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_ntp_round_trip_any_time(t_s: float) -> None:
    assert unix_from_ntp(ntp_from_unix(t_s)) == pytest.approx(t_s, abs=1e-6)


def test_report_block_fields_are_wire_ready() -> None:
    s = ReceiveStats()
    feed(s, list(range(10)))
    block = s.report_block(7, 1.0)
    assert isinstance(block, ReportBlock)
    build_rr(1, [block])  # every field in range
