"""sfu.rtp.rtx: RFC 4588 packets, checked byte for byte against aiortc's wrap/unwrap."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from aiortc.rtp import unwrap_rtx as aiortc_unwrap
from aiortc.rtp import wrap_rtx as aiortc_wrap
from hypothesis import given
from hypothesis import strategies as st

from sfu.rtp.header import parse_rtp
from sfu.rtp.rtx import HeaderRewrite, build_rtx, is_padding_only, unwrap_rtx

MID, AST, TWCC = 4, 2, 3


def ext_map() -> HeaderExtensionsMap:
    m = HeaderExtensionsMap()
    m.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=MID, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
        RTCRtpHeaderExtensionParameters(
            id=AST, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
        RTCRtpHeaderExtensionParameters(
            id=TWCC,
            uri="http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"),
    ]))
    return m


def build(payload: bytes, *, pt: int = 96, marker: bool = False, seq: int = 1000,
          ts: int = 123456, ssrc: int = 0x11223344, csrcs: tuple[int, ...] = (),
          exts: bytes = b"", pad: int = 0) -> bytes:
    b0 = 0x80 | len(csrcs) | (0x20 if pad else 0) | (0x10 if exts else 0)
    header = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    header += b"".join(struct.pack("!I", c) for c in csrcs)
    if exts:
        exts += bytes(-len(exts) % 4)
        header += struct.pack("!HH", 0xBEDE, len(exts) // 4) + exts
    padding = bytes(pad - 1) + bytes((pad,)) if pad else b""
    return header + payload + padding


EXTS = bytes(((AST << 4) | 2,)) + b"\x12\x34\x56" + bytes(((TWCC << 4) | 1,)) + b"\x00\x07" \
    + bytes((MID << 4,)) + b"0"
# in aiortc's serialization order, so aiortc can be the oracle byte for byte
MEDIA = RtpPacket.parse(
    build(b"\x90\x80\x81\x02vp8 frame data", marker=True, seq=65535, ts=0xFFFFFFF0,
          csrcs=(5, 6), exts=EXTS), ext_map()).serialize(ext_map())


def test_build_matches_aiortc_wrap() -> None:
    rtx = build_rtx(MEDIA, rtx_ssrc=0xAABBCCDD, rtx_payload_type=97, rtx_seq=42)
    m = ext_map()
    expected = aiortc_wrap(RtpPacket.parse(MEDIA, m), 97, 42, 0xAABBCCDD).serialize(m)
    assert rtx == expected
    view = parse_rtp(rtx)
    assert (view.payload_type, view.seq, view.ssrc, view.marker) == (97, 42, 0xAABBCCDD, True)
    assert bytes(view.payload(rtx))[:2] == b"\xff\xff"  # OSN
    assert view.csrcs(rtx) == (5, 6)


def test_unwrap_matches_aiortc_and_round_trips() -> None:
    rtx = build_rtx(MEDIA, rtx_ssrc=0xAABBCCDD, rtx_payload_type=97, rtx_seq=42)
    osn, original = unwrap_rtx(rtx, media_ssrc=0x11223344, media_payload_type=96)
    assert osn == 65535
    assert original == MEDIA
    assert build_rtx(MEDIA, rtx_ssrc=0xAABBCCDD, rtx_payload_type=97, rtx_seq=42,
                     view=parse_rtp(MEDIA)) == rtx
    m = ext_map()
    assert original == aiortc_unwrap(RtpPacket.parse(rtx, m), 96, 0x11223344).serialize(m)


def test_header_rewrite_sets_osn_and_timestamp() -> None:
    rtx = build_rtx(MEDIA, rtx_ssrc=9, rtx_payload_type=97, rtx_seq=0x1_0005,
                    header_rewrite=HeaderRewrite(seq=0x1_2345, timestamp=0x1_0000_0777))
    view = parse_rtp(rtx)
    assert (view.seq, view.timestamp) == (5, 0x777)
    osn, original = unwrap_rtx(rtx, media_ssrc=1, media_payload_type=100)
    assert osn == 0x2345
    o = parse_rtp(original)
    assert (o.seq, o.timestamp, o.ssrc, o.payload_type) == (0x2345, 0x777, 1, 100)
    assert bytes(o.payload(original)) == bytes(parse_rtp(MEDIA).payload(MEDIA))


def test_padding_is_not_carried_over() -> None:
    padded = build(b"data", seq=7, pad=5)
    rtx = build_rtx(padded, rtx_ssrc=1, rtx_payload_type=97, rtx_seq=1)
    assert not parse_rtp(rtx).padding
    assert rtx[12:] == b"\x00\x07data"
    osn, original = unwrap_rtx(build(b"\x00\x07data", pad=30), media_ssrc=2,
                               media_payload_type=96)
    assert osn == 7 and original[12:] == b"data" and not original[0] & 0x20


def test_padding_only_probe() -> None:
    probe = build(b"", pt=97, pad=224)
    assert is_padding_only(parse_rtp(probe))
    assert not is_padding_only(parse_rtp(MEDIA))
    with pytest.raises(ValueError, match="RTX payload of 0 bytes has no original sequence"):
        unwrap_rtx(probe, media_ssrc=1, media_payload_type=96)


def test_memoryview_input() -> None:
    rtx = build_rtx(memoryview(MEDIA), rtx_ssrc=3, rtx_payload_type=97, rtx_seq=4)
    assert rtx == build_rtx(MEDIA, rtx_ssrc=3, rtx_payload_type=97, rtx_seq=4)
    assert unwrap_rtx(memoryview(rtx), media_ssrc=1, media_payload_type=96) == unwrap_rtx(
        rtx, media_ssrc=1, media_payload_type=96)


@pytest.mark.parametrize("pt", [-1, 128])
def test_bad_payload_type(pt: int) -> None:
    with pytest.raises(ValueError, match="outside 0..127"):
        build_rtx(MEDIA, rtx_ssrc=1, rtx_payload_type=pt, rtx_seq=1)
    with pytest.raises(ValueError, match="outside 0..127"):
        unwrap_rtx(MEDIA, media_ssrc=1, media_payload_type=pt)


def test_malformed_rejected() -> None:
    with pytest.raises(ValueError, match="RTP packet too short"):
        build_rtx(b"\x80\x60", rtx_ssrc=1, rtx_payload_type=97, rtx_seq=1)


@given(st.binary(min_size=1, max_size=64), st.booleans(), st.integers(0, 0xFFFF),
       st.integers(0, 0xFFFFFFFF), st.lists(st.integers(0, 2**32 - 1), max_size=3),
       st.integers(0, 20), st.integers(0, 0xFFFF))
def test_round_trip(payload: bytes, marker: bool, seq: int, ts: int, csrcs: list[int],
                    pad: int, rtx_seq: int) -> None:
    media = build(payload, marker=marker, seq=seq, ts=ts, csrcs=tuple(csrcs), exts=EXTS)
    padded = build(payload, marker=marker, seq=seq, ts=ts, csrcs=tuple(csrcs), exts=EXTS,
                   pad=pad)
    rtx = build_rtx(padded, rtx_ssrc=77, rtx_payload_type=97, rtx_seq=rtx_seq)
    assert len(rtx) == len(media) + 2
    assert unwrap_rtx(rtx, media_ssrc=0x11223344, media_payload_type=96) == (seq, media)
