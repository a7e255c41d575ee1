"""sfu.rtp.rtcp: compound RTCP parsing and the builders.

Oracles: aiortc's RTCP classes for SR/RR/SDES/BYE/NACK/PLI/REMB (whose formats it gets
right), hand-computed transport-cc packets built around the chunk examples of
draft-holmer-rmcat-transport-wide-cc-extensions-01 section 3.1, and round trips.
"""

from __future__ import annotations

import struct
from typing import SupportsBytes

import pytest
from aiortc.rtp import (
    RtcpByePacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sfu.rtp.rtcp import (
    Bye,
    Fir,
    FirEntry,
    Nack,
    Pli,
    RawRtcp,
    ReceiverReport,
    Remb,
    ReportBlock,
    Sdes,
    SdesChunk,
    SenderReport,
    TransportCc,
    TransportCcEncoder,
    build_bye,
    build_fir,
    build_nack,
    build_pli,
    build_remb,
    build_rr,
    build_sdes,
    build_sdes_cname,
    build_sr,
    build_transport_cc,
    nack_pairs,
    parse_rtcp,
)

BLOCK = ReportBlock(ssrc=0x01020304, fraction_lost=25, cumulative_lost=-3,
                    ext_highest_seq=0x0001_FFFE, jitter=321, lsr=0xB7052000, dlsr=0x00054000)
BLOCK2 = ReportBlock(ssrc=7, fraction_lost=255, cumulative_lost=0x7FFFFF,
                     ext_highest_seq=0xFFFFFFFF, jitter=0, lsr=0, dlsr=0)


def u32(*values: int) -> bytes:
    return b"".join(struct.pack("!I", v) for v in values)


# --- round trips -------------------------------------------------------------------------

PACKETS = [
    SenderReport(0xAABBCCDD, 0xE1234567_89ABCDEF, 90000, 100, 120000, (BLOCK,)),
    SenderReport(1, 0, 0, 0, 0),
    ReceiverReport(0x10, (BLOCK, BLOCK2)),
    ReceiverReport(0x10),
    Sdes((SdesChunk(0x11, ((1, b"user@host"),)), SdesChunk(0x12, ((1, b"x"), (6, b"tool"))))),
    Sdes((SdesChunk(0x11, ((1, b"abc"),)),)),  # chunk needing a whole word of padding
    Bye((1, 2, 3), "gone"),
    Bye((), None),
    Bye((9,), ""),
    Nack(1, 2, (100, 101, 116, 117, 200)),
    Pli(5, 6),
    Fir(5, (FirEntry(0x111, 3), FirEntry(0x222, 255))),
    Remb(5, 1_500_000, (0x111, 0x222)),
    Remb(5, 0, ()),
    TransportCc(1, 2, 65530, 5, 9, ((65530, 320_000), (65531, None), (65532, 330_000))),
    RawRtcp(204, 3, b"\x83\xcc\x00\x03" + u32(9) + b"name" + b"data"),  # APP
    RawRtcp(207, 0, b"\x80\xcf\x00\x02" + u32(9) + b"\x04\x00\x00\x00"),  # XR
]


@pytest.mark.parametrize("packet", PACKETS, ids=lambda p: type(p).__name__)
def test_round_trip(packet: object) -> None:
    data = packet.to_bytes()  # type: ignore[attr-defined]
    assert len(data) % 4 == 0
    assert parse_rtcp(data) == [packet]
    assert parse_rtcp(data)[0].to_bytes() == data


def test_compound_round_trip_and_padding() -> None:
    compound = b"".join(p.to_bytes() for p in PACKETS)  # type: ignore[attr-defined]
    assert parse_rtcp(compound) == PACKETS
    # a padded last packet (RFC 3550 6.4.1: the P bit on the last packet of a compound)
    padded = bytearray(build_pli(1, 2) + b"\x00\x00\x00\x04")
    padded[0] |= 0x20
    struct.pack_into("!H", padded, 2, 3)
    assert parse_rtcp(build_rr(9) + bytes(padded)) == [ReceiverReport(9), Pli(1, 2)]


def test_unknown_types_and_formats_are_kept_raw() -> None:
    tmmbr = b"\x83\xcd\x00\x04" + u32(1, 2, 3, 4)  # RTPFB fmt 3
    sli = b"\x82\xce\x00\x03" + u32(1, 2, 3)  # PSFB fmt 2
    afb = b"\x8f\xce\x00\x04" + u32(1, 0) + b"GOOG" + u32(0)  # AFB, not REMB
    other = b"\x80\xd0\x00\x00"  # type 208
    packets = parse_rtcp(tmmbr + sli + afb + other)
    assert packets == [RawRtcp(205, 3, tmmbr), RawRtcp(206, 2, sli), RawRtcp(206, 15, afb),
                       RawRtcp(208, 0, other)]


def test_reduced_size_rtcp_needs_no_leading_report() -> None:
    assert parse_rtcp(build_pli(1, 2) + build_nack(1, 2, [5])) == [Pli(1, 2), Nack(1, 2, (5,))]


def test_sdes_cname() -> None:
    data = build_sdes_cname(0x1234, "{d9f1-é}")
    [sdes] = parse_rtcp(data)
    assert isinstance(sdes, Sdes)
    assert sdes.chunks[0].ssrc == 0x1234 and sdes.chunks[0].cname == "{d9f1-é}"
    assert SdesChunk(1, ((6, b"tool"),)).cname is None
    assert data == build_sdes([SdesChunk(0x1234, ((1, "{d9f1-é}".encode()),))])


def test_sr_report_fields_wire_layout() -> None:
    data = build_sr(0x11, 0x0102030405060708, 0x0A0B0C0D, 7, 8, [BLOCK])
    assert data[:4] == b"\x81\xc8\x00\x0c"
    assert data[4:28] == u32(0x11, 0x01020304, 0x05060708, 0x0A0B0C0D, 7, 8)
    assert data[28:] == u32(0x01020304) + b"\x19\xff\xff\xfd" + u32(
        0x1FFFE, 321, 0xB7052000, 0x54000)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: build_rr(1, [BLOCK] * 32), "RTCP RR carries at most 31 report blocks, got 32"),
        (lambda: build_sr(1, 1 << 64, 0, 0, 0), "RTCP SR NTP timestamp 18446744073709551616 is"
                                                " outside 64 bits"),
        (lambda: build_rr(1, [ReportBlock(1, 256, 0, 0, 0, 0, 0)]),
         "RTCP report block fraction lost 256 outside 0..255"),
        (lambda: build_rr(1, [ReportBlock(1, 0, 0x800000, 0, 0, 0, 0)]),
         "RTCP report block cumulative lost 8388608 does not fit 24 bits"),
        (lambda: build_rr(1, [ReportBlock(1, 0, 0, 0, -1, 0, 0)]),
         "RTCP jitter -1 is outside 0..2^32-1"),
        (lambda: build_rr(1 << 32), "RTCP RR SSRC 4294967296 is outside 0..2^32-1"),
        (lambda: build_pli(-1, 0), "RTCP sender SSRC -1 is outside 0..2^32-1"),
        (lambda: build_nack(1, 2, []), "RTCP NACK needs at least one sequence number"),
        (lambda: build_fir(1, []), "RTCP FIR needs at least one entry"),
        (lambda: build_bye([1], "x" * 256), "RTCP BYE reason of 256 bytes exceeds 255"),
        (lambda: build_sdes_cname(1, "x" * 256),
         "RTCP SDES item type 1 value of 256 bytes exceeds 255"),
        (lambda: build_remb(1, -5, []), "REMB bitrate -5 bps is negative"),
        (lambda: build_transport_cc(sender_ssrc=1, media_ssrc=2, base_seq=0, fb_pkt_count=0,
                                    arrivals_us=[]),
         "transport-cc feedback needs at least one packet status"),
    ],
)
def test_builders_reject_out_of_range_values(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError) as exc_info:
        call()
    assert str(exc_info.value) == message


