"""sfu.rtp.header: RTP parsing, header extensions, rewriting, unwrapping.

Packets are built by hand here (``build``), and aiortc's RtpPacket serves as an
independent oracle for the wire format.
"""

from __future__ import annotations

import struct

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sfu.rtp.header import (
    AudioLevel,
    RtpView,
    SeqUnwrapper,
    TsUnwrapper,
    abs_send_time_from_us,
    abs_send_time_to_us,
    encode_abs_send_time,
    encode_audio_level,
    encode_transport_seq,
    extension_value,
    find_extension,
    is_rtcp,
    iter_extensions,
    parse_rtp,
    read_abs_send_time,
    read_audio_level,
    read_mid,
    read_rid,
    read_transport_seq,
    rebuild_extensions,
    rewrite_extension,
    rewrite_header,
    write_abs_send_time,
    write_transport_seq,
)

MID, RID, RRID, AST, TWCC, LEVEL = 4, 10, 11, 2, 3, 1
URIS = {
    MID: "urn:ietf:params:rtp-hdrext:sdes:mid",
    RID: "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    RRID: "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    AST: "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    TWCC: "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    LEVEL: "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
}


def aiortc_map(ids: dict[int, int] | None = None) -> HeaderExtensionsMap:
    """aiortc's extension map; ``ids`` remaps our default ids (default id -> new id)."""
    ids = ids or {}
    m = HeaderExtensionsMap()
    m.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=ids.get(i, i), uri=uri) for i, uri in URIS.items()
    ]))
    return m


