"""The bench's RID simulcast publisher and frame-recording receiver, without a network.

The packets a :class:`bench.rtp.SimulcastPublisherCore` sends are read back with the
server's own parsers (``sfu.rtp.header``, ``sfu.codecs.vp8``, ``sfu.rtp.rtcp``,
``sfu.webrtc.sdp``), so what the end-to-end simulcast test relies on is checked here
byte for byte: rid / repaired-rid per SSRC, per-layer keyframes on PLI/FIR, held
keyframes, RTX, sender reports, the offer, and what the receiver records per frame.
"""

from __future__ import annotations

import random
import zlib

import pytest

from bench.client import layer_qualities
from bench.media import EncodedMedia, load_simulcast_media
from bench.rtp import (
    PUBLISHER_EXTENSIONS,
    SIMULCAST_EXTENSIONS,
    DecodedFrame,
    PublisherCore,
    ReceiverCore,
    SimulcastPublisherCore,
    SimulcastSource,
    StreamInfo,
)
from bench.sdp import PublisherSsrcs, publisher_offer
from sfu.codecs.vp8 import parse_descriptor
from sfu.rtp.header import (
    parse_rtp,
    read_abs_send_time,
    read_mid,
    read_rid,
    read_transport_seq,
)
from sfu.rtp.rtcp import SenderReport, build_fir, build_nack, build_pli, parse_rtcp
from sfu.webrtc.sdp import (
    EXT_MID,
    EXT_REPAIRED_RID,
    EXT_RID,
    EXT_TRANSPORT_CC,
    SessionDescription,
)

FPS = 10
FRAMES = 5  # per loop
RIDS = ("q", "h", "f")
MID_ID, RID_ID, RRID_ID = (SIMULCAST_EXTENSIONS[u] for u in (EXT_MID, EXT_RID, EXT_REPAIRED_RID))
TCC_ID = SIMULCAST_EXTENSIONS[EXT_TRANSPORT_CC]
AUDIO_SSRC = 0xA0D10
SSRCS = {"q": (0x1001, 0x2001), "h": (0x1002, 0x2002), "f": (0x1003, 0x2003)}
START = 100.0


@pytest.fixture(scope="module")
def layers() -> tuple[EncodedMedia, ...]:
    return load_simulcast_media(width=128, height=72, fps=FPS, duration_s=FRAMES / FPS)


def make_core(layers: tuple[EncodedMedia, ...], **kwargs: object) -> SimulcastPublisherCore:
    sources = [SimulcastSource(rid, media, *SSRCS[rid], seq=65530 - i, timestamp=1000 * i,
                               rtx_seq=10 * i, picture_id=0x7FFE - i, tl0picidx=250 + i)
               for i, (rid, media) in enumerate(zip(RIDS, layers, strict=True))]
    return SimulcastPublisherCore(sources, audio_ssrc=AUDIO_SSRC, start=START,
                                  wall_offset_s=1.7e9, tcc_seq=65535, **kwargs)  # type: ignore[arg-type]


def _video_ssrcs() -> set[int]:
    return {ssrc for ssrc, _ in SSRCS.values()}


def video_by_tick(core: SimulcastPublisherCore, ticks: int) -> list[dict[str, list[bytes]]]:
    """Per video tick, each rid's packets (sent by the core at that tick's time)."""
    rid_of = {ssrc: rid for rid, (ssrc, _) in SSRCS.items()}
    out = []
    for index in range(ticks):
        per: dict[str, list[bytes]] = {rid: [] for rid in RIDS}
        for packet in core.due(START + index / FPS + 1e-6):
            rid = rid_of.get(parse_rtp(packet).ssrc)
            if rid is not None:
                per[rid].append(packet)
        out.append(per)
    return out


def is_keyframe(packets: list[bytes]) -> bool:
    first = packets[0]
    view = parse_rtp(first)
    return parse_descriptor(first, view.payload_offset,
                            view.payload_offset + view.payload_size).is_keyframe