# --- aiortc as an oracle -----------------------------------------------------------------


def test_our_packets_parse_in_aiortc() -> None:
    sr, rr, sdes, bye, nack, pli, remb = RtcpPacket.parse(
        build_sr(0x11, 0xE1234567_89ABCDEF, 5, 6, 7, [BLOCK])
        + build_rr(0x12, [BLOCK, BLOCK2])
        + build_sdes_cname(0x13, "cname-1")
        + build_bye([0x14, 0x15])
        + build_nack(0x16, 0x17, [65535, 65536, 65551, 70000])
        + build_pli(0x18, 0x19)
        + build_remb(0x1A, 2_000_000, [0x1B, 0x1C])
    )
    assert isinstance(sr, RtcpSrPacket) and sr.ssrc == 0x11
    assert sr.sender_info.ntp_timestamp == 0xE1234567_89ABCDEF
    assert (sr.sender_info.rtp_timestamp, sr.sender_info.packet_count,
            sr.sender_info.octet_count) == (5, 6, 7)
    r = sr.reports[0]
    assert (r.ssrc, r.fraction_lost, r.packets_lost, r.highest_sequence, r.jitter, r.lsr,
            r.dlsr) == (BLOCK.ssrc, 25, -3, 0x1FFFE, 321, 0xB7052000, 0x54000)
    assert isinstance(rr, RtcpRrPacket) and [x.packets_lost for x in rr.reports] == [-3, 0x7FFFFF]
    assert isinstance(sdes, RtcpSdesPacket)
    assert sdes.chunks[0].ssrc == 0x13 and sdes.chunks[0].items == [(1, b"cname-1")]
    assert isinstance(bye, RtcpByePacket) and bye.sources == [0x14, 0x15]
    assert isinstance(nack, RtcpRtpfbPacket) and (nack.ssrc, nack.media_ssrc) == (0x16, 0x17)
    assert [s & 0xFFFF for s in nack.lost] == [65535, 0, 15, 70000 & 0xFFFF]
    assert isinstance(pli, RtcpPsfbPacket) and (pli.fmt, pli.ssrc, pli.media_ssrc) == (
        1, 0x18, 0x19)
    assert isinstance(remb, RtcpPsfbPacket) and remb.fmt == 15
    assert unpack_remb_fci(remb.fci) == (2_000_000, [0x1B, 0x1C])