def ext_block(exts: list[tuple[int, bytes]], *, two_byte: bool = False, appbits: int = 0,
              padding_between: int = 0) -> bytes:
    body = b""
    for ext_id, value in exts:
        if two_byte:
            body += bytes((ext_id, len(value))) + value
        else:
            body += bytes(((ext_id << 4) | (len(value) - 1),)) + value
        body += bytes(padding_between)
    body += bytes(-len(body) % 4)
    profile = (0x1000 | appbits) if two_byte else 0xBEDE
    return struct.pack("!HH", profile, len(body) // 4) + body


def build(payload: bytes = b"\x10\x20\x30", *, pt: int = 96, marker: bool = False,
          seq: int = 1000, ts: int = 123456, ssrc: int = 0x11223344,
          csrcs: tuple[int, ...] = (), exts: list[tuple[int, bytes]] | None = None,
          two_byte: bool = False, raw_ext: bytes | None = None, pad: int = 0) -> bytes:
    b0 = 0x80 | len(csrcs) | (0x20 if pad else 0)
    block = b""
    if raw_ext is not None:
        block = raw_ext
    elif exts is not None:
        block = ext_block(exts, two_byte=two_byte)
    if block:
        b0 |= 0x10
    header = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    header += b"".join(struct.pack("!I", c) for c in csrcs)
    padding = bytes(pad - 1) + bytes((pad,)) if pad else b""
    return header + block + payload + padding


CHROME_VIDEO = build(b"\x90\x80" + bytes(1098), exts=[(AST, b"\x12\x34\x56"),
                                                       (TWCC, b"\x01\x02"), (MID, b"0")])


# --- parse_rtp ---------------------------------------------------------------------------


def test_parse_fixed_header_fields() -> None:
    buf = build(b"abc", pt=111, marker=True, seq=65535, ts=0xFFFFFFFF, ssrc=0xDEADBEEF)
    assert parse_rtp(buf) == RtpView(
        payload_type=111, marker=True, seq=65535, timestamp=0xFFFFFFFF, ssrc=0xDEADBEEF,
        csrc_count=0, padding=False, ext_profile=0, ext_offset=0, ext_size=0,
        payload_offset=12, payload_size=3, padding_size=0)


@pytest.mark.parametrize(
    ("kwargs", "payload_offset", "ext"),
    [
        ({}, 12, (0, 0, 0)),
        ({"csrcs": (1, 2, 3)}, 24, (0, 0, 0)),
        ({"exts": [(MID, b"0")]}, 20, (0xBEDE, 16, 4)),
        ({"exts": [(MID, b"0")], "csrcs": (7,)}, 24, (0xBEDE, 20, 4)),
        ({"exts": [(200, b"abcde")], "two_byte": True}, 24, (0x1000, 16, 8)),
        ({"raw_ext": struct.pack("!HH", 0xABAC, 1) + b"wxyz"}, 20, (0xABAC, 16, 4)),
        ({"raw_ext": struct.pack("!HH", 0xBEDE, 0)}, 16, (0xBEDE, 16, 0)),
    ],
)
def test_parse_layout(kwargs: dict, payload_offset: int, ext: tuple[int, int, int]) -> None:
    buf = build(b"payload!", **kwargs)
    view = parse_rtp(buf)
    assert (view.ext_profile, view.ext_offset, view.ext_size) == ext
    assert view.payload_offset == payload_offset
    assert bytes(view.payload(buf)) == b"payload!"
    assert view.csrcs(buf) == kwargs.get("csrcs", ())


@pytest.mark.parametrize("pad", [1, 4, 255])
def test_parse_padding_is_excluded_from_payload(pad: int) -> None:
    buf = build(b"abcd", exts=[(TWCC, b"\x00\x01")], pad=pad)
    view = parse_rtp(buf)
    assert view.padding and view.padding_size == pad
    assert view.payload_size == 4
    assert bytes(view.payload(buf)) == b"abcd"


def test_padding_only_packet_has_empty_payload() -> None:
    buf = build(b"", pad=200)  # what Chrome sends as bandwidth probes
    view = parse_rtp(buf)
    assert view.payload_size == 0 and view.padding_size == 200


def test_parse_accepts_bytearray_and_memoryview() -> None:
    expected = parse_rtp(CHROME_VIDEO)
    assert parse_rtp(bytearray(CHROME_VIDEO)) == expected
    assert parse_rtp(memoryview(CHROME_VIDEO)) == expected


@pytest.mark.parametrize(
    ("buf", "message"),
    [
        (b"", "RTP packet too short: 0 bytes, the fixed header needs 12"),
        (b"\x80\x60\x00\x01", "RTP packet too short: 4 bytes, the fixed header needs 12"),
        (b"\x40" + bytes(15), "RTP version is 1, expected 2"),
        (b"\x00" + bytes(15), "RTP version is 0, expected 2"),
        (b"\x83" + bytes(19), "RTP packet too short for 3 CSRCs: 20 bytes, need 24"),
        (b"\x90" + bytes(13),
         "RTP header extension truncated: packet has 14 bytes, the extension header ends at 16"),
        (b"\x91" + bytes(17),
         "RTP header extension truncated: packet has 18 bytes, the extension header ends at 20"),
        (b"\x90" + bytes(11) + b"\xbe\xde\x00\x02" + bytes(4),
         "RTP header extension of 2 words overruns the packet: header ends at 24, packet has"
         " 20 bytes"),
        (b"\xa0" + bytes(11) + b"abc\x00", "RTP padding bit set but the padding count byte is 0"),
        (b"\xa0" + bytes(11) + b"abc\x05",
         "RTP padding count 5 exceeds the 4 bytes after the header"),
    ],
)
def test_parse_rejects_malformed(buf: bytes, message: str) -> None:
    with pytest.raises(ValueError) as exc_info:
        parse_rtp(buf)
    assert str(exc_info.value) == message


def test_is_rtcp_demultiplexes_rfc5761() -> None:
    assert is_rtcp(b"\x80\xc8\x00\x06")  # SR
    assert is_rtcp(b"\x81\xcd\x00\x04")  # RTPFB
    assert not is_rtcp(build(pt=96))
    assert not is_rtcp(build(pt=111, marker=True))  # 0xEF, above the RTCP range
    assert not is_rtcp(b"\x80")


# --- header extensions -------------------------------------------------------------------


def test_iter_one_byte_extensions_with_padding() -> None:
    # padding bytes between elements are skipped (RFC 8285 4.2)
    raw = ext_block([(1, b"\x7f"), (2, b"\x01\x02\x03"), (14, bytes(16))], padding_between=2)
    buf = build(raw_ext=raw)
    assert [(i, n) for i, _, n in iter_extensions(buf)] == [(1, 1), (2, 3), (14, 16)]
    off, n = find_extension(buf, 2)  # type: ignore[misc]
    assert buf[off : off + n] == b"\x01\x02\x03"


def test_one_byte_id_15_stops_processing() -> None:
    body = bytes([0x10, 0xAA, 0xF3, 0x20, 0xBB, 0x00])  # id 1, then id 15, then id 2
    buf = build(raw_ext=struct.pack("!HH", 0xBEDE, 2) + body + b"\x00\x00")
    assert [i for i, _, _ in iter_extensions(buf)] == [1]
    assert find_extension(buf, 2) is None


@pytest.mark.parametrize("appbits", [0, 5, 15])
def test_iter_two_byte_extensions(appbits: int) -> None:
    body = bytes([0, 1, 0]) + bytes([255, 3]) + b"abc" + bytes([0, 0]) + bytes([7, 17]) + bytes(17)
    body += bytes(-len(body) % 4)
    buf = build(raw_ext=struct.pack("!HH", 0x1000 | appbits, len(body) // 4) + body)
    assert [(i, n) for i, _, n in iter_extensions(buf)] == [(1, 0), (255, 3), (7, 17)]
    assert extension_value(buf, 255) == b"abc"
    assert extension_value(buf, 1) == b""
    assert extension_value(buf, 9) is None


def test_other_profiles_have_no_elements() -> None:
    buf = build(raw_ext=struct.pack("!HH", 0xABAC, 1) + b"\x12\x34\x56\x78")
    assert iter_extensions(buf) == []
    assert find_extension(buf, 1) is None


def test_no_extension_block() -> None:
    buf = build()
    assert iter_extensions(buf) == []
    assert find_extension(buf, TWCC) is None
    assert read_transport_seq(buf, TWCC) is None
    assert read_mid(buf, MID) is None


def test_view_extension_methods_match_module_functions() -> None:
    view = parse_rtp(CHROME_VIDEO)
    assert view.extensions(CHROME_VIDEO) == iter_extensions(CHROME_VIDEO)
    for ext_id in range(16):
        assert view.find_extension(CHROME_VIDEO, ext_id) == find_extension(CHROME_VIDEO, ext_id)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (struct.pack("!HH", 0xBEDE, 1) + bytes([0x13, 1, 2, 3]),
         "RTP one-byte header extension id 1 of 4 bytes overruns the extension block by 1"
         " bytes"),
        (struct.pack("!HH", 0x1000, 1) + bytes([0, 0, 0, 9]),
         "RTP two-byte header extension id 9 has no length byte"),
        (struct.pack("!HH", 0x1000, 1) + bytes([9, 5, 0, 0]),
         "RTP two-byte header extension id 9 of 5 bytes overruns the extension block by 3"
         " bytes"),
    ],
)
def test_malformed_extension_elements(raw: bytes, message: str) -> None:
    buf = build(raw_ext=raw)
    parse_rtp(buf)  # the block fits the packet; only its elements are wrong
    for call in (lambda: iter_extensions(buf), lambda: find_extension(buf, 12),
                 lambda: rebuild_extensions(buf, {1: 1, 9: 9})):
        with pytest.raises(ValueError) as exc_info:
            call()
        assert str(exc_info.value) == message


def test_read_helpers() -> None:
    buf = build(exts=[(MID, b"audio-1"), (RID, b"h"), (RRID, b"q\x00\x00"), (AST, b"\x40\x00\x01"),
                      (TWCC, b"\xff\xfe"), (LEVEL, b"\xaa")])
    assert read_mid(buf, MID) == "audio-1"
    assert read_rid(buf, RID) == "h"
    assert read_rid(buf, RRID) == "q"  # a NUL ends the string, as in libwebrtc
    assert read_abs_send_time(buf, AST) == 0x400001
    assert read_transport_seq(buf, TWCC) == 0xFFFE
    assert read_audio_level(buf, LEVEL) == AudioLevel(voice_activity=True, level_dbov=-42)
    assert read_audio_level(buf, 12) is None


def test_transport_seq_accepts_the_four_byte_v2_form() -> None:
    buf = build(exts=[(TWCC, b"\x12\x34\x80\x05")])
    assert read_transport_seq(buf, TWCC) == 0x1234


@pytest.mark.parametrize(
    ("exts", "call", "message"),
    [
        ([(AST, b"\x01\x02")], lambda b: read_abs_send_time(b, AST),
         "RTP abs-send-time extension (id 2) is 2 bytes, not 3"),
        ([(TWCC, b"\x01")], lambda b: read_transport_seq(b, TWCC),
         "RTP transport-cc extension (id 3) is 1 bytes, expected 2 or 4"),
        ([(MID, b"\x00\x00")], lambda b: read_mid(b, MID),
         "RTP mid header extension (id 4) is empty"),
        ([(RID, b"\xff")], lambda b: read_rid(b, RID),
         "RTP rid header extension (id 10) is not valid text: b'\\xff'"),
    ],
)
def test_read_helpers_reject_bad_values(exts: list, call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError) as exc_info:
        call(build(exts=exts))
    assert str(exc_info.value) == message


def test_audio_level_zero_length_two_byte_element() -> None:
    buf = build(exts=[(LEVEL, b"")], two_byte=True)
    with pytest.raises(ValueError, match=r"audio level extension \(id 1\) is empty"):
        read_audio_level(buf, LEVEL)


def test_abs_send_time_encoding() -> None:
    assert abs_send_time_from_us(0) == 0
    assert abs_send_time_from_us(1_000_000) == 1 << 18
    assert abs_send_time_from_us(64_000_000) == 0  # wraps every 64 s
    assert abs_send_time_from_us(63_999_999) == 0xFFFFFF
    assert encode_abs_send_time(1_500_000) == bytes((0x06, 0x00, 0x00))
    assert abs_send_time_to_us(3 << 17) == 1_500_000
    for t_us in (0, 3_814, 1_000_000, 12_345_678, 63_999_999):
        assert abs(abs_send_time_to_us(abs_send_time_from_us(t_us)) - t_us) <= 4


def test_encode_small_values() -> None:
    assert encode_transport_seq(0x1FFFF) == b"\xff\xff"
    assert encode_audio_level(True, -127) == b"\xff"
    assert encode_audio_level(False, 0) == b"\x00"
    with pytest.raises(ValueError, match="audio level 3 dBov is outside -127..0"):
        encode_audio_level(False, 3)


# --- aiortc as an oracle -----------------------------------------------------------------


def aiortc_packet(**ext_values: object) -> tuple[RtpPacket, bytes]:
    p = RtpPacket(payload_type=100, marker=1, sequence_number=4242, timestamp=99999,
                  ssrc=0xCAFEBABE, payload=b"\x01\x02\x03\x04\x05")
    p.csrc = [1, 2]
    for name, value in ext_values.items():
        setattr(p.extensions, name, value)
    return p, p.serialize(aiortc_map())


def test_readers_agree_with_aiortc() -> None:
    p, data = aiortc_packet(mid="v1", rtp_stream_id="f", repaired_rtp_stream_id="f",
                            abs_send_time=0x123456, transport_sequence_number=777,
                            audio_level=(False, 90))
    view = parse_rtp(data)
    assert (view.payload_type, view.marker, view.seq, view.timestamp, view.ssrc) == (
        100, True, 4242, 99999, 0xCAFEBABE)
    assert view.csrcs(data) == (1, 2)
    assert bytes(view.payload(data)) == p.payload
    assert read_mid(data, MID) == "v1"
    assert read_rid(data, RID) == "f" and read_rid(data, RRID) == "f"
    assert read_abs_send_time(data, AST) == 0x123456
    assert read_transport_seq(data, TWCC) == 777
    assert read_audio_level(data, LEVEL) == AudioLevel(False, -90)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    pt=st.integers(0, 127), marker=st.booleans(), seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF), ssrc=st.integers(0, 0xFFFFFFFF),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    payload=st.binary(max_size=64), pad=st.integers(0, 255),
    mid=st.none() | st.text("abcdefghij0123456789", min_size=1, max_size=16),
    twcc=st.none() | st.integers(0, 0xFFFF), ast=st.none() | st.integers(0, 0xFFFFFF),
)
def test_parse_matches_aiortc(pt: int, marker: bool, seq: int, ts: int, ssrc: int,
                              csrcs: list[int], payload: bytes, pad: int, mid: str | None,
                              twcc: int | None, ast: int | None) -> None:
    p = RtpPacket(payload_type=pt, marker=int(marker), sequence_number=seq, timestamp=ts,
                  ssrc=ssrc, payload=payload)
    p.csrc = csrcs
    p.padding_size = pad
    p.extensions.mid = mid
    p.extensions.transport_sequence_number = twcc
    p.extensions.abs_send_time = ast
    data = p.serialize(aiortc_map())
    view = parse_rtp(data)
    q = RtpPacket.parse(data, aiortc_map())
    assert (view.payload_type, view.marker, view.seq, view.timestamp, view.ssrc) == (
        q.payload_type, bool(q.marker), q.sequence_number, q.timestamp, q.ssrc)
    assert list(view.csrcs(data)) == q.csrc
    assert bytes(view.payload(data)) == q.payload == payload
    assert view.padding_size == q.padding_size == pad
    assert read_mid(data, MID) == mid
    assert read_transport_seq(data, TWCC) == twcc
    assert read_abs_send_time(data, AST) == ast


