"""sfu.rtp.cache: the ring of recent packets by extended sequence number."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.rtp.cache import PacketCache


def test_put_get_and_eviction() -> None:
    cache = PacketCache(4)
    for seq in range(10, 16):
        cache.put(seq, b"p%d" % seq)
    assert [cache.get(s) for s in range(10, 16)] == [None, None, b"p12", b"p13", b"p14", b"p15"]
    assert cache.get(16) is None and cache.get(9) is None
    assert cache.get(15 + 4) is None  # same slot, other seq


def test_late_packet_does_not_evict_a_newer_one() -> None:
    cache = PacketCache(4)
    cache.put(8, b"new")
    cache.put(4, b"late")  # same slot, older
    assert cache.get(8) == b"new" and cache.get(4) is None
    cache.put(8, b"duplicate")
    assert cache.get(8) == b"new"


def test_works_across_the_16_bit_wrap_and_with_negative_seqs() -> None:
    cache = PacketCache(512)
    for seq in range(65530, 65542):
        cache.put(seq, bytes((seq & 0xFF,)))
    assert cache.get(65541) == bytes((65541 & 0xFF,))
    assert cache.get(65541 & 0xFFFF) is None  # extended seqs, not 16-bit ones
    cache.put(-3, b"older than the packets in its slot")
    assert cache.get(-3) is None
    fresh = PacketCache(512)
    fresh.put(-3, b"neg")  # SeqUnwrapper may return negatives for early reordering
    assert fresh.get(-3) == b"neg" and fresh.get(509) is None


def test_clear() -> None:
    cache = PacketCache(8)
    cache.put(1, b"x")
    cache.clear()
    assert cache.get(1) is None


@pytest.mark.parametrize("capacity", [0, 3, 100, -8])
def test_capacity_must_be_a_power_of_two(capacity: int) -> None:
    with pytest.raises(ValueError, match="not a power of two"):
        PacketCache(capacity)


@given(st.lists(st.integers(0, 3000), max_size=300), st.sampled_from([1, 16, 64, 512]))
def test_matches_a_dict_of_the_newest_per_slot(seqs: list[int], capacity: int) -> None:
    cache = PacketCache(capacity)
    model: dict[int, tuple[int, bytes]] = {}
    for seq in seqs:
        packet = seq.to_bytes(2, "big")
        cache.put(seq, packet)
        slot = seq % capacity
        if slot not in model or model[slot][0] < seq:
            model[slot] = (seq, packet)
    for seq in set(seqs) | {0, 5000}:
        held = model.get(seq % capacity)
        assert cache.get(seq) == (held[1] if held and held[0] == seq else None)
