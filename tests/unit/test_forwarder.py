"""The forwarding core on its own: bytes in, rewritten bytes out, nothing asynchronous."""

from __future__ import annotations

import asyncio
import struct

from sfu.codecs.vp8 import parse_descriptor
from sfu.forwarder import DownTrack, ForwardCounters, PublishedTrack, Receiver
from sfu.rtp.header import parse_rtp, read_mid, read_transport_seq
from sfu.rtp.ntp import ntp_from_unix
from sfu.rtp.rtcp import parse_rtcp
from sfu.webrtc.sdp import EXT_ABS_SEND_TIME, EXT_MID, EXT_TRANSPORT_CC

PUB_SSRC = 0xAAAA0001
EXTS = {EXT_MID: 4, EXT_TRANSPORT_CC: 3, EXT_ABS_SEND_TIME: 2}


def vp8_packet(seq: int, ts: int, *, keyframe: bool, start: bool = True, pt: int = 96) -> bytes:
    # one-byte extensions: publisher mid "0" (id 4) and its transport-cc seq (id 3)
    ext = struct.pack("!HH", 0xBEDE, 2) + bytes([0x40, ord("0"), 0x31, 0, seq & 0xFF, 0, 0, 0])
    header = struct.pack("!BBHII", 0x90, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, PUB_SSRC)
    descriptor = bytes([0x10 if start else 0x00])
    vp8 = bytes([0x00 if keyframe else 0x01, 0, 0, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0xE0, 0x01])
    return header + ext + descriptor + vp8 + bytes(range(200))


def make(n_subs: int = 3) -> tuple[Receiver, list[DownTrack], list[list[bytes]], list[bytes]]:
    counters = ForwardCounters()
    upstream: list[bytes] = []
    track = PublishedTrack(track_sid="TR_1", kind="video", clock_rate=90000,
                           codecs={96: "VP8"}, rtx_pts={97: 96}, audio_level_id=0,
                           send_rtcp=upstream.append, sender_ssrc=1, counters=counters)
    receiver = track.layers[0]
    receiver.ssrc = PUB_SSRC
    sent: list[list[bytes]] = []
    dts = []
    tcc = [100]
    for i in range(n_subs):
        out: list[bytes] = []
        sent.append(out)
        dt = DownTrack(track=track, ssrc=0x5000 + i, mid=str(10 + i), pt_map={96: 100},
                       rtx_ssrc=0x6000 + i, rtx_pt=101, extension_ids=EXTS,
                       send_rtp=out.append, send_rtcp=out.append, tcc=tcc,
                       counters=counters, initial_seq=0, initial_ts=0)
        track.add_downtrack(dt, 0.0)
        dts.append(dt)
    return receiver, dts, sent, upstream


def push(receiver: Receiver, pkt: bytes, ext_seq: int, ext_ts: int, now: float) -> None:
    receiver.on_packet(pkt, parse_rtp(pkt), ext_seq, ext_ts, now)