def test_layers_are_the_picture_at_three_sizes(layers: tuple[EncodedMedia, ...]) -> None:
    assert [(m.width, m.height) for m in layers] == [(32, 18), (64, 36), (128, 72)]
    for media in layers:
        assert media.fps == FPS and len(media.video_frames) == FRAMES
        assert [key for _, key in media.video_frames] == [True] + [False] * (FRAMES - 1)
        assert media.audio_packets == layers[0].audio_packets
    with pytest.raises(ValueError, match="cannot be divided"):
        load_simulcast_media(width=100, height=72, scales=(3, 1))


def test_every_packet_carries_mid_and_its_rid(layers: tuple[EncodedMedia, ...]) -> None:
    core = make_core(layers)
    packets = core.due(START + 0.25)
    seen: dict[int, int] = {}
    tcc = []
    for packet in packets:
        view = parse_rtp(packet)
        seen[view.ssrc] = seen.get(view.ssrc, 0) + 1
        tcc.append(read_transport_seq(packet, TCC_ID))
        assert read_abs_send_time(packet, SIMULCAST_EXTENSIONS[
            "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"]) is not None
        assert read_rid(packet, RRID_ID) is None
        if view.ssrc == AUDIO_SSRC:
            assert (view.payload_type, read_mid(packet, MID_ID)) == (111, "0")
            assert read_rid(packet, RID_ID) is None
            continue
        rid = next(r for r, (ssrc, _) in SSRCS.items() if ssrc == view.ssrc)
        assert (view.payload_type, read_mid(packet, MID_ID), read_rid(packet, RID_ID)) == (
            96, "1", rid)
        assert packet[12:14] == b"\xbe\xde"  # the one-byte form
    assert set(seen) == {AUDIO_SSRC, *_video_ssrcs()}
    assert tcc == [(65535 + i) & 0xFFFF for i in range(len(packets))]  # transport-wide