def test_aiortc_packets_parse_here() -> None:
    from aiortc.rtp import RtcpReceiverInfo, RtcpSenderInfo, RtcpSourceInfo, pack_remb_fci

    info = RtcpReceiverInfo(ssrc=3, fraction_lost=4, packets_lost=-5, highest_sequence=6,
                            jitter=7, lsr=8, dlsr=9)
    packets: list[SupportsBytes] = [
        RtcpSrPacket(ssrc=1, sender_info=RtcpSenderInfo(ntp_timestamp=2, rtp_timestamp=3,
                                                        packet_count=4, octet_count=5),
                     reports=[info]),
        RtcpRrPacket(ssrc=2, reports=[info]),
        RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=3, items=[(1, b"abcd")])]),
        RtcpByePacket(sources=[4, 5]),
        RtcpRtpfbPacket(fmt=1, ssrc=6, media_ssrc=7, lost=[10, 12, 40]),
        RtcpPsfbPacket(fmt=1, ssrc=8, media_ssrc=9),
        RtcpPsfbPacket(fmt=15, ssrc=8, media_ssrc=0, fci=pack_remb_fci(123456, [1])),
    ]
    data = b"".join(bytes(p) for p in packets)
    block = ReportBlock(3, 4, -5, 6, 7, 8, 9)
    assert parse_rtcp(data) == [
        SenderReport(1, 2, 3, 4, 5, (block,)),
        ReceiverReport(2, (block,)),
        Sdes((SdesChunk(3, ((1, b"abcd"),)),)),
        Bye((4, 5)),
        Nack(6, 7, (10, 12, 40)),
        Pli(8, 9),
        Remb(8, 123456, (1,)),
    ]


# --- NACK, FIR, REMB details -------------------------------------------------------------


