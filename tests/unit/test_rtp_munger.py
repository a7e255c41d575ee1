"""sfu.rtp.munger: offsets, drops, reordering and source switches for one down-track."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.rtp.munger import MAX_DROP_RANGES, RtpMunger


def test_identity_until_something_changes() -> None:
    m = RtpMunger()
    assert m.last_out_seq is None and m.last_out_ts is None
    assert m.translate(1000, 90000, 1.0) == (1000, 90000)
    assert m.translate(1001, 93000, 1.03) == (1001, 93000)
    assert m.translate(999, 87000, 1.04) == (999, 87000)  # reordered before the first
    assert (m.last_out_seq, m.last_out_ts, m.last_forwarded_at_s) == (1001, 93000, 1.03)


def test_masks_to_wire_widths() -> None:
    m = RtpMunger()
    assert m.translate(0x1FFFF, 0x1_0000_0005, 0.0) == (0xFFFF, 5)
    assert m.translate(0x20000, 0x1_0000_0006, 0.0) == (0, 6)


def test_drop_of_next_packet_closes_the_gap() -> None:
    m = RtpMunger()
    m.translate(10, 0, 0.0)
    m.drop(11)  # padding-only
    m.drop(12)
    assert m.translate(13, 0, 0.0) == (11, 0)
    assert m.seq_offset == 2


def test_drop_after_a_gap_keeps_room_for_the_missing_packets() -> None:
    m = RtpMunger()
    m.translate(10, 0, 0.0)
    m.drop(13)  # 11 and 12 still missing
    assert m.translate(14, 0, 0.0) == (13, 0)
    assert m.translate(12, 0, 0.0) == (12, 0)
    assert m.translate(11, 0, 0.0) == (11, 0)
    assert m.translate(13, 0, 0.0) is None  # dropped before: its slot is gone
    assert m.late_drops == 0


def test_late_drop_leaves_a_gap_and_is_counted() -> None:
    m = RtpMunger()
    m.translate(10, 0, 0.0)
    m.translate(12, 0, 0.0)
    m.drop(11)
    assert m.late_drops == 1
    assert m.translate(13, 0, 0.0) == (13, 0)


def test_switch_continues_seq_and_advances_ts_by_wall_clock() -> None:
    m = RtpMunger()
    m.translate(500, 10_000, 2.0)
    m.translate(501, 10_000, 2.01)
    m.switch_source(40_000, 7_777_777, 2.51, 90_000)  # 0.5 s later
    assert m.translate(40_000, 7_777_777, 2.51) == (502, 10_000 + 45_000)
    assert m.translate(40_001, 7_777_777 + 3000, 2.54) == (503, 10_000 + 48_000)
    assert m.translate(499, 9_000, 2.55) is None  # before the switch
    assert m.translate(39_999, 7_777_000, 2.55) is None
    assert m.translate(40_000, 7_777_777, 2.56) == (502, 55_000)  # duplicate after it


def test_switch_without_elapsed_time_still_advances_ts() -> None:
    m = RtpMunger()
    m.translate(1, 1000, 5.0)
    m.switch_source(9, 123, 5.0, 48_000)
    assert m.translate(9, 123, 5.0) == (2, 1001)
    m.switch_source(30, 0, 4.0, 48_000)  # clock going backwards: still +1
    assert m.translate(30, 0, 4.0) == (3, 1002)


def test_switch_before_anything_forwarded_is_identity() -> None:
    m = RtpMunger()
    m.switch_source(700, 800, 1.0, 90_000)
    assert m.translate(700, 800, 1.0) == (700, 800)
    assert m.translate(699, 700, 1.0) is None


def test_reordered_packet_after_switch_uses_its_own_mapping() -> None:
    m = RtpMunger()
    m.translate(100, 0, 0.0)
    m.switch_source(1000, 50_000, 0.1, 90_000)
    assert m.translate(1000, 50_000, 0.1) == (101, 9000)
    assert m.translate(1003, 56_000, 0.2) == (104, 15_000)
    m.drop(1004)
    assert m.translate(1001, 53_000, 0.2) == (102, 12_000)
    assert m.translate(1005, 59_000, 0.3) == (105, 18_000)
    assert m.translate(1002, 53_000, 0.3) == (103, 12_000)


def test_old_drop_ranges_are_forgotten_and_packets_before_them_refused() -> None:
    m = RtpMunger()
    m.translate(0, 0, 0.0)
    for i in range(MAX_DROP_RANGES + 1):
        m.drop(2 * i + 2)  # 1, 3, 5... missing; 2, 4, 6... dropped: one range each
    assert m.translate(1, 0, 0.0) is None  # older than every remembered drop
    assert m.translate(5, 0, 0.0) == (3, 0)
    last = 2 * MAX_DROP_RANGES + 2
    assert m.translate(last + 1, 0, 0.0) == ((last + 1 - (MAX_DROP_RANGES + 1)), 0)


# --- properties --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["fwd", "fwd", "fwd", "drop", "switch"]),
                          st.integers(0, 2**32 - 1), st.floats(0, 2)),
                max_size=200),
       st.sampled_from([8000, 48_000, 90_000]))
def test_in_order_stream_has_no_gaps_and_monotonic_ts(
    ops: list[tuple[str, int, float]], clock_rate: int
) -> None:
    m = RtpMunger()
    src_seq, src_ts, now_s = 5, 1000, 0.0
    out_seq: int | None = None
    out_ts: int | None = None  # extended, rebuilt from 32-bit deltas
    for op, rnd, dt in ops:
        now_s += dt / 10
        switched = False
        if op == "switch":
            src_seq = rnd & 0xFFFFFF
            src_ts = rnd
            m.switch_source(src_seq, src_ts, now_s, clock_rate)
            switched = True
            op = "fwd"
        else:
            src_seq += 1
            src_ts += rnd % 4000 if rnd % 3 == 0 else 0  # new frame or same frame
        if op == "drop":
            m.drop(src_seq)
            continue
        got = m.translate(src_seq, src_ts, now_s)
        assert got is not None
        seq16, ts32 = got
        if out_seq is not None:
            assert seq16 == (out_seq + 1) & 0xFFFF
            assert out_ts is not None
            delta = (ts32 - out_ts) & 0xFFFFFFFF
            assert delta < 0x80000000  # never backwards
            if switched:
                assert delta >= 1
            out_ts += delta
        else:
            out_ts = ts32
        out_seq = seq16


def _arrivals(rng: random.Random, n: int, window: int, loss: float) -> list[int]:
    """Indices 0..n-1 in arrival order: each displaced by less than ``window``."""
    keyed = sorted(range(n), key=lambda i: i + rng.random() * window)
    return [i for i in keyed if rng.random() >= loss]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 300), st.integers(1, 8),
       st.sampled_from([0.0, 0.05, 0.3]), st.sampled_from([0.0, 0.2, 0.6]),
       st.integers(0, 2**20))
def test_reordering_loss_and_drops_leave_only_real_gaps(
    seed: int, n: int, window: int, loss: float, drop_rate: float, base: int
) -> None:
    rng = random.Random(seed)
    dropped = {i for i in range(n) if rng.random() < drop_rate}
    m = RtpMunger()
    out: dict[int, int] = {}
    late_dropped: set[int] = set()
    highest = -1
    arrived = _arrivals(rng, n, window, loss)
    for i in arrived:
        ext_seq = base + i
        if i in dropped:
            if i < highest:
                late_dropped.add(i)
            m.drop(ext_seq)
        else:
            got = m.translate(ext_seq, 3000 * (i // 3), 0.0)
            assert got is not None
            out[i] = got[0]
        highest = max(highest, i)
    assert m.late_drops == len(late_dropped)
    # between two consecutive forwarded packets, the outgoing gap is exactly the packets
    # that never arrived plus the ones dropped too late to close their slot
    arrived_set = set(arrived)
    forwarded = sorted(out)
    for a, b in zip(forwarded, forwarded[1:], strict=False):
        holes = sum(1 for j in range(a + 1, b)
                    if j not in arrived_set or j in late_dropped)
        assert (out[b] - out[a]) & 0xFFFF == 1 + holes