# --- rewriting ---------------------------------------------------------------------------


def test_rewrite_header_in_place() -> None:
    buf = bytearray(build(b"xyz", pt=96, marker=True, csrcs=(5,), exts=[(MID, b"0")]))
    before = bytes(buf)
    rewrite_header(buf, seq=0x1_0005, timestamp=0x1_0000_0007, ssrc=0xABCDEF01, payload_type=102)
    view = parse_rtp(buf)
    assert (view.seq, view.timestamp, view.ssrc, view.payload_type, view.marker) == (
        5, 7, 0xABCDEF01, 102, True)  # extended values are masked; the marker is kept
    assert buf[0] == before[0] and buf[12:] == before[12:]
    rewrite_header(buf, seq=1, timestamp=2, ssrc=3, payload_type=96, marker=False)
    assert parse_rtp(buf).marker is False
    rewrite_header(buf, seq=1, timestamp=2, ssrc=3, payload_type=96, marker=True)
    assert parse_rtp(buf).marker is True


def test_rewrite_header_matches_aiortc() -> None:
    _, data = aiortc_packet(mid="m", transport_sequence_number=1)
    buf = bytearray(data)
    rewrite_header(buf, seq=9, timestamp=10, ssrc=11, payload_type=12, marker=False)
    q = RtpPacket.parse(bytes(buf), aiortc_map())
    assert (q.sequence_number, q.timestamp, q.ssrc, q.payload_type, q.marker) == (9, 10, 11, 12, 0)
    assert q.extensions.mid == "m" and q.payload == b"\x01\x02\x03\x04\x05"


