"""PublisherReceiver: the feedback Chromium's bandwidth estimator needs, on an injected clock."""

from __future__ import annotations

import struct

from sfu.rtcp_feedback import PublisherReceiver
from sfu.rtp.ntp import ntp_from_unix, ntp_middle32
from sfu.rtp.rtcp import ReceiverReport, Remb, TransportCc, build_sr, parse_rtcp
from sfu.webrtc.sdp import EXT_TRANSPORT_CC, NegotiatedCodec, PublishedMedia, PublisherNegotiation

TCC_ID = 3
SSRC = 0x11223344


def negotiation(with_tcc: bool = True) -> PublisherNegotiation:
    ext = {EXT_TRANSPORT_CC: TCC_ID} if with_tcc else {}
    media = PublishedMedia(mid="0", kind="video", direction="recvonly",
                           codecs=(NegotiatedCodec(96, "VP8", 90000, rtx_payload_type=97),),
                           extension_ids=ext)
    return PublisherNegotiation(media={"0": media}, rejected_mids=(), data_mid=None,
                                sctp_port=None, max_message_size=None, remote_ice_ufrag="u",
                                remote_ice_pwd="p", remote_fingerprints=())


def rtp(seq: int, ts: int, tcc_seq: int | None = None, size: int = 1000) -> bytes:
    ext = b""
    first = 0x80
    if tcc_seq is not None:
        first |= 0x10
        element = bytes([(TCC_ID << 4) | 1]) + struct.pack("!H", tcc_seq) + b"\x00"
        ext = struct.pack("!HH", 0xBEDE, 1) + element
    return struct.pack("!BBHII", first, 96, seq, ts, SSRC) + ext + b"\x00" * size


def feed(r: PublisherReceiver, n: int, start: float = 0.0, skip: set[int] | None = None) -> float:
    t = start
    for i in range(n):
        t = start + i * 0.01
        if skip and i in skip:
            continue
        r.on_rtp(rtp(1000 + i, 3000 * i, tcc_seq=i), t)
    return t


def kinds(packets: list[bytes]) -> list[str]:
    return [type(p).__name__ for pkt in packets for p in parse_rtcp(pkt)]


def test_transport_cc_every_75_ms_covering_every_packet() -> None:
    r = PublisherReceiver(sender_ssrc=1)
    r.set_negotiation(negotiation())
    reported: dict[int, int | None] = {}
    now = 0.0
    for i in range(100):
        now = i * 0.01
        r.on_rtp(rtp(1000 + i, 3000 * i, tcc_seq=i), now)
        for pkt in r.due(now):
            for p in parse_rtcp(pkt):
                if isinstance(p, TransportCc):
                    reported.update(dict(p.packets))
    for pkt in r.due(now + 0.1):
        for p in parse_rtcp(pkt):
            if isinstance(p, TransportCc):
                reported.update(dict(p.packets))
    assert sorted(reported) == list(range(100))
    assert all(v is not None for v in reported.values())
    # cadence: one feedback per 75 ms window over one second of media
    assert 12 <= r.sent["transport_cc"] <= 16


def test_receiver_report_has_real_loss_jitter_and_lsr_dlsr() -> None:
    r = PublisherReceiver(sender_ssrc=1)
    r.set_negotiation(negotiation())
    r.due(0.0)  # first RR goes out at once (nothing to report yet)
    r.bind(SSRC)
    sr_at = 0.2
    sr_ntp = ntp_from_unix(1_700_000_000.0)
    end = feed(r, 100, skip={10, 11, 50, 77, 78})
    r.on_rtcp(build_sr(SSRC, sr_ntp, 3000 * 20, 20, 20000), sr_at)
    packets = r.due(1.0)
    rr = next(p for pkt in packets for p in parse_rtcp(pkt) if isinstance(p, ReceiverReport))
    (block,) = rr.reports
    assert block.ssrc == SSRC
    assert block.cumulative_lost == 5
    assert block.fraction_lost == (5 * 256) // 100
    assert block.ext_highest_seq == 1099
    assert block.lsr == ntp_middle32(sr_ntp)
    assert abs(block.dlsr / 65536 - (1.0 - sr_at)) < 0.001
    assert end < 1.0
    # next interval without loss: fraction 0, cumulative stays
    feed(r, 50, start=1.0)
    rr2 = next(p for pkt in r.due(2.0) for p in parse_rtcp(pkt) if isinstance(p, ReceiverReport))
    assert rr2.reports[0].fraction_lost == 0


def test_remb_once_a_second_without_transport_cc() -> None:
    r = PublisherReceiver(sender_ssrc=1)
    r.set_negotiation(negotiation(with_tcc=False))
    r.due(0.0)
    r.bind(SSRC)
    feed(r, 100)  # 100 x ~1 kB in 1 s
    out = kinds(r.due(1.0))
    assert "TransportCc" not in out
    assert out.count("Remb") == 1 and out.count("ReceiverReport") == 1
    remb = next(p for pkt in r.due(2.0) for p in parse_rtcp(pkt) if isinstance(p, Remb))
    assert remb.bitrate_bps >= 300_000


def test_no_receiver_report_for_an_ssrc_until_it_is_bound() -> None:
    # Chromium stops sending mid/rid header extensions for an SSRC once it is reported:
    # an SSRC is reported only after the SFU bound it to its track and layer.
    r = PublisherReceiver(sender_ssrc=1)
    r.set_negotiation(negotiation())
    r.due(0.0)
    feed(r, 50)
    assert "ReceiverReport" not in kinds(r.due(1.0))
    r.bind(SSRC)
    feed(r, 50, start=1.0)
    rr = next(p for pkt in r.due(2.0) for p in parse_rtcp(pkt) if isinstance(p, ReceiverReport))
    assert [b.ssrc for b in rr.reports] == [SSRC]


def test_malformed_input_is_counted_not_raised() -> None:
    r = PublisherReceiver(sender_ssrc=1)
    r.on_rtp(b"\x80\x60", 0.0)
    r.on_rtcp(b"\x81\xc9\x00\x09", 0.0)
    assert r.malformed == 2
