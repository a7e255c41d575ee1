"""sfu.rtp.twcc.TwccRecorder: arrivals in, transport-cc feedback packets out."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.rtp.rtcp import TransportCc, parse_rtcp
from sfu.rtp.twcc import TwccRecorder

SENDER, MEDIA = 0x5F0, 0xABC


def parsed(packets: list[bytes], max_bytes: int = 1200) -> list[TransportCc]:
    out = []
    for data in packets:
        assert len(data) <= max_bytes
        [fb] = parse_rtcp(data)
        assert isinstance(fb, TransportCc)
        assert (fb.sender_ssrc, fb.media_ssrc) == (SENDER, MEDIA)
        out.append(fb)
    return out


def statuses(packets: list[bytes]) -> list[tuple[int, int | None]]:
    return [s for fb in parsed(packets) for s in fb.packets]


def test_in_order_packets_in_one_feedback() -> None:
    r = TwccRecorder()
    for i in range(10):
        r.on_packet(10 + i, 1_000_000 + 5_000 * i + 99)
    [fb] = parsed(r.feedback(1_100_000, SENDER, MEDIA))
    assert (fb.base_seq, fb.status_count, fb.fb_pkt_count) == (10, 10, 0)
    assert fb.reference_time == 1_000_099 // 64_000  # 64 ms units
    assert fb.packets == tuple((10 + i, 1_000_000 + 5_000 * i) for i in range(10))  # 250 µs
    assert r.feedback(1_200_000, SENDER, MEDIA) == []  # nothing new
    r.on_packet(20, 1_300_000)
    [fb] = parsed(r.feedback(1_300_000, SENDER, MEDIA))
    assert (fb.base_seq, fb.fb_pkt_count, fb.packets) == (20, 1, ((20, 1_300_000),))
    assert r.fb_pkt_count == 2


def test_nothing_received_nothing_sent() -> None:
    assert TwccRecorder().feedback(0, SENDER, MEDIA) == []


def test_gaps_are_reported_not_received() -> None:
    r = TwccRecorder()
    for seq in (1, 2, 5):
        r.on_packet(seq, 1_000 * seq)
    assert statuses(r.feedback(10_000, SENDER, MEDIA)) == [
        (1, 1_000), (2, 2_000), (3, None), (4, None), (5, 5_000)]


def test_wrap_around_and_reordering_before_the_first_feedback() -> None:
    r = TwccRecorder()
    for seq, t in ((65535, 2_000), (65534, 1_000), (1, 4_000), (0, 3_000)):
        r.on_packet(seq, t)
    assert statuses(r.feedback(10_000, SENDER, MEDIA)) == [
        (65534, 1_000), (65535, 2_000), (0, 3_000), (1, 4_000)]


def test_fb_pkt_count_wraps_at_256() -> None:
    r = TwccRecorder()
    for i in range(300):
        r.on_packet(i, 1_000 * i)
        [fb] = parsed(r.feedback(1_000 * i, SENDER, MEDIA))
        assert fb.fb_pkt_count == i % 256


def test_duplicates_keep_the_first_arrival() -> None:
    r = TwccRecorder()
    r.on_packet(7, 1_000)
    r.on_packet(7, 9_000)
    r.on_packet(8, 2_000)
    assert statuses(r.feedback(10_000, SENDER, MEDIA)) == [(7, 1_000), (8, 2_000)]
    r.on_packet(7, 11_000)  # already reported: not again
    assert r.feedback(20_000, SENDER, MEDIA) == []


def test_late_packet_is_reported_alone_without_repeating_acked_ones() -> None:
    r = TwccRecorder()
    for seq in (1, 2, 4, 5):
        r.on_packet(seq, 1_000 * seq)
    assert statuses(r.feedback(6_000, SENDER, MEDIA)) == [
        (1, 1_000), (2, 2_000), (3, None), (4, 4_000), (5, 5_000)]
    r.on_packet(3, 7_000)  # reported missing, then arrived
    r.on_packet(6, 8_000)
    late, new = parsed(r.feedback(9_000, SENDER, MEDIA))
    assert (late.base_seq, late.fb_pkt_count, late.packets) == (3, 1, ((3, 7_000),))
    assert (new.base_seq, new.fb_pkt_count, new.packets) == (6, 2, ((6, 8_000),))


def test_late_runs_split_at_acked_packets() -> None:
    r = TwccRecorder()
    for seq in (1, 2, 5, 6, 9):  # 3, 4, 7, 8 missing
        r.on_packet(seq, 1_000 * seq)
    r.feedback(10_000, SENDER, MEDIA)
    for seq in (3, 4, 8):
        r.on_packet(seq, 20_000 + seq)
    first, second = parsed(r.feedback(30_000, SENDER, MEDIA))
    assert first.packets == ((3, 20_000), (4, 20_000))
    assert second.packets == ((8, 20_000),)  # 5 and 6 were acked: not repeated


def test_late_run_spans_still_missing_packets() -> None:
    r = TwccRecorder()
    for seq in (1, 2, 8):
        r.on_packet(seq, 1_000 * seq)
    r.feedback(10_000, SENDER, MEDIA)
    r.on_packet(7, 20_000)
    r.on_packet(3, 21_000)
    [fb] = parsed(r.feedback(30_000, SENDER, MEDIA))
    assert fb.packets == ((3, 21_000), (4, None), (5, None), (6, None), (7, 20_000))


def test_late_packet_beyond_the_history_is_ignored() -> None:
    r = TwccRecorder(history_us=500_000)
    r.on_packet(1, 0)
    r.on_packet(3, 1_000)
    r.feedback(2_000, SENDER, MEDIA)
    r.on_packet(2, 100_000)  # still within history: reported
    assert statuses(r.feedback(200_000, SENDER, MEDIA)) == [(2, 100_000)]
    r.on_packet(4, 300_000)
    r.feedback(2_000_000, SENDER, MEDIA)  # ages out 1..4
    r.on_packet(0, 2_100_000)
    assert r.feedback(2_200_000, SENDER, MEDIA) == []


def test_a_long_arrival_gap_starts_a_new_packet() -> None:
    r = TwccRecorder()
    r.on_packet(1, 1_000_000)
    r.on_packet(2, 1_000_000 + 8_191_750)  # +32767 ticks: still one packet
    r.on_packet(3, 1_000_000 + 8_191_750 + 8_192_000)  # +32768 ticks: a new one
    a, b = parsed(r.feedback(20_000_000, SENDER, MEDIA))
    assert a.packets == ((1, 1_000_000), (2, 9_191_750))
    assert b.packets == ((3, 17_383_750),) and b.reference_time == 17_383_750 // 64_000
    assert (a.fb_pkt_count, b.fb_pkt_count) == (0, 1)


def test_huge_sequence_gaps_cost_a_few_chunks() -> None:
    r = TwccRecorder()
    r.on_packet(1, 0)
    r.on_packet(30_001, 1_000)  # unwraps forward: 29999 missing in between
    [fb] = parsed(r.feedback(2_000, SENDER, MEDIA))
    assert fb.status_count == 30_001
    assert len(fb.to_bytes()) <= 36


def test_feedback_is_split_to_fit_the_byte_budget() -> None:
    r = TwccRecorder(max_feedback_bytes=100)
    t = 0
    for i in range(2_000):
        t += 100_000 if i % 3 == 0 else 1_000  # mixes large and small deltas
        if i % 7 != 3:
            r.on_packet(i & 0xFFFF, t)
    packets = r.feedback(t, SENDER, MEDIA)
    fbs = parsed(packets, max_bytes=100)
    assert len(fbs) > 20
    assert [fb.fb_pkt_count for fb in fbs] == list(range(len(fbs)))
    seqs = [seq for fb in fbs for seq, _ in fb.packets]
    assert seqs == list(range(2_000))  # contiguous, no overlap
    received = {seq for fb in fbs for seq, arrival in fb.packets if arrival is not None}
    assert received == {i for i in range(2_000) if i % 7 != 3}


events = st.lists(
    st.tuples(st.integers(0, 30),  # arrival step (ms)
              st.booleans(),  # dropped
              st.integers(0, 6),  # reorder: swap with a neighbour this far ahead
              st.booleans()),  # a feedback after this packet
    min_size=1, max_size=300)


@settings(max_examples=400)
@given(start=st.integers(0, 0xFFFF), plan=events, dup=st.integers(0, 299),
       history_ms=st.sampled_from([20, 10**6]))
def test_model_every_received_packet_reported_received_exactly_once(
        start: int, plan: list[tuple[int, bool, int, bool]], dup: int, history_ms: int) -> None:
    """With a long history every packet is reported received exactly once; with a short
    one a packet arriving too late may go unreported, but none is reported twice."""
    order = list(range(len(plan)))
    for i, (_, _, swap, _) in enumerate(plan):
        j = min(len(order) - 1, i + swap)
        order[i], order[j] = order[j], order[i]
    r = TwccRecorder(history_us=history_ms * 1_000)
    t_us = 1_000_000
    arrivals: dict[int, int] = {}
    reported: list[tuple[int, int | None]] = []
    first_base: int | None = None  # (seq - start) of the first feedback
    for i, (step_ms, dropped, _, fb_now) in enumerate(plan):
        t_us += step_ms * 1_000 + 17
        seq = (start + order[i]) & 0xFFFF
        if not dropped:
            r.on_packet(seq, t_us)
            arrivals.setdefault(seq, t_us)
            if i == dup:
                r.on_packet(seq, t_us + 5)
        if fb_now:
            reported += statuses(r.feedback(t_us, SENDER, MEDIA))
            if first_base is None and reported:
                first_base = (reported[0][0] - start) & 0xFFFF
    reported += statuses(r.feedback(t_us + 1, SENDER, MEDIA))
    if first_base is None and reported:
        first_base = (reported[0][0] - start) & 0xFFFF

    received_reports = [(s, a) for s, a in reported if a is not None]
    reported_seqs = [s for s, _ in received_reports]
    assert len(reported_seqs) == len(set(reported_seqs))
    if history_ms == 10**6:
        assert sorted(reported_seqs) == sorted(arrivals)
    for rseq, rarrival in received_reports:
        assert rarrival == arrivals[rseq] // 250 * 250
    acked: set[int] = set()
    for seq, arrival in reported:  # never "not received" after "received"
        if arrival is None:
            assert seq not in acked
        else:
            acked.add(seq)
    if arrivals:  # every seq from the first feedback's base to the last received has a
        # status (packets older than the first feedback, arriving later, are reported
        # alone, with no statuses for the seqs around them)
        assert first_base is not None
        last = max((s - start) & 0xFFFF for s in arrivals)
        covered = {(s - start) & 0xFFFF for s, _ in reported}
        assert covered >= set(range(first_base, last + 1))