def test_each_layer_has_its_own_numbering(layers: tuple[EncodedMedia, ...]) -> None:
    core = make_core(layers)
    ticks = video_by_tick(core, 2 * FRAMES + 2)
    for i, rid in enumerate(RIDS):
        width, height = layers[i].width, layers[i].height
        seqs: list[int] = []
        pids, tl0s, stamps = [], [], []
        for tick in ticks:
            packets = tick[rid]
            views = [parse_rtp(p) for p in packets]
            assert [v.marker for v in views] == [False] * (len(views) - 1) + [True]
            assert len({v.timestamp for v in views}) == 1
            seqs += [v.seq for v in views]
            descs = [parse_descriptor(p, v.payload_offset, v.payload_offset + v.payload_size)
                     for p, v in zip(packets, views, strict=True)]
            assert [d.starts_frame for d in descs] == [True] + [False] * (len(descs) - 1)
            assert {(d.picture_id_bits, d.tid, d.layer_sync) for d in descs} == {(15, 0, True)}
            pids.append(descs[0].picture_id)
            tl0s.append(descs[0].tl0picidx)
            stamps.append(views[0].timestamp)
            if descs[0].is_keyframe:
                assert (descs[0].width, descs[0].height) == (width, height)
        assert seqs == [(65530 - i + k) & 0xFFFF for k in range(len(seqs))]  # wraps
        assert pids == [(0x7FFE - i + k) & 0x7FFF for k in range(len(ticks))]  # wraps
        assert tl0s == [(250 + i + k) & 0xFF for k in range(len(ticks))]  # wraps
        assert stamps == [1000 * i + k * 90000 // FPS for k in range(len(ticks))]
        # the loop's keyframe at every wrap
        assert [is_keyframe(t[rid]) for t in ticks] == [k % FRAMES == 0 for k in range(len(ticks))]
    assert core.keyframes_sent == 3 * 3


def test_pli_and_fir_ask_one_layer_for_a_keyframe(layers: tuple[EncodedMedia, ...]) -> None:
    core = make_core(layers)
    video_by_tick(core, 2)
    core.on_rtcp(parse_rtcp(build_pli(1, SSRCS["h"][0])), START + 0.15)
    (tick,) = video_by_tick(core, 3)[2:]
    assert {rid: is_keyframe(tick[rid]) for rid in RIDS} == {"q": False, "h": True, "f": False}
    core.on_rtcp(parse_rtcp(build_fir(1, [(SSRCS["q"][0], 1)])), START + 0.25)
    core.on_rtcp(parse_rtcp(build_pli(1, SSRCS["q"][1])), START + 0.25)  # an RTX SSRC: no
    (tick,) = video_by_tick(core, 4)[3:]
    assert {rid: is_keyframe(tick[rid]) for rid in RIDS} == {"q": True, "h": False, "f": False}
    assert [(core.layer(r).plis, core.layer(r).firs, core.layer(r).keyframes_sent)
            for r in RIDS] == [(0, 1, 2), (1, 0, 2), (0, 0, 1)]
    assert core.keyframe_requests == 2


def test_held_keyframes_wait_and_the_loop_skips_its_keyframe(
        layers: tuple[EncodedMedia, ...]) -> None:
    core = make_core(layers)
    hold_ticks = 3 * FRAMES + 2  # more than two loops
    until = START + (hold_ticks - 0.5) / FPS
    core.hold_keyframes("f", until)
    ticks = video_by_tick(core, 1)
    for k in range(1, hold_ticks):  # the server asks every tick
        core.on_rtcp(parse_rtcp(build_pli(1, SSRCS["f"][0])), START + (k - 0.5) / FPS)
        ticks += video_by_tick(core, k + 1)[k:]
    f = core.layer("f")
    assert (f.plis, f.held_requests) == (hold_ticks - 1, hold_ticks - 1)
    assert not any(is_keyframe(t["f"]) for t in ticks)  # not even the first frame
    assert f.keyframes_sent == 0
    # the other layers are untouched: keyframes at their loop's wraps
    assert [is_keyframe(t["h"]) for t in ticks] == [k % FRAMES == 0 for k in range(hold_ticks)]
    # the held layer wraps to the frame after the keyframe: its frames go on in order
    pids = [parse_descriptor(t["f"][0], parse_rtp(t["f"][0]).payload_offset).picture_id
            for t in ticks]
    assert pids == [(0x7FFE - 2 + k) & 0x7FFF for k in range(hold_ticks)]
    # the request that waited is honoured by the first frame after the hold
    after = video_by_tick(core, hold_ticks + FRAMES)[hold_ticks:]
    assert [is_keyframe(t["f"]) for t in after] == [True] + [False] * (FRAMES - 1)
    assert f.held_requests == hold_ticks - 1 and f.keyframes_sent == 1


def test_a_hold_without_requests_ends_on_the_loops_own_schedule(
        layers: tuple[EncodedMedia, ...]) -> None:
    core = make_core(layers)
    core.hold_keyframes("q", START + 0.05)  # over the first frame only
    ticks = video_by_tick(core, 2 * FRAMES)
    # the first frame was the loop's second, so the loop wraps one tick early
    assert [is_keyframe(t["q"]) for t in ticks] == [k % FRAMES == FRAMES - 1
                                                    for k in range(len(ticks))]
    assert core.layer("q").held_requests == 0


def test_nack_is_answered_on_the_layers_rtx_ssrc(layers: tuple[EncodedMedia, ...]) -> None:
    core = make_core(layers)
    first = video_by_tick(core, 1)[0]["h"][0]
    view = parse_rtp(first)
    nack = parse_rtcp(build_nack(1, SSRCS["h"][0], [view.seq]))
    (plain,) = core.on_rtcp(nack, START + 0.3)
    assert plain[:2] == first[:2] and parse_rtp(plain).seq == view.seq
    assert plain[view.payload_offset:] == first[view.payload_offset:]
    core.rtx_enabled = True
    (rtx,) = core.on_rtcp(nack, START + 0.3)
    rview = parse_rtp(rtx)
    assert (rview.ssrc, rview.payload_type, rview.seq, rview.timestamp) == (
        SSRCS["h"][1], 97, 10, view.timestamp)
    assert (read_mid(rtx, MID_ID), read_rid(rtx, RRID_ID), read_rid(rtx, RID_ID)) == (
        "1", "h", None)
    payload = rtx[rview.payload_offset:]
    assert payload == view.seq.to_bytes(2, "big") + first[view.payload_offset:]
    assert core.on_rtcp(parse_rtcp(build_nack(1, SSRCS["h"][0], [(view.seq + 5000) & 0xFFFF])),
                        START + 0.3) == []
    assert (core.retransmitted, core.retransmit_misses) == (2, 1)


def test_sender_reports_cover_every_ssrc_that_sent(layers: tuple[EncodedMedia, ...]) -> None:
    core = make_core(layers)
    assert core.sender_reports(START) == b""
    video_by_tick(core, 3)
    srs = {p.ssrc: p for p in parse_rtcp(core.sender_reports(START + 0.25))
           if isinstance(p, SenderReport)}
    assert set(srs) == {AUDIO_SSRC, *_video_ssrcs()}
    for i, rid in enumerate(RIDS):
        sr = srs[SSRCS[rid][0]]
        assert sr.rtp_timestamp == 1000 * i + round(0.25 * 90000)
        assert sr.packet_count == core.layer(rid).video.packets
    core.rtx_enabled = True
    first = video_by_tick(core, 4)[3]["f"][0]
    core.nack(SSRCS["f"][0], [parse_rtp(first).seq], START + 0.35)
    reported = {p.ssrc for p in parse_rtcp(core.sender_reports(START + 0.4))
                if isinstance(p, SenderReport)}
    assert SSRCS["f"][1] in reported and SSRCS["q"][1] not in reported


def test_sources_are_checked(layers: tuple[EncodedMedia, ...]) -> None:
    q, h, f = layers
    other_fps = EncodedMedia(q.width, q.height, FPS + 1, q.video_frames, q.audio_packets)
    for sources, match in (
        ([], "at least one"),
        ([SimulcastSource("q", q, 1, 2), SimulcastSource("h", other_fps, 3, 4)], "frame rate"),
        ([SimulcastSource("q", q, 1, 2), SimulcastSource("q", h, 3, 4)], "duplicate"),
        ([SimulcastSource("q", q, 1, 2), SimulcastSource("h", h, 3, 1)], "SSRCs"),
    ):
        with pytest.raises(ValueError, match=match):
            SimulcastPublisherCore(sources, audio_ssrc=9, start=0, wall_offset_s=0)
    with pytest.raises(ValueError, match="one-byte form"):
        SimulcastPublisherCore([SimulcastSource("x" * 17, f, 1, 2)], audio_ssrc=9, start=0,
                               wall_offset_s=0)


def test_the_simulcast_offer_is_chromiums_shape() -> None:
    text = publisher_offer(ufrag="ufrag", pwd="p" * 24, fingerprints=["sha-256 " + "AB:" * 31
                           + "AB"], port=5000, ssrcs=PublisherSsrcs(11, 22, 33), session_id=1,
                           stream_id="s", cname="c", rids=RIDS)
    audio, video = SessionDescription.parse(text).media
    assert [(r.id, r.direction) for r in video.rids] == [(r, "send") for r in RIDS]
    assert video.simulcast is not None and video.simulcast.rids("send") == RIDS
    assert video.ssrcs == () and video.ssrc_groups == ()
    assert {e.uri: e.id for e in video.extmaps} == dict(SIMULCAST_EXTENSIONS)
    assert {(c.payload_type, c.name) for c in video.codecs} == {(96, "VP8"), (97, "rtx")}
    assert next(c for c in video.codecs if c.name == "rtx").parameters == {"apt": "96"}
    assert {e.uri for e in audio.extmaps} == set(PUBLISHER_EXTENSIONS)
    assert {a.ssrc for a in audio.ssrcs} == {11}
    assert audio.rids == () and audio.simulcast is None
    assert "a=rid:q send" in text and "a=simulcast:send q;h;f" in text


def test_the_plain_offer_is_unchanged() -> None:
    text = publisher_offer(ufrag="ufrag", pwd="p" * 24, fingerprints=["sha-256 " + "AB:" * 31
                           + "AB"], port=5000, ssrcs=PublisherSsrcs(11, 22, 33), session_id=1,
                           stream_id="s", cname="c")
    _, video = SessionDescription.parse(text).media
    assert video.rids == () and video.simulcast is None
    assert {a.ssrc for a in video.ssrcs} == {22, 33}
    assert {e.uri: e.id for e in video.extmaps} == dict(PUBLISHER_EXTENSIONS)


def test_rids_name_their_quality() -> None:
    assert layer_qualities(RIDS) == ["low", "medium", "high"]
    assert layer_qualities(("q", "f")) == ["low", "high"]
    assert layer_qualities(("a", "b")) == ["medium", "high"]
    with pytest.raises(ValueError):
        layer_qualities(("a", "b", "c", "d"))


def receiver_for(ssrc: int, rtx_ssrc: int | None = None) -> ReceiverCore:
    receiver = ReceiverCore(7, wall_offset_s=0.0, decode=True, record_frames=True)
    receiver.set_streams({ssrc: StreamInfo("video", 90000, nack=True, rtx_ssrc=rtx_ssrc)},
                         TCC_ID)
    return receiver


def test_the_receiver_records_each_decoded_frame(layers: tuple[EncodedMedia, ...]) -> None:
    core = make_core(layers)
    receiver = receiver_for(SSRCS["h"][0])
    ticks = video_by_tick(core, FRAMES + 2)
    for k, tick in enumerate(ticks):
        for packet in [*tick["q"], *tick["h"], *tick["f"]]:  # other layers: unknown SSRCs
            receiver.on_rtp(packet, 50.0 + k)
    frames = receiver.decoded_frames
    assert receiver.checker is not None and receiver.checker.errors == 0
    assert len(frames) == FRAMES + 2
    assert all(isinstance(f, DecodedFrame) for f in frames)
    assert [(f.width, f.height) for f in frames] == [(64, 36)] * len(frames)
    assert [f.keyframe for f in frames] == [k % FRAMES == 0 for k in range(len(frames))]
    assert [f.arrival for f in frames] == [50.0 + k for k in range(len(frames))]
    assert [f.rtp_timestamp for f in frames] == [1000 + k * 9000 for k in range(len(frames))]
    assert [f.picture_id for f in frames] == [(0x7FFD + k) & 0x7FFF for k in range(len(frames))]
    assert frames[0].first_seq == 65529
    loop = [zlib.crc32(data) for data, _ in layers[1].video_frames]
    assert [f.crc32 for f in frames] == [loop[k % FRAMES] for k in range(len(frames))]
    for before, after in zip(frames, frames[1:], strict=False):
        assert after.first_seq == before.last_seq + 1
    assert receiver.unknown_ssrc > 0


def test_a_retransmitted_packet_completes_its_frame(layers: tuple[EncodedMedia, ...]) -> None:
    core = make_core(layers, max_payload=200)  # several packets per frame
    core.rtx_enabled = True
    receiver = receiver_for(SSRCS["f"][0], SSRCS["f"][1])
    (tick,) = video_by_tick(core, 1)
    packets = tick["f"]
    assert len(packets) > 2
    lost = packets[1]
    for packet in packets:
        if packet is not lost:
            receiver.on_rtp(packet, 1.0)
    assert receiver.decoded_frames == []
    (rtx,) = core.nack(SSRCS["f"][0], [parse_rtp(lost).seq], 1.1)
    receiver.on_rtp(rtx, 1.2)
    assert [(f.width, f.height, f.keyframe, f.arrival) for f in receiver.decoded_frames] == [
        (128, 72, True, 1.2)]


def test_the_plain_publisher_still_sends_one_video_ssrc(
        layers: tuple[EncodedMedia, ...]) -> None:
    rng = random.Random(1)
    core = PublisherCore(layers[2], audio_ssrc=1, video_ssrc=2, rtx_ssrc=3, start=START,
                         wall_offset_s=0, initial=tuple(rng.getrandbits(16)  # type: ignore[arg-type]
                                                        for _ in range(6)))
    packets = core.due(START + 0.25)
    assert {parse_rtp(p).ssrc for p in packets} == {1, 2}
    video = [p for p in packets if parse_rtp(p).ssrc == 2]
    assert all(read_rid(p, RID_ID) is None for p in video)
    assert core.video_packets == len(video) and core.keyframes_sent == 1