@pytest.mark.parametrize(
    ("seqs", "pairs"),
    [
        ([5], [(5, 0)]),
        ([5, 6, 21], [(5, 0b1000_0000_0000_0001)]),
        ([5, 22], [(5, 0), (22, 0)]),
        ([22, 5, 5, 6], [(5, 1), (22, 0)]),  # sorted and deduplicated
        ([65535, 65536, 65550], [(65535, 0b0100_0000_0000_0001)]),  # extended: one pair
        ([0, 65535], [(0, 0), (65535, 0)]),  # 16-bit across the wrap: still right
    ],
)
def test_nack_compression(seqs: list[int], pairs: list[tuple[int, int]]) -> None:
    assert nack_pairs(seqs) == pairs
    [nack] = parse_rtcp(build_nack(1, 2, seqs))
    assert isinstance(nack, Nack)
    assert sorted(nack.lost_seqs) == sorted({s & 0xFFFF for s in seqs})


@given(st.sets(st.integers(0, 200_000), min_size=1, max_size=100))
def test_nack_round_trips_any_set(seqs: set[int]) -> None:
    [nack] = parse_rtcp(build_nack(1, 2, seqs))
    assert isinstance(nack, Nack)
    assert set(nack.lost_seqs) == {s & 0xFFFF for s in seqs}
    # one FCI entry per 17-wide window at most
    assert len(nack.to_bytes()) <= 12 + 4 * len(seqs)


def test_fir_wire_layout() -> None:
    data = build_fir(0xA, [(0xB, 7), FirEntry(0xC, 300)])
    assert data == b"\x84\xce\x00\x06" + u32(0xA, 0) + u32(0xB) + b"\x07\x00\x00\x00" + u32(
        0xC) + b"\x2c\x00\x00\x00"


@pytest.mark.parametrize("bitrate", [0, 1, 0x3FFFF, 0x40000, 1_500_000, 10**9 + 7, 2**40 + 1])
def test_remb_mantissa_exponent(bitrate: int) -> None:
    [remb] = parse_rtcp(build_remb(1, bitrate, [2]))
    assert isinstance(remb, Remb)
    exponent = max(0, bitrate.bit_length() - 18)
    assert remb.bitrate_bps == (bitrate >> exponent) << exponent
    assert bitrate - remb.bitrate_bps < 1 << exponent or exponent == 0


# --- transport-cc: hand-computed vectors (draft-01 section 3.1 chunk examples) -----------