async def test_ten_thousand_packets_create_no_task() -> None:
    receiver, dts, sent, _ = make()
    tasks_before = asyncio.all_tasks()
    loop = asyncio.get_running_loop()
    handles_before = len(loop._scheduled)  # type: ignore[attr-defined]  # timers armed
    for i in range(10_000):
        push(receiver, vp8_packet(1000 + i, 3000 * (i // 3), keyframe=(i % 300 == 0)),
             1000 + i, 3000 * (i // 3), i * 0.001)
    assert asyncio.all_tasks() == tasks_before
    assert len(loop._scheduled) == handles_before  # type: ignore[attr-defined]
    assert [len(s) for s in sent] == [10_000] * 3
    assert receiver.counters.forwarded == 30_000


def test_rewriting_per_subscriber() -> None:
    receiver, dts, sent, _ = make(2)
    # before the first keyframe a new video down-track forwards nothing
    push(receiver, vp8_packet(500, 0, keyframe=False), 500, 0, 0.0)
    assert sent == [[], []]
    original = vp8_packet(501, 9000, keyframe=True)
    push(receiver, original, 501, 9000, 0.01)
    for i, out in enumerate(sent):
        (pkt,) = out
        view = parse_rtp(pkt)
        assert view.ssrc == 0x5000 + i and view.payload_type == 100
        assert read_mid(pkt, 4) == str(10 + i)  # each subscriber's own mid
        assert read_transport_seq(pkt, 3) is not None
        # the VP8 data is byte-for-byte the publisher's; the descriptor now carries a
        # 15-bit picture id (the source had none)
        src = parse_rtp(original)
        desc = parse_descriptor(view.payload(pkt))
        src_desc = parse_descriptor(src.payload(original))
        assert desc.is_keyframe and desc.picture_id_bits == 15
        assert (view.payload(pkt)[desc.header_size:].tobytes()
                == src.payload(original)[src_desc.header_size:].tobytes())
    # transport-cc sequence numbers come from the subscriber transport's one counter
    seqs = [read_transport_seq(s[0], 3) for s in sent]
    assert seqs == [100, 101]


def test_seq_continuity_with_padding_and_reordering() -> None:
    receiver, (dt,), (out,), _ = make(1)
    pkts = [vp8_packet(1, 0, keyframe=True), vp8_packet(2, 0, keyframe=False, start=False)]
    for n, p in enumerate(pkts, start=1):
        push(receiver, p, n, 0, 0.0)
    # a padding-only packet (seq 3) is not forwarded and leaves no gap
    padding = struct.pack("!BBHII", 0xA0, 96, 3, 0, PUB_SSRC) + bytes(243) + bytes([244])
    push(receiver, padding, 3, 0, 0.0)
    # 5 arrives before 4
    push(receiver, vp8_packet(5, 3000, keyframe=False), 5, 3000, 0.02)
    push(receiver, vp8_packet(4, 3000, keyframe=False), 4, 3000, 0.021)
    seqs = [parse_rtp(p).seq for p in out]
    first = seqs[0]
    assert [s - first for s in seqs] == [0, 1, 3, 2]  # reordering passes through, no hole
    assert receiver.counters.dropped_padding == 1


def test_nack_answered_with_rtx_once_per_rtt() -> None:
    receiver, (dt,), (out,), _ = make(1)
    for i in range(20):
        push(receiver, vp8_packet(100 + i, 0, keyframe=(i == 0)), 100 + i, 0, i * 0.001)
    out_seqs = [parse_rtp(p).seq for p in out]
    lost = out_seqs[5]
    out.clear()
    dt.on_nack([lost], 1.0)
    (rtx,) = out
    view = parse_rtp(rtx)
    assert view.ssrc == 0x6000 and view.payload_type == 101
    assert struct.unpack_from("!H", rtx, view.payload_offset)[0] == lost  # OSN
    dt.on_nack([lost], 1.0 + dt.rtt_s / 2)  # within one RTT: not again
    assert len(out) == 1
    dt.on_nack([lost], 1.0 + dt.rtt_s * 1.5)
    assert len(out) == 2
    dt.on_nack([(lost + 5000) & 0xFFFF], 3.0)  # never sent: nothing to retransmit
    assert len(out) == 2


def test_keyframe_requests_are_throttled() -> None:
    receiver, _, _, upstream = make(1)
    assert receiver.request_keyframe(10.0)
    assert not receiver.request_keyframe(10.2)
    assert receiver.request_keyframe(10.6)
    assert [type(p).__name__ for pkt in upstream for p in parse_rtcp(pkt)] == ["Pli", "Pli"]


def test_sender_report_on_the_publisher_timeline() -> None:
    receiver, (dt,), (out,), _ = make(1)
    push(receiver, vp8_packet(1, 90000, keyframe=True), 1, 90000, 5.0)
    receiver.last_sr = (1_700_000_000.0, 90000, 5.0)  # publisher: NTP t0 <-> rtp 90000
    sr_bytes = dt.sender_report(6.0)
    assert sr_bytes is not None
    (sr,) = parse_rtcp(sr_bytes)
    # one second later on the publisher's clock, translated into this subscriber's numbering
    assert sr.ntp_timestamp == ntp_from_unix(1_700_000_001.0)
    out_ts = parse_rtp(out[0]).timestamp
    assert sr.rtp_timestamp == (out_ts + 90000) & 0xFFFFFFFF
    assert sr.ssrc == 0x5000 and sr.packet_count == 1


def test_late_keyframe_start_replays_the_rest_of_the_keyframe() -> None:
    receiver, (dt,), (out,), _ = make(1)
    # the keyframe is packets 10..12; 10 (its start) is lost upstream and recovered later
    push(receiver, vp8_packet(11, 3000, keyframe=False, start=False), 11, 3000, 0.00)
    push(receiver, vp8_packet(12, 3000, keyframe=False, start=False), 12, 3000, 0.00)
    assert out == []  # waiting for a keyframe start
    push(receiver, vp8_packet(10, 3000, keyframe=True), 10, 3000, 0.01)
    seqs = [parse_rtp(p).seq for p in out]
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]  # 10, 11, 12 in order, no gap
    assert parse_descriptor(parse_rtp(out[0]).payload(out[0])).is_keyframe
    push(receiver, vp8_packet(13, 6000, keyframe=False), 13, 6000, 0.05)
    assert parse_rtp(out[-1]).seq == seqs[0] + 3
