"""Simulcast through the forwarding core: three layers in, one continuous stream out.

A scripted publisher sends three VP8 layers (15-bit picture ids, TL0PICIDX, temporal ids
0-2-1-2) and answers each PLI on a layer's SSRC with a keyframe on that layer a few frames
later; the subscriber's settings change at random. What the subscriber receives must be one
stream a decoder accepts: contiguous sequence numbers, contiguous picture ids, continuous
TL0PICIDX, timestamps that only move forward, and a layer change only at a keyframe.
"""

from __future__ import annotations

import random
import struct

from sfu.codecs.vp8 import parse_descriptor
from sfu.forwarder import DownTrack, ForwardCounters, PublishedTrack
from sfu.rtp.header import parse_rtp
from sfu.rtp.rtcp import Pli, parse_rtcp
from sfu.webrtc.sdp import EXT_MID

SSRCS = (0x1000, 0x2000, 0x3000)
WIDTHS = (320, 640, 1280)
TIDS = (0, 2, 1, 2)
FRAME_S = 1 / 30


def vp8_packet(ssrc: int, seq: int, ts: int, *, picture_id: int, tl0: int, tid: int,
               sync: bool, keyframe: bool, start: bool, layer: int) -> bytes:
    header = struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    descriptor = bytes([0x90 if start else 0x80, 0xE0, 0x80 | (picture_id >> 8) & 0x7F,
                        picture_id & 0xFF, tl0 & 0xFF, (tid << 6) | (0x20 if sync else 0)])
    if keyframe and start:
        w, h = WIDTHS[layer], WIDTHS[layer] * 9 // 16
        body = bytes([0x00, 0, 0, 0x9D, 0x01, 0x2A]) + struct.pack("<HH", w, h)
    else:
        body = bytes([0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    return header + descriptor + body + bytes([layer]) * 100


class Publisher:
    """Three layers, each with its own seq / picture id / TL0PICIDX origin."""

    def __init__(self, track: PublishedTrack, rng: random.Random) -> None:
        self.track = track
        self.rng = rng
        self.seq = [rng.randrange(1 << 16) for _ in SSRCS]
        self.pid = [rng.randrange(1 << 15) for _ in SSRCS]
        self.tl0 = [rng.randrange(256) for _ in SSRCS]
        self.ts0 = [rng.randrange(1 << 32) for _ in SSRCS]
        self.ext_seq = [1000 * (i + 1) for i in range(3)]
        self.keyframe_at = [0, 0, 0]  # frame index of the next keyframe per layer
        self.frame = 0
        self.ignore_pli: set[int] = set()  # layers whose keyframe requests are ignored
        self.silent: set[int] = set()  # layers not sent at all
        self.plis = [0, 0, 0]

    def on_rtcp(self, data: bytes) -> None:
        for pkt in parse_rtcp(data):
            if isinstance(pkt, Pli):
                layer = SSRCS.index(pkt.media_ssrc)
                self.plis[layer] += 1
                if layer not in self.ignore_pli and self.keyframe_at[layer] <= self.frame:  # not already coming
                    self.keyframe_at[layer] = self.frame + self.rng.randint(1, 4)

    def send_frame(self) -> None:
        k = self.frame
        now = k * FRAME_S
        order = list(range(3))
        self.rng.shuffle(order)
        for layer in order:
            if layer in self.silent:
                continue
            key = self.keyframe_at[layer] == k
            tid = 0 if key else TIDS[k % 4]
            if tid == 0 and k:
                self.tl0[layer] += 1
            sync = key or (tid > 0 and self.rng.random() < 0.3)
            packets = self.rng.randint(1, 3)
            for i in range(packets):
                ext_seq = self.ext_seq[layer]
                self.ext_seq[layer] += 1
                data = vp8_packet(SSRCS[layer], self.seq[layer] + ext_seq, self.ts0[layer] + 3000 * k,
                                  picture_id=(self.pid[layer] + k) & 0x7FFF, tl0=self.tl0[layer],
                                  tid=tid, sync=sync, keyframe=key, start=i == 0, layer=layer)
                receiver = self.track.layers[layer]
                receiver.on_packet(data, parse_rtp(data), ext_seq, self.ts0[layer] + 3000 * k,
                                   now)
        self.frame += 1


def make(rng: random.Random) -> tuple[PublishedTrack, DownTrack, list[bytes], Publisher]:
    counters = ForwardCounters()
    holder: list[Publisher] = []
    track = PublishedTrack(track_sid="TR_1", kind="video", clock_rate=90000, codecs={96: "VP8"},
                           rtx_pts={97: 96}, audio_level_id=0,
                           send_rtcp=lambda data: holder[0].on_rtcp(data), sender_ssrc=1,
                           counters=counters, rids=("q", "h", "f"),
                           sizes=[(w, w * 9 // 16) for w in WIDTHS])
    for receiver, ssrc in zip(track.layers, SSRCS, strict=True):
        receiver.ssrc = ssrc
    publisher = Publisher(track, rng)
    holder.append(publisher)
    out: list[bytes] = []
    dt = DownTrack(track=track, ssrc=0x5000, mid="0", pt_map={96: 96}, rtx_ssrc=0x6000,
                   rtx_pt=97, extension_ids={EXT_MID: 1}, send_rtp=out.append,
                   send_rtcp=out.append, tcc=[0], counters=counters, initial_seq=0,
                   initial_ts=0)
    track.add_downtrack(dt, 0.0)
    return track, dt, out, publisher


def check_stream(out: list[bytes]) -> list[int]:
    """Asserts the subscriber's stream is continuous; returns the layer of each frame."""
    last_seq = last_pid = last_tl0 = last_ts = None
    layer = None
    layers: list[int] = []
    for data in out:
        view = parse_rtp(data)
        payload = view.payload(data)
        desc = parse_descriptor(payload)
        assert desc.picture_id_bits == 15
        this_layer = payload[-1]
        if last_seq is not None:
            assert view.seq == (last_seq + 1) & 0xFFFF, "sequence gap"
            assert ((view.timestamp - last_ts) & 0xFFFFFFFF) < 1 << 31, "timestamp went back"
        if desc.starts_frame:
            if last_pid is not None:
                assert desc.picture_id == (last_pid + 1) & 0x7FFF, "picture id gap"
                assert desc.tl0picidx in (last_tl0, (last_tl0 + 1) & 0xFF), "TL0PICIDX jump"
            if this_layer != layer:
                assert desc.is_keyframe, f"layer {layer} -> {this_layer} without a keyframe"
                layer = this_layer
            layers.append(this_layer)
            last_pid, last_tl0 = desc.picture_id, desc.tl0picidx
        else:
            assert desc.picture_id == last_pid and this_layer == layer
        last_seq, last_ts = view.seq, view.timestamp
    return layers


def test_picture_id_and_seq_continuity_across_1000_random_switches() -> None:
    rng = random.Random(11)
    track, dt, out, publisher = make(rng)
    requests = 0
    while dt.selector.switches < 1000:
        if rng.random() < 0.15:
            requests += 1
            settings: dict[str, object] = {"quality": rng.choice(("low", "medium", "high"))}
            if rng.random() < 0.2:
                settings = {"width": rng.choice((200, 640, 1280)), "height": 100}
            dt.apply_settings(settings, publisher.frame * FRAME_S)
        if rng.random() < 0.05:  # the allocator's temporal target moves too
            dt.selector.set_allocation(2, rng.randint(0, 3))
        publisher.send_frame()
        assert publisher.frame < 50_000
    layers = check_stream(out)
    assert len(set(layers)) == 3
    assert track.counters.layer_switches >= 999
    assert track.counters.dropped_temporal > 0


def test_current_layer_keeps_flowing_until_the_target_keyframe() -> None:
    rng = random.Random(3)
    track, dt, out, publisher = make(rng)
    dt.apply_settings({"quality": "medium"}, 0.0)
    for _ in range(10):
        publisher.send_frame()
    assert dt.selector.current_spatial == 1
    publisher.ignore_pli.add(2)  # the top layer ignores PLIs
    publisher.keyframe_at[2] = -1
    dt.apply_settings({"quality": "high"}, publisher.frame * FRAME_S)
    start = len(out)
    for _ in range(150):  # 5 s: still the medium layer, one frame per frame time
        publisher.send_frame()
        track.tick(publisher.frame * FRAME_S)
    frames = check_stream(out)
    assert set(frames[-150:]) == {1}
    assert len(out) > start
    assert dt.selector.keyframe_wanted() == 2
    assert 10 <= publisher.plis[2] <= 11  # asked again every 0.5 s, no more often
    publisher.keyframe_at[2] = publisher.frame  # the keyframe finally comes
    publisher.send_frame()
    assert check_stream(out)[-1] == 2


def test_nack_after_a_switch_is_answered_from_the_old_layer_exactly() -> None:
    rng = random.Random(5)
    track, dt, out, publisher = make(rng)
    dt.apply_settings({"quality": "low"}, 0.0)
    for _ in range(8):
        publisher.send_frame()
    before = [parse_rtp(p) for p in out]
    nacked = out[-2]
    dt.apply_settings({"quality": "high"}, publisher.frame * FRAME_S)
    for _ in range(8):
        publisher.send_frame()
    assert dt.selector.current_spatial == 2
    out.clear()
    dt.rtt_s = 0.0
    dt.on_nack([before[-2].seq], 10.0)
    (rtx,) = out
    view = parse_rtp(rtx)
    assert view.ssrc == 0x6000 and view.timestamp == before[-2].timestamp
    original_payload = parse_rtp(nacked).payload(nacked).tobytes()
    assert view.payload(rtx).tobytes() == struct.pack("!H", before[-2].seq) + original_payload


def test_pause_stops_forwarding_and_resume_restarts_at_a_keyframe() -> None:
    rng = random.Random(9)
    track, dt, out, publisher = make(rng)
    for _ in range(5):
        publisher.send_frame()
    dt.apply_settings({"disabled": True}, publisher.frame * FRAME_S)
    count = len(out)
    for _ in range(30):
        publisher.send_frame()
    assert len(out) == count
    dt.apply_settings({"disabled": False}, publisher.frame * FRAME_S)
    for _ in range(10):
        publisher.send_frame()
    assert len(out) > count
    check_stream(out)
    first_after = parse_descriptor(parse_rtp(out[count]).payload(out[count]))
    assert first_after.is_keyframe


def test_a_layer_that_stops_arriving_is_replaced() -> None:
    rng = random.Random(13)
    track, dt, out, publisher = make(rng)
    for _ in range(10):
        publisher.send_frame()
    assert dt.selector.current_spatial == 2
    # the publisher stops sending the top layer (its bandwidth estimate dropped)
    receiver = track.layers[2]
    publisher.silent.add(2)
    for _ in range(60):
        publisher.send_frame()
        track.tick(publisher.frame * FRAME_S)
    assert not receiver.active
    assert dt.selector.current_spatial == 1
    check_stream(out)


def test_dynacast_announces_more_at_once_and_fewer_after_a_delay() -> None:
    rng = random.Random(17)
    track, dt, out, publisher = make(rng)
    assert track.dynacast(0.0) == [True, True, True]  # one subscriber, highest allowed
    assert track.dynacast(0.1) is None  # unchanged: nothing to say
    dt.apply_settings({"quality": "low"}, 1.0)
    assert track.dynacast(1.0) is None  # fewer layers: not yet
    assert track.dynacast(3.9) is None
    assert track.dynacast(4.1) == [True, False, False]
    dt.apply_settings({"quality": "medium"}, 5.0)
    assert track.dynacast(5.0) == [True, True, False]  # more: at once
    dt.apply_settings({"disabled": True}, 6.0)
    assert track.dynacast(6.0) is None
    assert track.dynacast(9.1) == [True, False, False]  # nobody receives: the lowest only
    track.remove_downtrack(dt)
    assert track.needed_layers() == [True, False, False]


def test_a_muted_track_is_not_forwarded_and_resumes_at_a_keyframe() -> None:
    rng = random.Random(21)
    track, dt, out, publisher = make(rng)
    for _ in range(5):
        publisher.send_frame()
    count = len(out)
    track.set_muted(True, publisher.frame * FRAME_S)
    for _ in range(20):
        publisher.send_frame()
    assert len(out) == count
    assert track.counters.dropped_muted > 0
    track.set_muted(False, publisher.frame * FRAME_S)
    for _ in range(10):
        publisher.send_frame()
    assert len(out) > count
    first = parse_descriptor(parse_rtp(out[count]).payload(out[count]))
    assert first.is_keyframe
    check_stream(out)  # seq / picture id continue across the mute
