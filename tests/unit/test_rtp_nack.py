"""sfu.rtp.nack: which packets to NACK toward a publisher, and when."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.rtp.nack import NackGenerator
from sfu.rtp.rtcp import Nack, build_nack, parse_rtcp

RTT = 0.05


def test_in_order_stream_asks_for_nothing() -> None:
    g = NackGenerator()
    for seq in range(100):
        g.on_packet(seq, seq / 100)
    assert g.due(2.0, RTT) == [] and g.missing == [] and g.next_due_at(RTT) is None


def test_first_nack_waits_for_the_reorder_delay() -> None:
    g = NackGenerator()
    g.on_packet(10, 1.0)
    g.on_packet(13, 1.0)
    assert g.missing == [11, 12]
    assert g.next_due_at(RTT) == pytest.approx(1.005)
    assert g.due(1.004, RTT) == []
    assert g.due(1.005, RTT) == [11, 12]
    assert g.nacks_sent == 2


def test_late_arrival_within_the_reorder_delay_is_never_nacked() -> None:
    g = NackGenerator()
    g.on_packet(10, 1.0)
    g.on_packet(12, 1.0)
    g.on_packet(11, 1.002)
    assert g.due(1.1, RTT) == [] and g.recovered == 1


def test_retries_every_rtt_then_gives_up() -> None:
    g = NackGenerator(max_retries=3)
    g.on_packet(1, 0.0)
    g.on_packet(3, 0.0)
    times = []
    t = 0.0
    while t < 0.5:
        if g.due(t, RTT):
            times.append(round(t, 3))
        t = round(t + 0.001, 3)
    assert times == [0.005, 0.055, 0.105]
    assert g.missing == [] and g.given_up == 1 and g.nacks_sent == 3


def test_retry_interval_is_at_least_20_ms() -> None:
    g = NackGenerator()
    g.on_packet(1, 0.0)
    g.on_packet(3, 0.0)
    assert g.due(0.01, 0.001) == [2]
    assert g.next_due_at(0.001) == pytest.approx(0.03)
    assert g.due(0.029, 0.001) == []
    assert g.due(0.03, 0.001) == [2]


def test_retransmission_clears_the_entry() -> None:
    g = NackGenerator()
    g.on_packet(1, 0.0)
    g.on_packet(4, 0.0)
    assert g.due(0.01, RTT) == [2, 3]
    g.on_packet(3, 0.03)  # arrives via RTX, unwrapped to its original seq
    assert g.due(0.07, RTT) == [2]
    assert g.recovered == 1


def test_old_missing_packets_are_forgotten() -> None:
    g = NackGenerator(max_age_s=0.3)
    g.on_packet(1, 0.0)
    g.on_packet(3, 0.0)
    g.due(0.01, 10.0)  # RTT far longer than the max age
    assert g.next_due_at(10.0) == pytest.approx(0.3)
    assert g.due(0.3, 10.0) == []
    assert g.missing == [] and g.given_up == 1


def test_cap_evicts_the_oldest_and_a_huge_jump_is_a_discontinuity() -> None:
    g = NackGenerator(max_missing=5)
    g.on_packet(0, 0.0)
    g.on_packet(4, 0.0)
    g.on_packet(8, 0.0)
    assert g.missing == [2, 3, 5, 6, 7] and g.given_up == 1
    g.on_packet(100, 0.0)
    assert g.missing == [] and g.given_up == 6 and g.highest == 100


def test_16_bit_output_across_the_wrap_packs_into_a_nack() -> None:
    g = NackGenerator()
    g.on_packet(65533, 0.0)
    g.on_packet(65538, 0.0)  # extended: 65534, 65535, 0, 1 missing
    lost = g.due(0.01, RTT)
    assert lost == [65534, 65535, 0, 1]
    (nack,) = parse_rtcp(build_nack(1, 2, lost))
    assert isinstance(nack, Nack) and sorted(nack.lost_seqs) == [0, 1, 65534, 65535]


def test_reset() -> None:
    g = NackGenerator()
    g.on_packet(1, 0.0)
    g.on_packet(5, 0.0)
    g.reset()
    g.on_packet(40_000, 1.0)
    assert g.missing == [] and g.highest == 40_000


def test_bad_limits() -> None:
    with pytest.raises(ValueError):
        NackGenerator(max_retries=0)


@settings(deadline=None)
@given(st.lists(st.integers(0, 400), min_size=1, max_size=300))
def test_missing_is_exactly_the_unseen_seqs_below_the_highest(arrivals: list[int]) -> None:
    g = NackGenerator(max_missing=10_000, max_age_s=1e9)
    seen: set[int] = set()
    for i, seq in enumerate(arrivals):
        g.on_packet(seq, i * 0.001)
        seen.add(seq)
        first = arrivals[0]
        expected = [s for s in range(first, max(seen)) if s not in seen]
        assert g.missing == expected
        due = g.due(i * 0.001, RTT)
        assert all(s in expected for s in due)