def test_rewrite_header_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="RTP packet too short: 4 bytes"):
        rewrite_header(bytearray(4), seq=1, timestamp=1, ssrc=1, payload_type=1)
    with pytest.raises(ValueError, match="RTP payload type 128 is outside 0..127"):
        rewrite_header(bytearray(build()), seq=1, timestamp=1, ssrc=1, payload_type=128)


def test_rewrite_extension_in_place() -> None:
    buf = bytearray(CHROME_VIDEO)
    rewrite_extension(buf, TWCC, encode_transport_seq(0xBEEF))
    rewrite_extension(buf, AST, encode_abs_send_time(2_000_000))
    assert read_transport_seq(buf, TWCC) == 0xBEEF
    assert read_abs_send_time(buf, AST) == 2 << 18
    assert buf[28:] == CHROME_VIDEO[28:]
    with pytest.raises(ValueError, match="id 3 is 2 bytes, cannot rewrite it in place with 3"):
        rewrite_extension(buf, TWCC, b"abc")
    with pytest.raises(ValueError, match="RTP header extension id 9 is not in the packet"):
        rewrite_extension(buf, 9, b"a")


def test_template_then_patch_per_subscriber() -> None:
    template = rebuild_extensions(CHROME_VIDEO, {AST: AST, MID: MID},
                                  [(TWCC, b"\x00\x00")])
    twcc_at, _ = find_extension(template, TWCC)  # type: ignore[misc]
    ast_at, _ = find_extension(template, AST)  # type: ignore[misc]
    for seq in (1, 0x1_FFFF):
        out = bytearray(template)
        rewrite_header(out, seq=seq, timestamp=9, ssrc=10, payload_type=97)
        write_transport_seq(out, twcc_at, seq + 100)
        write_abs_send_time(out, ast_at, 1_500_000)
        assert read_transport_seq(out, TWCC) == (seq + 100) & 0xFFFF
        assert read_abs_send_time(out, AST) == abs_send_time_from_us(1_500_000)
        assert read_mid(out, MID) == "0"
        assert bytes(parse_rtp(out).payload(out)) == CHROME_VIDEO[28:]


