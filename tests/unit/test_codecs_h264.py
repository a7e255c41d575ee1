"""sfu.codecs.h264: NAL unit types and keyframe detection for each packetization.

Hand-built payloads for every packetization, and real packets from aiortc's H.264
packetizer fed by libx264 (STAP-A with SPS/PPS, FU-A fragments of IDR and P slices).
"""

from __future__ import annotations

import fractions
import random
import struct

import av
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.codecs.h264 import fu_start, is_keyframe, nal_types

SPS = b"\x67\x42\xc0\x1f\xd9\x00\x78"
PPS = b"\x68\xce\x3c\x80"
IDR = b"\x65\x88\x84\x00\x33"
SLICE = b"\x41\x9a\x02\x0b"
SEI = b"\x06\x05\x01\x80"


def stap_a(*nals: bytes) -> bytes:
    return b"\x78" + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def stap_b(*nals: bytes) -> bytes:
    return b"\x79\x00\x07" + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def fu(nal: bytes, *, start: bool, end: bool = False, fu_b: bool = False) -> bytes:
    indicator = (nal[0] & 0xE0) | (29 if fu_b else 28)
    header = (0x80 if start else 0) | (0x40 if end else 0) | (nal[0] & 0x1F)
    return bytes((indicator, header)) + (b"\x00\x01" if fu_b else b"") + nal[1:]


@pytest.mark.parametrize(
    ("payload", "types", "key"),
    [
        (IDR, [5], True),
        (SPS, [7], True),
        (PPS, [8], False),
        (SLICE, [1], False),
        (SEI, [6], False),
        (stap_a(SPS, PPS), [7, 8], True),
        (stap_a(SPS, PPS, IDR), [7, 8, 5], True),
        (stap_a(SEI, SLICE), [6, 1], False),
        (stap_a(PPS), [8], False),
        (stap_b(SPS, PPS), [7, 8], True),
        (fu(IDR, start=True), [5], True),
        (fu(IDR, start=False), [5], False),
        (fu(IDR, start=False, end=True), [5], False),
        (fu(SLICE, start=True), [1], False),
        (fu(IDR, start=True, fu_b=True), [5], True),
        (fu(SLICE, start=True, fu_b=True), [1], False),
    ],
)
def test_types_and_keyframes(payload: bytes, types: list[int], key: bool) -> None:
    assert nal_types(payload) == types
    assert is_keyframe(payload) is key
    assert is_keyframe(memoryview(payload)) is key


def test_fu_start() -> None:
    assert fu_start(IDR) and fu_start(stap_a(SPS))
    assert fu_start(fu(IDR, start=True)) and not fu_start(fu(IDR, start=False))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "H.264 payload is empty"),
        (b"\x00\x01", "NAL unit type 0 is not valid in RTP"),
        (b"\x1e", "NAL unit type 30 is not valid in RTP"),
        (b"\x1a\x00\x00", "MTAP \\(NAL unit type 26\\) is not supported"),
        (b"\x7c", "FU truncated: no FU header"),
        (b"\x78", "STAP-A aggregates no NAL unit"),
        (b"\x78\x00", "STAP-A unit size truncated at byte 1 of 2"),
        (b"\x78\x00\x00", "STAP-A unit at byte 1 has size 0"),
        (b"\x78\x00\x05\x67\x42", "STAP-A unit of 5 bytes at byte 1 overruns the 5-byte payload"),
        (stap_a(SPS) + b"\x00", "STAP-A unit size truncated at byte 10 of 11"),
        (b"\x79\x00", "STAP-B truncated: 2 bytes, the header needs 3"),
    ],
)
def test_rejects_malformed(payload: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        nal_types(payload)
    with pytest.raises(ValueError, match=message):
        is_keyframe(payload)


@given(st.binary(max_size=30))
def test_is_keyframe_agrees_with_nal_types(data: bytes) -> None:
    try:
        types = nal_types(data)
    except ValueError:
        with pytest.raises(ValueError):
            is_keyframe(data)
        return
    key = is_keyframe(data)
    if data[0] & 0x1F in (28, 29):
        assert key == (bool(data[1] & 0x80) and types[0] in (5, 7))
    else:
        assert key == any(t in (5, 7) for t in types)


def test_real_libx264_packets() -> None:
    from aiortc.codecs.h264 import H264Encoder

    rng = random.Random(3)
    encoder = H264Encoder()
    frames = []
    for i in range(3):
        frame = av.VideoFrame(width=640, height=480, format="yuv420p")
        for plane in frame.planes:
            plane.update(rng.randbytes(plane.buffer_size))
        frame.pts = i * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        packets, _ = encoder.encode(frame, force_keyframe=i == 0)
        frames.append(packets)
    key = frames[0]
    assert key[0][0] & 0x1F == 24 and nal_types(key[0])[:2] == [7, 8]
    assert is_keyframe(key[0])
    fragments = [p for p in key if p[0] & 0x1F == 28]
    assert fragments, "a noisy 640x480 IDR is fragmented"
    starts = [p for p in fragments if fu_start(p)]
    assert starts and all(nal_types(p) == [5] for p in fragments)
    assert all(is_keyframe(p) for p in starts)
    assert not any(is_keyframe(p) for p in fragments if not fu_start(p))
    for packets in frames[1:]:
        assert not any(is_keyframe(p) for p in packets)
        assert {t for p in packets for t in nal_types(p)} <= {1, 6, 7, 8, 9}
