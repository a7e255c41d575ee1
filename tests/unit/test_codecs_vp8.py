"""sfu.codecs.vp8: RFC 7741 descriptor parsing/rewriting and picture id continuity.

Descriptors are built by hand for every flag combination; aiortc's VpxPayloadDescriptor is
an independent oracle for the optional fields, and aiortc's libvpx encoder supplies real
keyframes and delta frames.
"""

from __future__ import annotations

import fractions
import itertools
import random
import struct

import av
import pytest
from aiortc.codecs.vpx import VpxPayloadDescriptor
from hypothesis import given
from hypothesis import strategies as st

from sfu.codecs.vp8 import (
    Vp8Descriptor,
    Vp8Munger,
    parse_descriptor,
    rewrite_descriptor,
    rewrite_descriptor_in_place,
)

KEY_HEADER = bytes((0x50, 0x2A, 0x00)) + b"\x9d\x01\x2a" + struct.pack("<HH", 640, 480)
DELTA_HEADER = bytes((0x51, 0x2A, 0x00))


def build_desc(*, n: bool = False, s: bool = True, pid: int = 0, picture_id: int = -1,
               bits: int = 15, tl0: int = -1, tid: int = -1, y: bool = False,
               keyidx: int = -1) -> bytes:
    x = ((0x80 if picture_id >= 0 else 0) | (0x40 if tl0 >= 0 else 0)
         | (0x20 if tid >= 0 else 0) | (0x10 if keyidx >= 0 else 0))
    b0 = (0x80 if x else 0) | (0x20 if n else 0) | (0x10 if s else 0) | pid
    out = bytes((b0,))
    if x:
        out += bytes((x,))
    if picture_id >= 0:
        out += struct.pack("!H", 0x8000 | picture_id) if bits == 15 else bytes((picture_id,))
    if tl0 >= 0:
        out += bytes((tl0,))
    if tid >= 0 or keyidx >= 0:
        out += bytes((((tid << 6) | (0x20 if y else 0) if tid >= 0 else 0)
                      | (keyidx if keyidx >= 0 else 0),))
    return out


COMBOS = list(itertools.product(
    [(-1, 0), (0x55, 7), (0x1234, 15)],  # picture id, bits
    [-1, 200],  # tl0picidx
    [-1, 2],  # tid
    [-1, 17],  # keyidx
    [False, True],  # S
    [False, True],  # N
    [0, 3],  # partition index
))


@pytest.mark.parametrize(("pic", "tl0", "tid", "keyidx", "s", "n", "pid"), COMBOS)
def test_parse_every_flag_combination(pic: tuple[int, int], tl0: int, tid: int, keyidx: int,
                                      s: bool, n: bool, pid: int) -> None:
    picture_id, bits = pic
    desc_bytes = build_desc(n=n, s=s, pid=pid, picture_id=picture_id, bits=bits, tl0=tl0,
                            tid=tid, y=tid >= 0, keyidx=keyidx)
    payload = desc_bytes + DELTA_HEADER + b"vp8 data"
    d = parse_descriptor(payload)
    assert d == Vp8Descriptor(
        header_size=len(desc_bytes), non_reference=n, start_of_partition=s,
        partition_index=pid, picture_id=picture_id, picture_id_bits=bits, tl0picidx=tl0,
        tid=tid, layer_sync=tid >= 0, keyidx=keyidx, is_keyframe=False, width=0, height=0)
    oracle, rest = VpxPayloadDescriptor.parse(payload)
    assert rest == DELTA_HEADER + b"vp8 data"
    assert (oracle.picture_id if oracle.picture_id is not None else -1) == picture_id
    assert (oracle.tl0picidx if oracle.tl0picidx is not None else -1) == tl0
    assert (oracle.keyidx if oracle.keyidx is not None else -1) == keyidx
    assert (oracle.tid[0] if oracle.tid else -1) == tid

    out = rewrite_descriptor(payload, picture_id=0x7ABC, tl0picidx=7)
    r = parse_descriptor(out)
    assert r == d._replace(header_size=r.header_size, picture_id=0x7ABC, picture_id_bits=15,
                           tl0picidx=7 if tl0 >= 0 else -1)
    assert out[r.header_size:] == payload[len(desc_bytes):]
    # the new descriptor has exactly X, the X byte, 2 picture id bytes and the optional ones
    assert r.header_size == 4 + (tl0 >= 0) + (tid >= 0 or keyidx >= 0)