def elements(buf: bytes | bytearray) -> list[tuple[int, bytes]]:
    return [(i, bytes(buf[o : o + n])) for i, o, n in iter_extensions(buf)]


def test_rebuild_keeps_remaps_and_adds() -> None:
    out = rebuild_extensions(CHROME_VIDEO, {AST: 7, MID: 5},
                             [(6, b"subscriber-video"), (TWCC, b"\x00\x09")])
    assert elements(out) == [(7, b"\x12\x34\x56"), (5, b"0"), (6, b"subscriber-video"),
                             (TWCC, b"\x00\x09")]
    view = parse_rtp(out)
    assert view.ext_profile == 0xBEDE
    assert bytes(view.payload(out)) == CHROME_VIDEO[28:]
    assert out[1:12] == CHROME_VIDEO[1:12]


def test_rebuild_added_element_replaces_a_kept_one() -> None:
    # the subscriber's mid is longer than the publisher's: the packet grows, payload intact
    out = rebuild_extensions(CHROME_VIDEO, {AST: AST, TWCC: TWCC, MID: MID},
                             [(MID, b"mid-of-subscriber"[:16]), (TWCC, b"\xab\xcd")])
    assert elements(out) == [(AST, b"\x12\x34\x56"), (TWCC, b"\xab\xcd"),
                             (MID, b"mid-of-subscribe")]
    assert len(out) == len(CHROME_VIDEO) + 12  # 9 → 24 bytes of elements, in words
    assert bytes(parse_rtp(out).payload(out)) == CHROME_VIDEO[28:]


