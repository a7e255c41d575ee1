"""turn.ports: relay ports stay inside the range, are never handed out twice, even ports and
even/odd pairs are honoured, and ports another process holds are skipped."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_turn_harness import FakeRelays
from turn.ports import MAX_BIND_TRIES, PortPool

IP = "192.0.2.1"


@settings(max_examples=200, deadline=None)
@given(st.integers(1024, 1100), st.integers(0, 12),
       st.lists(st.tuples(st.sampled_from(["open", "even", "pair", "release"]),
                          st.integers(0, 1000)), max_size=40),
       st.sets(st.integers(1024, 1112), max_size=5))
def test_ports_are_unique_in_range_and_of_the_right_parity(
        lo: int, span: int, ops: list[tuple[str, int]], busy: set[int]) -> None:
    relays = FakeRelays()
    relays.busy = busy
    pool = PortPool(relays, lo, lo + span, random.Random(0))
    held: dict[int, int] = {}  # relay id -> port
    next_id = 1
    for op, pick in ops:
        if op == "release":
            if held:
                rid = sorted(held)[pick % len(held)]
                pool.release(rid, IP, held.pop(rid))
            continue
        rid, next_id = next_id, next_id + 2
        if op == "pair":
            port = pool.open_pair(rid, rid + 1, IP)
            if port is not None:
                assert port % 2 == 0 and port + 1 <= lo + span
                held[rid], held[rid + 1] = port, port + 1
        else:
            port = pool.open(rid, IP, even=op == "even")
            if port is not None:
                assert op != "even" or port % 2 == 0
                held[rid] = port
        if port is not None:
            assert lo <= port <= lo + span and port not in busy
        assert sorted(held.values()) == sorted(set(held.values()))
        assert relays.opened == {rid: (IP, p) for rid, p in held.items()}
        assert pool.in_use(IP) == len(held)


def test_a_full_range_gives_none_and_tries_are_bounded() -> None:
    relays = FakeRelays()
    pool = PortPool(relays, 2000, 2000 + 10 * MAX_BIND_TRIES, random.Random(1))
    relays.busy = set(range(2000, 2000 + 10 * MAX_BIND_TRIES + 1))
    calls = 0
    real_open = relays.open

    def counting_open(relay_id: int, ip: str, port: int) -> bool:
        nonlocal calls
        calls += 1
        return real_open(relay_id, ip, port)

    relays.open = counting_open  # type: ignore[method-assign]
    assert pool.open(1, IP) is None
    assert calls == MAX_BIND_TRIES


def test_bad_ranges_are_refused() -> None:
    with pytest.raises(ValueError):
        PortPool(FakeRelays(), 5000, 4999, random.Random(0))
    with pytest.raises(ValueError):
        PortPool(FakeRelays(), 0, 10, random.Random(0))