@pytest.mark.parametrize(("pic", "tl0", "tid", "keyidx", "s", "n", "pid"), COMBOS[::7])
def test_rewrite_round_trips_through_itself(pic: tuple[int, int], tl0: int, tid: int,
                                            keyidx: int, s: bool, n: bool, pid: int) -> None:
    picture_id, bits = pic
    payload = build_desc(n=n, s=s, pid=pid, picture_id=picture_id, bits=bits, tl0=tl0,
                         tid=tid, keyidx=keyidx) + DELTA_HEADER
    once = rewrite_descriptor(payload, picture_id=99, tl0picidx=5)
    assert rewrite_descriptor(once, picture_id=99, tl0picidx=5) == once
    # a 15-bit input with the same values is unchanged byte for byte
    if bits == 15:
        same = rewrite_descriptor(payload, picture_id=picture_id, tl0picidx=tl0)
        assert same == payload


def test_rewrite_keeps_original_tl0_when_not_given_and_never_adds_one() -> None:
    payload = build_desc(picture_id=3, bits=7, tl0=42) + DELTA_HEADER
    assert parse_descriptor(rewrite_descriptor(payload, picture_id=4)).tl0picidx == 42
    no_tl0 = build_desc(picture_id=3) + DELTA_HEADER
    assert parse_descriptor(rewrite_descriptor(no_tl0, picture_id=4, tl0picidx=9)).tl0picidx == -1


def test_rewrite_masks_values_and_clears_reserved_bits() -> None:
    payload = bytes((0x80 | 0x40 | 0x08 | 0x10, 0x80 | 0x0F, 0x05)) + DELTA_HEADER
    out = rewrite_descriptor(payload, picture_id=0x18001, tl0picidx=-1)
    assert out[:4] == bytes((0x90, 0x80, 0x80, 0x01))
    assert parse_descriptor(out).picture_id == 1


def test_rewrite_whole_packet_keeps_header_and_padding() -> None:
    header = b"\x80\x60\x00\x01" + bytes(8)
    payload = build_desc(picture_id=100, bits=7, tl0=1, tid=1, keyidx=3) + DELTA_HEADER + b"x"
    packet = header + payload + b"\x00\x00\x03"
    out = rewrite_descriptor(packet, picture_id=300, tl0picidx=2, start=len(header))
    assert out[:12] == header
    expected = rewrite_descriptor(payload, picture_id=300, tl0picidx=2)
    assert out[12:] == expected + b"\x00\x00\x03"
    desc = parse_descriptor(packet, len(header), len(packet) - 3)
    assert rewrite_descriptor(packet, picture_id=300, tl0picidx=2, start=12, desc=desc) == out
    buf = bytearray(packet)
    rewrite_descriptor_in_place(buf, picture_id=300, tl0picidx=2, start=12, desc=desc)
    assert buf == out


@pytest.mark.parametrize(("pic", "tl0", "tid", "keyidx", "s", "n", "pid"), COMBOS)
def test_in_place_matches_copy(pic: tuple[int, int], tl0: int, tid: int, keyidx: int,
                               s: bool, n: bool, pid: int) -> None:
    picture_id, bits = pic
    packet = b"\x80" * 12 + build_desc(n=n, s=s, pid=pid, picture_id=picture_id, bits=bits,
                                       tl0=tl0, tid=tid, keyidx=keyidx) + DELTA_HEADER + b"z"
    buf = bytearray(packet)
    rewrite_descriptor_in_place(buf, picture_id=0x4321, tl0picidx=77, start=12)
    assert buf == rewrite_descriptor(packet, picture_id=0x4321, tl0picidx=77, start=12)
    if bits == 15:
        assert len(buf) == len(packet)


def test_parse_with_bounds_inside_a_packet() -> None:
    packet = b"H" * 12 + build_desc(picture_id=7) + DELTA_HEADER + b"\x00\x02"
    d = parse_descriptor(packet, 12, len(packet) - 2)
    assert d.picture_id == 7 and d.header_size == 4
    with pytest.raises(ValueError, match="no data after the 4-byte descriptor"):
        parse_descriptor(packet, 12, 16)