@pytest.mark.parametrize(
    "add",
    [
        [(15, b"x")],  # id above 14
        [(12, bytes(17))],  # longer than 16 bytes
        [(12, b"")],  # empty value
    ],
)
def test_rebuild_falls_back_to_two_byte_form(add: list[tuple[int, bytes]]) -> None:
    out = rebuild_extensions(CHROME_VIDEO, {MID: MID}, add)
    assert parse_rtp(out).ext_profile == 0x1000
    assert elements(out) == [(MID, b"0"), *add]
    q = RtpPacket.parse(bytes(out), aiortc_map())
    assert q.extensions.mid == "0"


def test_rebuild_two_byte_input_to_one_byte_output() -> None:
    buf = build(b"pp", exts=[(MID, b"abc"), (100, b"zz")], two_byte=True, csrcs=(9, 8), pad=3)
    out = rebuild_extensions(buf, {MID: 1, 100: 2})
    assert parse_rtp(out).ext_profile == 0xBEDE
    assert elements(out) == [(1, b"abc"), (2, b"zz")]
    view = parse_rtp(out)
    assert view.csrcs(out) == (9, 8) and view.padding_size == 3
    assert bytes(view.payload(out)) == b"pp"


def test_rebuild_without_elements_clears_the_x_bit() -> None:
    buf = build(b"data", exts=[(MID, b"0")], pad=2, marker=True)
    out = rebuild_extensions(buf, {})
    assert out == build(b"data", pad=2, marker=True)
    assert rebuild_extensions(build(b"data"), {1: 1}) == build(b"data")