def twcc(base_seq: int, status_count: int, reference_time: int, fb_count: int, chunks: bytes,
         deltas: bytes) -> bytes:
    body = u32(1, 2) + struct.pack("!HHI", base_seq, status_count,
                                   (reference_time << 8) | fb_count) + chunks + deltas
    pad = -len(body) % 4
    b0 = 0x8F
    if pad:
        body += bytes(pad - 1) + bytes((pad,))
        b0 |= 0x20
    return bytes((b0, 205)) + struct.pack("!H", len(body) // 4) + body


# Run-length example 1 (0x00DD: 221 × "not received"), then one small delta of 4 ticks.
VECTOR_RUN = twcc(100, 222, 16, 7, b"\x00\xdd\x20\x01", b"\x04")
# One-bit status vector example (0x9F1C: N RRRRR NNN RRR NN), wrapping at seq 65535.
VECTOR_ONE_BIT = twcc(65530, 14, 1, 255, b"\x9f\x1c", bytes([0, 1, 255, 2, 16, 0, 3, 4]))
# Two-bit vector 0xD890 (small, large, not received, large, small): large and negative deltas.
VECTOR_TWO_BIT = twcc(1000, 5, 2, 0, b"\xd8\x90", b"\x08\xff\x38\x7f\xff\xff")


def test_twcc_vector_run_length() -> None:
    assert VECTOR_RUN.hex() == (
        "afcd0006" "00000001" "00000002" "006400de" "00001007" "00dd2001" "04000003")
    [fb] = parse_rtcp(VECTOR_RUN)
    assert isinstance(fb, TransportCc)
    assert (fb.base_seq, fb.status_count, fb.reference_time, fb.fb_pkt_count) == (100, 222, 16, 7)
    assert fb.packets == tuple((100 + i, None) for i in range(221)) + ((321, 1_025_000),)


def test_twcc_vector_one_bit() -> None:
    [fb] = parse_rtcp(VECTOR_ONE_BIT)
    assert isinstance(fb, TransportCc)
    assert fb.fb_pkt_count == 255
    assert fb.packets == (
        (65530, None), (65531, 64_000), (65532, 64_250), (65533, 128_000), (65534, 128_500),
        (65535, 132_500), (0, None), (1, None), (2, None), (3, 132_500), (4, 133_250),
        (5, 134_250), (6, None), (7, None))


def test_twcc_vector_two_bit_with_large_and_negative_deltas() -> None:
    assert len(VECTOR_TWO_BIT) == 28 and VECTOR_TWO_BIT[0] == 0x8F  # no padding needed
    [fb] = parse_rtcp(VECTOR_TWO_BIT)
    assert isinstance(fb, TransportCc)
    assert fb.packets == ((1000, 130_000), (1001, 80_000), (1002, None), (1003, 8_271_750),
                          (1004, 8_335_500))


@pytest.mark.parametrize("vector", [VECTOR_RUN, VECTOR_ONE_BIT, VECTOR_TWO_BIT])
def test_twcc_builder_reproduces_the_vectors_byte_for_byte(vector: bytes) -> None:
    [fb] = parse_rtcp(vector)
    assert isinstance(fb, TransportCc)
    assert fb.to_bytes() == vector


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        # the draft's two-bit example 0xCD50 and run-length example 2 (0x6018) use
        # symbol 3, reserved in -01; libwebrtc rejects such packets too
        (twcc(10, 7, 0, 0, b"\xcd\x50", b"\x01\x01\x01"),
         "RTCP transport-cc status symbol 3 (reserved) for seq 11"),
        (twcc(10, 24, 0, 0, b"\x60\x18", b""),
         "RTCP transport-cc status symbol 3 (reserved) for seq 10"),
        (twcc(10, 0, 0, 0, b"\x20\x01", b"\x01"),
         "RTCP transport-cc feedback has a packet status count of 0"),
        (twcc(10, 15, 0, 0, b"\x9f\x1c", bytes(8)),
         "RTCP transport-cc status chunks truncated after 14 of 15 statuses"),
        (twcc(10, 3, 0, 0, b"\x20\x03", b"\x01\x01"),
         "RTCP transport-cc receive delta for seq 12 is truncated"),
        (twcc(10, 1, 0, 0, b"\x40\x01", b"\x01"),
         "RTCP transport-cc receive delta for seq 10 is truncated"),
        (b"\x8f\xcd\x00\x03" + u32(1, 2, 3),
         "RTCP transport-cc feedback too short: 12 bytes, need at least 18"),
    ],
)
def test_twcc_malformed(packet: bytes, message: str) -> None:
    with pytest.raises(ValueError) as exc_info:
        parse_rtcp(packet)
    assert str(exc_info.value) == message


def test_twcc_status_count_cap() -> None:
    bomb = twcc(0, 65535, 0, 0, b"\x1f\xff" * 9, b"")  # 40 bytes, 65535 statuses
    [fb] = parse_rtcp(bomb)
    assert isinstance(fb, TransportCc) and fb.packets[-1] == (65534, None)
    with pytest.raises(ValueError) as exc_info:
        parse_rtcp(bomb, max_twcc_statuses=4096)
    assert str(exc_info.value) == (
        "RTCP transport-cc feedback reports 65535 statuses, more than the 4096 allowed")
    assert parse_rtcp(VECTOR_ONE_BIT, max_twcc_statuses=14)