def test_keyframe_detection_and_size() -> None:
    key = parse_descriptor(build_desc(picture_id=1) + KEY_HEADER)
    assert key.is_keyframe and (key.width, key.height) == (640, 480)
    assert key.starts_frame
    scaled = KEY_HEADER[:6] + struct.pack("<HH", 0xC000 | 1280, 0x4000 | 720)
    assert parse_descriptor(b"\x10" + scaled)[11:] == (1280, 720)
    # not the start of partition 0, or P=1: not a keyframe
    assert not parse_descriptor(build_desc(s=False) + KEY_HEADER).is_keyframe
    assert not parse_descriptor(build_desc(pid=1) + KEY_HEADER).is_keyframe
    assert not parse_descriptor(build_desc() + DELTA_HEADER).is_keyframe
    assert not parse_descriptor(build_desc(s=False) + KEY_HEADER).starts_frame


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "VP8 payload is empty"),
        (b"\x90", "the X bit is set but the payload ends"),
        (b"\x90\x80", "the I bit is set but the payload ends"),
        (b"\x90\x80\x81", "15-bit picture id needs 2 bytes, payload has 1"),
        (b"\x90\x40", "the L bit is set but the payload ends"),
        (b"\x90\xa0\x01", "the T or K bit is set but the payload ends"),
        (b"\x90\x10", "the T or K bit is set but the payload ends"),
        (b"\x10", "VP8 payload has no data after the 1-byte descriptor"),
        (b"\x90\x80\x81\x02", "VP8 payload has no data after the 4-byte descriptor"),
        (b"\x10" + KEY_HEADER[:9], "VP8 keyframe header truncated: 9 bytes"),
    ],
)
def test_parse_rejects_malformed(payload: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_descriptor(payload)
    if payload:
        with pytest.raises(ValueError):
            rewrite_descriptor(payload, picture_id=1)


def test_parse_accepts_memoryview_and_bytearray() -> None:
    payload = build_desc(picture_id=1000, tl0=3, tid=1) + KEY_HEADER
    d = parse_descriptor(payload)
    assert parse_descriptor(memoryview(payload)) == d
    assert parse_descriptor(bytearray(payload)) == d
    assert rewrite_descriptor(memoryview(payload), picture_id=5) == rewrite_descriptor(
        payload, picture_id=5)


@given(st.binary(max_size=40))
def test_parse_never_crashes_otherwise(data: bytes) -> None:
    try:
        d = parse_descriptor(data)
    except ValueError:
        return
    assert 1 <= d.header_size < len(data)
    out = rewrite_descriptor(data, picture_id=12345, tl0picidx=6)
    assert parse_descriptor(out).picture_id == 12345
    assert out[parse_descriptor(out).header_size:] == data[d.header_size:]


def _encoded(width: int, height: int, frames: int) -> list[list[bytes]]:
    from aiortc.codecs.vpx import Vp8Encoder

    rng = random.Random(1)
    encoder = Vp8Encoder()
    out = []
    for i in range(frames):
        frame = av.VideoFrame(width=width, height=height, format="yuv420p")
        for plane in frame.planes:
            plane.update(rng.randbytes(plane.buffer_size))
        frame.pts = i * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        packets, _ = encoder.encode(frame, force_keyframe=i == 0)
        out.append(packets)
    return out


def test_real_libvpx_packets() -> None:
    frames = _encoded(320, 240, 3)
    first = [parse_descriptor(p) for p in frames[0]]
    assert first[0].is_keyframe and (first[0].width, first[0].height) == (320, 240)
    assert first[0].picture_id_bits == 15
    assert not any(d.is_keyframe for d in first[1:])
    assert all(d.picture_id == first[0].picture_id for d in first)
    delta = parse_descriptor(frames[1][0])
    assert delta.starts_frame and not delta.is_keyframe
    assert delta.picture_id == (first[0].picture_id + 1) & 0x7FFF
    for packets in frames:
        for p in packets:
            d = parse_descriptor(p)
            out = rewrite_descriptor(p, picture_id=4242)
            oracle, rest = VpxPayloadDescriptor.parse(out)
            assert oracle.picture_id == 4242 and rest == p[d.header_size:]


# --- Vp8Munger ---------------------------------------------------------------------------


def desc(picture_id: int, *, bits: int = 15, tl0: int = -1, start: bool = True) -> Vp8Descriptor:
    return parse_descriptor(build_desc(s=start, picture_id=picture_id, bits=bits, tl0=tl0)
                            + DELTA_HEADER)


def test_munger_follows_source_with_offset_and_keeps_reordered() -> None:
    m = Vp8Munger()
    assert m.on_packet(desc(100, tl0=10)) == (100, 10)
    assert m.on_packet(desc(101, tl0=10)) == (101, 10)
    assert m.on_packet(desc(103, tl0=11)) == (103, 11)
    assert m.on_packet(desc(102, tl0=10)) == (102, 10)  # reordered: its own id
    # switch to a source with very different numbers: continue at highest + 1
    assert m.on_packet(desc(20000, tl0=200), switching=True) == (104, 12)
    assert m.on_packet(desc(20001, tl0=201)) == (105, 13)
    assert m.last_picture_id == 105


def test_munger_wraps_7_and_15_bit_sources() -> None:
    m = Vp8Munger()
    assert m.on_packet(desc(0x7FFE)) == (0x7FFE, -1)
    assert m.on_packet(desc(0x7FFF)) == (0x7FFF, -1)
    assert m.on_packet(desc(0)) == (0, -1)
    # a 7-bit source continues the 15-bit numbering
    assert m.on_packet(desc(127, bits=7), switching=True) == (1, -1)
    assert m.on_packet(desc(0, bits=7)) == (2, -1)
    # changing the id size implies a switch even without the flag
    assert m.on_packet(desc(5000)) == (3, -1)


def test_munger_tl0_wraps_at_256() -> None:
    m = Vp8Munger()
    assert m.on_packet(desc(1, tl0=255)) == (1, 255)
    assert m.on_packet(desc(2, tl0=0)) == (2, 0)
    assert m.on_packet(desc(3, tl0=80), switching=True) == (3, 1)


def test_munger_source_without_picture_id_counts_frames() -> None:
    m = Vp8Munger()
    assert m.on_packet(desc(10)) == (10, -1)
    no_pid = parse_descriptor(b"\x10" + DELTA_HEADER)
    cont = parse_descriptor(b"\x00" + DELTA_HEADER)
    assert m.on_packet(no_pid, switching=True) == (11, -1)
    assert m.on_packet(cont) == (11, -1)
    assert m.on_packet(no_pid) == (12, -1)


def test_munger_drop_closes_picture_id_gaps() -> None:
    m = Vp8Munger()
    assert m.on_packet(desc(50))[0] == 50
    m.drop(desc(51))  # a whole frame of a filtered temporal layer
    m.drop(desc(51, start=False))
    assert m.on_packet(desc(52))[0] == 51
    m.drop(desc(54))  # 53 is missing: cannot close this gap safely
    assert m.on_packet(desc(53))[0] == 52
    assert m.on_packet(desc(55))[0] == 54


def test_picture_id_continuity_across_1000_random_switches() -> None:
    rng = random.Random(7)
    m = Vp8Munger()
    expected = expected_tl0 = -1  # set by the first packet
    switches = 0
    for _ in range(1000):
        bits = rng.choice((7, 15, 15))
        src = rng.randrange(1 << bits)  # each source starts anywhere: ids jump
        src_tl0 = rng.randrange(256)
        for frame in range(rng.randint(1, 40)):
            tl0 = (src_tl0 + frame) & 0xFF
            for packet in range(rng.randint(1, 3)):
                switching = frame == 0 and packet == 0
                switches += switching
                pid, out_tl0 = m.on_packet(
                    desc((src + frame) % (1 << bits), bits=bits, tl0=tl0, start=packet == 0),
                    switching=switching)
                if expected < 0:
                    expected, expected_tl0 = pid, out_tl0
                assert (pid, out_tl0) == (expected, expected_tl0)
            expected = (expected + 1) & 0x7FFF
            expected_tl0 = (expected_tl0 + 1) & 0xFF
    assert switches == 1000