def test_rebuild_adds_to_a_packet_without_extensions() -> None:
    out = rebuild_extensions(build(b"data", csrcs=(1,)), {}, [(TWCC, b"\x00\x01")])
    assert out == build(b"data", csrcs=(1,), exts=[(TWCC, b"\x00\x01")])


def test_rebuild_drops_non_rfc8285_blocks_and_keeps_first_duplicate() -> None:
    buf = build(raw_ext=struct.pack("!HH", 0xABAC, 1) + b"\x11abc")
    assert rebuild_extensions(buf, {1: 1}) == build()
    dup = build(exts=[(MID, b"a"), (MID, b"b")])
    assert elements(rebuild_extensions(dup, {MID: MID})) == [(MID, b"a")]


def test_rebuild_rejects_bad_ids_and_lengths() -> None:
    with pytest.raises(ValueError, match="RTP header extension id 0 is outside 1..255"):
        rebuild_extensions(CHROME_VIDEO, {MID: 0})
    with pytest.raises(ValueError, match="RTP header extension id 256 is outside 1..255"):
        rebuild_extensions(CHROME_VIDEO, {}, [(256, b"x")])
    with pytest.raises(ValueError, match="id 20 value of 256 bytes exceeds 255"):
        rebuild_extensions(CHROME_VIDEO, {}, [(20, bytes(256))])


def test_rebuild_output_parses_in_aiortc_with_remapped_ids() -> None:
    _, data = aiortc_packet(mid="pub", rtp_stream_id="h", abs_send_time=5,
                            transport_sequence_number=1)
    remap = {MID: 9, AST: 12, TWCC: 13, RID: None}
    out = rebuild_extensions(data, remap, [(13, encode_transport_seq(4000)), (9, b"sub-mid")])
    q = RtpPacket.parse(bytes(out), aiortc_map({MID: 9, AST: 12, TWCC: 13}))
    assert q.extensions.mid == "sub-mid"
    assert q.extensions.abs_send_time == 5
    assert q.extensions.transport_sequence_number == 4000
    assert q.extensions.rtp_stream_id is None
    assert q.payload == b"\x01\x02\x03\x04\x05" and q.csrc == [1, 2]


ext_values = st.binary(min_size=0, max_size=24)


@settings(max_examples=300)
@given(
    exts=st.dictionaries(st.integers(1, 255), ext_values, max_size=8),
    keep_ids=st.dictionaries(st.integers(1, 255), st.none() | st.integers(1, 255), max_size=8),
    add=st.dictionaries(st.integers(1, 255), ext_values, max_size=3),
    payload=st.binary(max_size=40), pad=st.integers(0, 20),
)
def test_rebuild_model(exts: dict[int, bytes], keep_ids: dict[int, int | None],
                       add: dict[int, bytes], payload: bytes, pad: int) -> None:
    buf = build(payload, exts=list(exts.items()), two_byte=True, pad=pad) if exts else build(
        payload, pad=pad)
    out = rebuild_extensions(buf, keep_ids, list(add.items()))
    # model: kept elements in input order (first per output id), then the added ones
    expected: dict[int, bytes] = {}
    for in_id, value in exts.items():
        out_id = keep_ids.get(in_id)
        if out_id is not None and out_id not in expected and out_id not in add:
            expected[out_id] = value
    expected.update(add)
    assert sorted(elements(out)) == sorted(expected.items())
    view = parse_rtp(out)
    one_byte = all(i <= 14 and 1 <= len(v) <= 16 for i, v in expected.items())
    assert view.ext_profile == (0 if not expected else 0xBEDE if one_byte else 0x1000)
    assert bytes(view.payload(out)) == payload and view.padding_size == pad
    assert out[1:12] == buf[1:12]


