"""sfu.rtp.sequencer: outgoing seq → source packet, retransmitted at most once per RTT."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.rtp.sequencer import Sequencer, SequencerEntry


def test_maps_nacked_out_seqs_back_to_incoming() -> None:
    s = Sequencer(16)
    for i in range(10):
        s.push((65530 + i) & 0xFFFF, 1000 + i, 1.0 + i / 100, out_ts=90 * i, codec_state=i)
    assert s.nacked([65531, 2, 4], 2.0, 0.05) == [(1001, 65531), (1008, 2)]
    assert s.get(2) == SequencerEntry(1008, 1.08, 720, 8)
    assert s.get(4) is None  # never sent
    assert s.get(65529) is None


def test_at_most_once_per_rtt() -> None:
    s = Sequencer(16)
    s.push(7, 70, 0.0)
    assert s.nacked([7], 1.0, 0.1) == [(70, 7)]
    assert s.nacked([7], 1.05, 0.1) == []
    assert s.nacked([7], 1.1, 0.1) == [(70, 7)]
    # the interval is at least 10 ms even with a tiny RTT
    assert s.nacked([7], 1.105, 0.001) == []
    assert s.nacked([7], 1.11, 0.001) == [(70, 7)]


def test_repeated_seq_in_one_nack_is_returned_once() -> None:
    s = Sequencer(16)
    s.push(3, 30, 0.0)
    assert s.nacked([3, 3, 3], 1.0, 0.05) == [(30, 3)]


def test_push_resets_the_retransmit_time_of_a_reused_slot() -> None:
    s = Sequencer(4)
    s.push(1, 10, 0.0)
    assert s.nacked([1], 0.5, 1.0) == [(10, 1)]
    s.push(5, 50, 0.6)  # same slot, newer packet
    assert s.nacked([1], 0.7, 1.0) == []
    assert s.nacked([5], 0.7, 1.0) == [(50, 5)]


def test_overwritten_entries_are_gone() -> None:
    s = Sequencer(8)
    for seq in range(20):
        s.push(seq, seq + 100, 0.0)
    assert [seq for seq in range(20) if s.get(seq)] == list(range(12, 20))
    assert s.nacked(list(range(20)), 1.0, 0.0) == [(seq + 100, seq) for seq in range(12, 20)]


@pytest.mark.parametrize("capacity", [0, 6, 1 << 17])
def test_capacity_checked(capacity: int) -> None:
    with pytest.raises(ValueError, match="not a power of two"):
        Sequencer(capacity)


@settings(deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(1, 3000),
       st.lists(st.integers(0, 0xFFFF), max_size=50))
def test_only_the_last_capacity_packets_are_served(start: int, count: int,
                                                   nacks: list[int]) -> None:
    s = Sequencer(1024)
    sent = {}
    for i in range(count):
        out = (start + i) & 0xFFFF
        s.push(out, 5_000_000 + i, 0.0)
        sent[out] = 5_000_000 + i
    recent = {(start + i) & 0xFFFF for i in range(max(0, count - 1024), count)}
    got = s.nacked(nacks, 1.0, 0.1)
    expected = []
    seen = set()
    for seq in nacks:
        if seq in recent and seq not in seen:
            seen.add(seq)
            expected.append((sent[seq], seq))
    assert got == expected