def test_twcc_chunk_choice() -> None:
    def encode(arrivals: list[int | None]) -> bytes:
        return build_transport_cc(sender_ssrc=1, media_ssrc=2, base_seq=0, fb_pkt_count=0,
                                  arrivals_us=arrivals)

    # 20 received with small deltas: one run-length chunk, then 20 one-byte deltas
    data = encode([1000 * i for i in range(20)])
    assert data[20:22] == b"\x20\x14" and data[22:42] == bytes([0] + [4] * 19)
    # one received, 8201 missing, one received: the first 14 as a one-bit vector, then
    # run-length chunks (8191 is the longest run)
    data = encode([0] + [None] * 8201 + [1000])
    assert data[20:26] == b"\xa0\x00\x1f\xfc\x20\x01" and len(data) == 28
    data = encode([0] + [None] * 20000 + [1000])  # 13 + 8191 + 8191 + 3605
    assert data[20:30] == b"\xa0\x00\x1f\xff\x1f\xff\x0e\x15\x20\x01"
    # small, missing, large (+100 ms), large (-100 ms), 3 missing: a two-bit vector of 7
    data = encode([0, None, 100_000, 0, None, None, None, 1000])
    assert data[20:24] == b"\xd2\x80\x20\x01"
    assert data[24:30] == b"\x00\x01\x90\xfe\x70\x04"
    # 14 statuses of received/missing only: a one-bit vector
    data = encode([0, None, 0, 0, 0, 0, None, None, None, 0, 0, 0, None, None])
    assert data[20:22] == b"\xaf\x1c"  # 10 + 10111100011100


def test_twcc_delta_out_of_range_is_refused() -> None:
    encoder = TransportCcEncoder(0)
    assert encoder.add_received(20_000_000)  # tick 80000; reference 312 (×64 ms)
    assert not encoder.add_received(28_192_000)  # +32768 ticks
    assert encoder.add_received(28_191_999)  # +32767 ticks
    assert not encoder.add_received(19_999_749)  # -32769 ticks
    assert encoder.add_received(19_999_750)  # -32768 ticks
    [fb] = parse_rtcp(encoder.to_bytes(1, 2, 0))
    assert isinstance(fb, TransportCc)
    assert [t for _, t in fb.packets] == [20_000_000, 28_191_750, 19_999_750]
    with pytest.raises(ValueError, match=r"transport-cc status 1 \(arrival 9000000 µs\)"):
        build_transport_cc(sender_ssrc=1, media_ssrc=2, base_seq=0, fb_pkt_count=0,
                           arrivals_us=[0, 9_000_000])


# hypothesis: random arrival sets survive build → parse at 250 µs resolution
statuses = st.lists(
    st.one_of(st.none(), st.integers(-8_000_000, 8_000_000), st.integers(0, 2_000)),
    min_size=1, max_size=400)


@settings(max_examples=400)
@given(base_seq=st.integers(0, 0xFFFF), fb_count=st.integers(0, 255),
       start_us=st.integers(10**10, 10**12), steps=statuses)