# --- fuzz --------------------------------------------------------------------------------


def _all_readers(buf: bytes) -> None:
    for call in (parse_rtp, iter_extensions, lambda b: find_extension(b, 5),
                 lambda b: read_mid(b, 1), lambda b: read_rid(b, 2),
                 lambda b: read_abs_send_time(b, 3), lambda b: read_transport_seq(b, 4),
                 lambda b: read_audio_level(b, 5),
                 lambda b: rebuild_extensions(b, {i: i for i in range(1, 16)}, [(3, b"ab")])):
        try:
            call(buf)
        except ValueError:
            pass


@settings(max_examples=2000)
@given(st.binary(max_size=80))
@example(b"\x90" + bytes(15))
@example(b"\xb0" + bytes(11) + b"\x10\x00\x00\x01\x05\x05\x00\x00")
def test_fuzz_random_bytes_raise_only_value_error(buf: bytes) -> None:
    _all_readers(buf)


@settings(max_examples=1000)
@given(st.data())
def test_fuzz_mutated_packets_raise_only_value_error(data: st.DataObject) -> None:
    buf = bytearray(build(b"abcdef", exts=[(MID, b"0"), (TWCC, b"\x01\x02"), (AST, b"xyz")],
                          csrcs=(1,), pad=3))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    _all_readers(bytes(buf[:cut]))


# --- unwrapping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seqs", "expected"),
    [
        ([1, 2, 3], [1, 2, 3]),
        ([65534, 65535, 0, 1], [65534, 65535, 65536, 65537]),
        ([65535, 1, 0, 65534, 2], [65535, 65537, 65536, 65534, 65538]),  # reorder across wrap
        ([0, 65535, 1], [0, -1, 1]),  # older than the first packet
        ([10, 10, 9], [10, 10, 9]),
        ([0, 32767, 65534], [0, 32767, 65534]),
        ([0, 32768], [0, -32768]),  # exactly half the space counts as older
    ],
)
def test_seq_unwrapper(seqs: list[int], expected: list[int]) -> None:
    u = SeqUnwrapper()
    assert [u.unwrap(s) for s in seqs] == expected
    assert u.highest == max(expected)


def test_ts_unwrapper() -> None:
    u = TsUnwrapper()
    seq = [0xFFFFFF00, 0xFFFFFFF0, 0x10, 0xFFFFFFF8, 0x1000]
    assert [u.unwrap(t) for t in seq] == [0xFFFFFF00, 0xFFFFFFF0, 0x1_0000_0010,
                                          0xFFFFFFF8, 0x1_0000_1000]
    assert u.highest == 0x1_0000_1000


@given(start=st.integers(0, 0xFFFF),
       steps=st.lists(st.integers(-0x7FFF, 0x7FFF), min_size=1, max_size=200))
def test_seq_unwrapper_recovers_any_walk(start: int, steps: list[int]) -> None:
    # each value is within half the space of the highest seen so far
    u = SeqUnwrapper()
    assert u.unwrap(start) == start
    highest = start
    for step in steps:
        ext = highest + step
        assert u.unwrap(ext & 0xFFFF) == ext
        highest = max(highest, ext)


@given(start=st.integers(0, 0xFFFFFFFF),
       steps=st.lists(st.integers(-0x7FFFFFFF, 0x7FFFFFFF), min_size=1, max_size=100))
def test_ts_unwrapper_recovers_any_walk(start: int, steps: list[int]) -> None:
    u = TsUnwrapper()
    assert u.unwrap(start) == start
    highest = start
    for step in steps:
        ext = highest + step
        assert u.unwrap(ext & 0xFFFFFFFF) == ext
        highest = max(highest, ext)