@example(base_seq=0, fb_count=0, start_us=10**10, steps=[None] * 9000 + [5])
def test_twcc_build_parse_round_trip(base_seq: int, fb_count: int, start_us: int,
                                     steps: list[int | None]) -> None:
    arrivals: list[int | None] = []
    t = start_us
    for step in steps:
        if step is None:
            arrivals.append(None)
        else:
            t += step
            arrivals.append(t)
    data = build_transport_cc(sender_ssrc=3, media_ssrc=4, base_seq=base_seq,
                              fb_pkt_count=fb_count, arrivals_us=arrivals)
    [fb] = parse_rtcp(data)
    assert isinstance(fb, TransportCc)
    assert fb.fb_pkt_count == fb_count and fb.base_seq == base_seq
    assert fb.packets == tuple(
        ((base_seq + i) & 0xFFFF, None if a is None else a // 250 * 250)
        for i, a in enumerate(arrivals))
    assert fb.to_bytes() == data


@settings(max_examples=200)
@given(steps=statuses, max_size=st.integers(32, 300))
def test_twcc_encoder_respects_its_byte_budget(steps: list[int | None], max_size: int) -> None:
    encoder = TransportCcEncoder(0, max_size_bytes=max_size)
    t = 10**10
    for step in steps:
        if step is None:
            encoder.add_missing(1)
        else:
            t += step
            if not encoder.add_received(t):
                break
    if encoder.status_count:
        data = encoder.to_bytes(1, 2, 0)
        assert len(data) == encoder.size_bytes <= max_size
        [fb] = parse_rtcp(data)
        assert isinstance(fb, TransportCc) and fb.status_count == encoder.status_count


# --- malformed input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "RTCP packet is empty"),
        (b"\x80\xc8\x00", "RTCP header truncated at offset 0: 3 bytes left, need 4"),
        (b"\x40\xc8\x00\x00", "RTCP version is 1 at offset 0, expected 2"),
        (b"\x80\xc9\x00\x05" + u32(1), "RTCP packet type 201 at offset 0 declares 24 bytes,"
                                       " only 8 remain"),
        (b"\xa0\xc9\x00\x01" + u32(0), "RTCP packet type 201 at offset 0: padding count 0 is"
                                       " invalid for a 8-byte packet"),
        (b"\xa0\xc9\x00\x01" + u32(9), "RTCP packet type 201 at offset 0: padding count 9 is"
                                       " invalid for a 8-byte packet"),
        (b"\x80\xc8\x00\x01" + u32(1), "RTCP SR too short: 4 bytes after the header, need 24"),
        (b"\x80\xc9\x00\x00", "RTCP RR too short: 0 bytes after the header, need 4"),
        (b"\x81\xc9\x00\x01" + u32(1), "RTCP RR with 1 report blocks needs 24 bytes for them,"
                                       " has 0"),
        (b"\x81\xca\x00\x02" + u32(5) + b"\x01\x02ab",
         "RTCP SDES chunk for SSRC 0x00000005 has no end item"),
        (b"\x81\xca\x00\x02" + u32(5) + b"\x01\x09ab",
         "RTCP SDES item type 1 of 9 bytes overruns the packet by 7 bytes"),
        (b"\x82\xca\x00\x02" + u32(5) + b"\x00\x00\x00\x00", "RTCP SDES chunk 1 of 2 is truncated"),
        (b"\x82\xcb\x00\x01" + u32(1), "RTCP BYE with 2 SSRCs needs 8 bytes, has 4"),
        (b"\x81\xcb\x00\x02" + u32(1) + b"\x09abc",
         "RTCP BYE reason of 9 bytes overruns the packet by 6 bytes"),
        (b"\x81\xcd\x00\x01" + u32(1), "RTCP NACK body is 4 bytes, expected 8 plus a multiple"
                                       " of 4"),
        (b"\x81\xce\x00\x01" + u32(1), "RTCP PLI too short: 4 bytes, need 8"),
        (b"\x84\xce\x00\x03" + u32(1, 2, 3), "RTCP FIR body is 12 bytes, expected 8 plus a"
                                             " multiple of 8"),
        (b"\x8f\xce\x00\x05" + u32(1, 0) + b"REMB" + bytes([2, 0, 0, 1]) + u32(7),
         "RTCP REMB lists 2 SSRCs but has room for 1"),
        (build_pli(1, 2) + b"\x80\xc9\x00\x09", "RTCP packet type 201 at offset 12 declares 40"
                                                " bytes, only 4 remain"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(ValueError) as exc_info:
        parse_rtcp(data)
    assert str(exc_info.value) == message


@settings(max_examples=3000)
@given(st.binary(max_size=120))
@example(b"\x8f\xcd\x00\x04" + bytes(8) + b"\xff\xff\x00\x00\x00\x00")  # 65535 statuses
def test_fuzz_random_bytes_raise_only_value_error(data: bytes) -> None:
    try:
        parse_rtcp(data)
    except ValueError:
        pass


@settings(max_examples=1500)
@given(st.data())
def test_fuzz_mutated_compounds_raise_only_value_error(data: st.DataObject) -> None:
    buf = bytearray(b"".join(p.to_bytes() for p in PACKETS))  # type: ignore[attr-defined]
    buf += VECTOR_ONE_BIT + VECTOR_TWO_BIT
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    try:
        parse_rtcp(bytes(buf[: data.draw(st.integers(0, len(buf)))]))
    except ValueError:
        pass
