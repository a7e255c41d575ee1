"""The per-packet forwarding path: one publisher packet → rewritten packets for subscribers.

``PublishedTrack`` is one published track: one ``Receiver`` per spatial layer (a single one
without simulcast) and every subscriber's ``DownTrack``. A ``Receiver`` is one incoming
media SSRC: packet cache, upstream NACKs, keyframe requests, its publisher's Sender Report
clock, and two lists of down-tracks: those forwarding this layer now, and those waiting for
its next keyframe to switch to it (see :mod:`sfu.layers`). A ``DownTrack`` is one
subscriber's copy of the track: its own SSRC, payload types, header extensions (its mid, its
transport's transport-cc sequence, a fresh abs-send-time), seq/ts munging, VP8 picture id /
TL0PICIDX continuity across layer switches, NACK sequencer and RTX.

Everything here runs synchronously inside ``datagram_received``: no await, task, queue or
log line per packet. Headers are written as bytes with ``struct.pack_into``; the outgoing
header extension block of each down-track is a template built once at negotiation.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from sfu.codecs import h264, vp8
from sfu.codecs.vp8 import Vp8Descriptor, Vp8Munger, descriptor_head
from sfu.layers import LayerSelector, layer_for_quality, layer_for_size
from sfu.rtp.cache import PacketCache
from sfu.rtp.header import RtpView, parse_rtp
from sfu.rtp.munger import RtpMunger
from sfu.rtp.nack import NackGenerator
from sfu.rtp.ntp import ntp_from_unix
from sfu.rtp.rtcp import build_nack, build_pli, build_sr
from sfu.rtp.sequencer import Sequencer
from sfu.webrtc.sdp import (
    EXT_ABS_SEND_TIME,
    EXT_AUDIO_LEVEL,
    EXT_MID,
    EXT_TRANSPORT_CC,
)

_HDR = struct.Struct("!BBHII")
_U16 = struct.Struct("!H")
_ABS = struct.Struct("!I")  # written as 4 bytes, the first of which is the element header

KEYFRAME_THROTTLE_S = 0.5
#: A video layer with no packet for this long is no longer available (the publisher
#: stopped sending it, e.g. its bandwidth estimate dropped).
LAYER_TIMEOUT_S = 1.0
#: Dynacast: a layer nobody needs is switched off at the publisher only after this long
#: (switching on is immediate), so a subscriber going down and up again costs nothing.
DYNACAST_OFF_DELAY_S = 3.0
MAX_LAYERS = 4
SendFn = Callable[[bytes], None]


def _codec_state(layer: int, picture_id: int, tl0picidx: int) -> int:
    """What a sequencer entry remembers to retransmit a packet exactly as it was sent."""
    return layer | ((picture_id + 1) << 2) | ((tl0picidx + 1) << 18)


def _layer_of(state: int) -> int:
    return state & 3


def _vp8_of(state: int) -> tuple[int, int]:
    return ((state >> 2) & 0xFFFF) - 1, ((state >> 18) & 0x1FF) - 1


class ForwardCounters:
    __slots__ = ("forwarded", "forwarded_bytes", "dropped_padding", "nacks_in", "nacks_out",
                 "retransmitted", "rtx_upstream", "pli_out", "pli_in", "sr_out",
                 "waiting_keyframe", "unknown_ssrc", "malformed_rtcp", "layer_switches",
                 "dropped_temporal", "malformed_vp8", "probe_packets", "stream_pauses",
                 "dropped_muted", "rtx_duplicates")

    def __init__(self) -> None:
        self.forwarded = 0
        self.forwarded_bytes = 0
        self.dropped_padding = 0
        self.nacks_in = 0
        self.nacks_out = 0
        self.retransmitted = 0
        self.rtx_upstream = 0
        self.pli_out = 0
        self.pli_in = 0
        self.sr_out = 0
        self.waiting_keyframe = 0
        self.unknown_ssrc = 0
        self.malformed_rtcp = 0
        self.layer_switches = 0
        self.dropped_temporal = 0
        self.malformed_vp8 = 0
        self.probe_packets = 0
        self.stream_pauses = 0
        self.dropped_muted = 0
        self.rtx_duplicates = 0


class DownTrack:
    """One subscriber's copy of one published track."""

    __slots__ = ("track", "receiver", "selector", "send_rtp", "send_rtcp", "ssrc", "pt_map",
                 "rtx_ssrc", "rtx_pt", "rtx_seq", "munger", "vp8", "sequencer", "ext",
                 "ext_len", "tcc_off", "abs_off", "level_off", "counters", "tcc", "packets",
                 "octets", "last_ts", "mid", "rtt_s", "loss", "jitter_s", "reported_at",
                 "on_sent", "disabled", "bw_paused", "priority", "reported_packets",
                 "reported_highest")

    def __init__(self, *, track: PublishedTrack, ssrc: int, mid: str,
                 pt_map: dict[int, int], rtx_ssrc: int | None, rtx_pt: int | None,
                 extension_ids: dict[str, int], send_rtp: SendFn, send_rtcp: SendFn,
                 tcc: list[int], counters: ForwardCounters, initial_seq: int,
                 initial_ts: int, on_sent: Callable[[int, int, float], None] | None = None
                 ) -> None:
        self.track = track
        #: called with (transport-wide seq, size, now) for every packet sent (the
        #: subscriber transport's bandwidth estimator)
        self.on_sent = on_sent
        self.disabled = False  # by the subscriber (track_settings)
        self.bw_paused = False  # by the allocator
        self.priority = 100
        self.receiver: Receiver | None = None  # the layer forwarded now
        self.selector = LayerSelector(len(track.layers))
        self.ssrc = ssrc
        self.mid = mid
        self.pt_map = pt_map
        self.rtx_ssrc = rtx_ssrc
        self.rtx_pt = rtx_pt
        self.rtx_seq = initial_seq
        self.send_rtp = send_rtp
        self.send_rtcp = send_rtcp
        self.munger = RtpMunger()
        self.vp8 = Vp8Munger()
        self.sequencer = Sequencer()
        self.counters = counters
        self.tcc = tcc  # the subscriber transport's transport-wide seq, shared [value]
        self.packets = 0
        self.octets = 0
        self.last_ts = 0
        self.rtt_s = 0.1
        # the subscriber's last receiver report for this track (connection quality)
        self.loss = 0.0
        self.jitter_s = 0.0
        self.reported_at = -1.0
        self.reported_packets = 0  # packets the last report covered
        self.reported_highest = -1
        # header extension block template (one-byte form), built once
        elements = bytearray()
        self.tcc_off = self.abs_off = self.level_off = -1
        mid_id = extension_ids.get(EXT_MID, 0)
        if mid_id and mid:
            raw = mid.encode()
            elements += bytes([(mid_id << 4) | (len(raw) - 1)]) + raw
        tcc_id = extension_ids.get(EXT_TRANSPORT_CC, 0)
        if tcc_id:
            self.tcc_off = len(elements) + 1
            elements += bytes([(tcc_id << 4) | 1, 0, 0])
        abs_id = extension_ids.get(EXT_ABS_SEND_TIME, 0)
        if abs_id:
            self.abs_off = len(elements) + 1
            elements += bytes([(abs_id << 4) | 2, 0, 0, 0])
        level_id = extension_ids.get(EXT_AUDIO_LEVEL, 0)
        if level_id and track.kind == "audio" and track.audio_level_id:
            self.level_off = len(elements) + 1
            elements += bytes([(level_id << 4), 0x7F])
        while len(elements) % 4:
            elements.append(0)
        if elements:
            self.ext = struct.pack("!HH", 0xBEDE, len(elements) // 4) + bytes(elements)
            self.tcc_off += 16 if self.tcc_off >= 0 else 0
            self.abs_off += 16 if self.abs_off >= 0 else 0
            self.level_off += 16 if self.level_off >= 0 else 0
        else:
            self.ext = b""
        self.ext_len = len(self.ext)

    @property
    def started(self) -> bool:
        return self.receiver is not None

    @property
    def paused(self) -> bool:
        return self.selector.paused

    def build(self, data: bytes, view: RtpView, seq: int, ts: int, now: float,
              ssrc: int, pt: int, prefix: bytes = b"", skip: int = 0) -> bytearray:
        """The packet for this subscriber: our header, our extensions, ``prefix``, then the
        payload from its byte ``skip`` on (a rewritten VP8 descriptor replaces ``skip``
        bytes)."""
        start = view.payload_offset + skip
        end = len(data) if view.padding else view.payload_offset + view.payload_size
        ext_len = self.ext_len
        out = bytearray(12 + ext_len + len(prefix) + end - start)
        b0 = 0x80 | (0x10 if ext_len else 0) | (data[0] & 0x20)
        b1 = (data[1] & 0x80) | pt
        _HDR.pack_into(out, 0, b0, b1, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
        if ext_len:
            out[12:12 + ext_len] = self.ext
            if self.tcc_off >= 0:
                tcc = self.tcc
                seq = tcc[0] & 0xFFFF
                _U16.pack_into(out, self.tcc_off, seq)
                tcc[0] += 1
                if self.on_sent is not None:
                    self.on_sent(seq, len(out), now)
            if self.abs_off >= 0:
                # 6.18 fixed-point seconds, 24 bits; keep the element header byte
                _ABS.pack_into(out, self.abs_off - 1, (out[self.abs_off - 1] << 24)
                               | (int(now * 262144) & 0xFFFFFF))
            if self.level_off >= 0:
                out[self.level_off] = self.track.last_audio_level
        off = 12 + ext_len
        if prefix:
            out[off:off + len(prefix)] = prefix
            off += len(prefix)
        out[off:] = memoryview(data)[start:end]
        return out

    # -- the per-packet path -----------------------------------------------------------
    def forward(self, data: bytes, view: RtpView, ext_seq: int, ext_ts: int, now: float,
                desc: Vp8Descriptor | None) -> None:
        """A packet of the layer this down-track forwards now."""
        if desc is not None and desc.tid >= 0:
            sel = self.selector
            current = sel.current_temporal
            if current != sel.target_temporal and desc.start_of_partition \
                    and desc.partition_index == 0:
                keep = sel.on_frame(desc.tid, desc.layer_sync, desc.is_keyframe)
            else:
                keep = desc.tid <= current
            if not keep:
                self.munger.drop(ext_seq)
                self.vp8.drop(desc)
                self.counters.dropped_temporal += 1
                return
        self._send(data, view, ext_seq, ext_ts, now, desc, False)

    def switch_to(self, receiver: Receiver, data: bytes, view: RtpView, ext_seq: int,
                  ext_ts: int, now: float, desc: Vp8Descriptor | None) -> None:
        """Start forwarding ``receiver``'s layer at this keyframe packet (the selector has
        agreed): the stream continues at the next seq, a timestamp advanced by the time
        since the last forwarded packet, the next picture id."""
        old = self.receiver
        if old is not None:
            old.downtracks = [d for d in old.downtracks if d is not self]
        self.receiver = receiver
        receiver.downtracks = [*receiver.downtracks, self]
        self.munger.switch_source(ext_seq, ext_ts, now, receiver.clock_rate)
        self.counters.layer_switches += old is not None
        self._send(data, view, ext_seq, ext_ts, now, desc, True)
        self._replay_after(receiver, ext_seq, now)
        self.track.refresh(self, now)

    def stop_forwarding(self) -> None:
        """Leave the current layer (paused or removed); resuming starts at a keyframe."""
        old = self.receiver
        if old is not None:
            old.downtracks = [d for d in old.downtracks if d is not self]
        self.receiver = None
        self.selector.current_spatial = -1

    def _replay_after(self, receiver: Receiver, ext_seq: int, now: float) -> None:
        """The keyframe's first packet came late (e.g. recovered by upstream RTX): the rest
        of the keyframe already arrived and was skipped while waiting; send it from the cache
        so this subscriber can decode at once."""
        cache = receiver.cache
        vp8_codec = receiver.vp8_pts
        for seq in range(ext_seq + 1, receiver.highest_ext_seq + 1):
            packet = cache.get(seq)
            if packet is None:
                continue
            try:
                view = parse_rtp(packet)
                desc = (vp8.parse_descriptor(packet, view.payload_offset,
                                             view.payload_offset + view.payload_size)
                        if view.payload_type in vp8_codec else None)
            except ValueError:
                continue
            ext_ts = ((receiver.highest_ext_ts - view.timestamp) & 0xFFFFFFFF)
            self.forward(packet, view, seq, receiver.highest_ext_ts - ext_ts, now, desc)

    def _send(self, data: bytes, view: RtpView, ext_seq: int, ext_ts: int, now: float,
              desc: Vp8Descriptor | None, switching: bool) -> None:
        mapped = self.munger.translate(ext_seq, ext_ts, now)
        if mapped is None:
            return  # from before the last switch
        seq, ts = mapped
        pt = self.pt_map.get(view.payload_type)
        if pt is None:
            return
        layer = self.receiver.layer if self.receiver is not None else 0
        if desc is not None:
            pid, tl0 = self.vp8.on_packet(desc, switching)
            head, skip = descriptor_head(data, view.payload_offset, desc, pid, tl0)
            self.sequencer.push(seq, ext_seq, now, ts, _codec_state(layer, pid, tl0))
            out = self.build(data, view, seq, ts, now, self.ssrc, pt, head, skip)
        else:
            self.sequencer.push(seq, ext_seq, now, ts, layer)
            out = self.build(data, view, seq, ts, now, self.ssrc, pt)
        self.packets += 1
        self.octets += view.payload_size
        self.last_ts = ts
        self.send_rtp(bytes(out))
        self.counters.forwarded += 1

    # -- feedback from the subscriber ------------------------------------------------------
    def on_nack(self, seqs: list[int], now: float) -> None:
        c = self.counters
        c.nacks_in += 1
        sequencer = self.sequencer
        layers = self.track.layers
        # at most one retransmission of a packet per RTT, and never more often than every
        # 40 ms: NACKs repeated by an impatient receiver must not flood a congested link
        for ext_seq, out_seq in sequencer.nacked(seqs, now, max(self.rtt_s, 0.04)):
            entry = sequencer.get(out_seq)
            if entry is None:
                continue
            state = entry.codec_state
            original = layers[_layer_of(state)].cache.get(ext_seq)
            if original is None:
                continue
            try:
                view = parse_rtp(original)
                prefix, skip = b"", 0
                if state > 3:  # a VP8 packet: the same picture id and TL0PICIDX again
                    pid, tl0 = _vp8_of(state)
                    start = view.payload_offset
                    desc = vp8.parse_descriptor(original, start, start + view.payload_size)
                    prefix, skip = descriptor_head(original, start, desc, pid, tl0)
            except ValueError:
                continue
            pt = self.pt_map.get(view.payload_type)
            if pt is None:
                continue
            ts = entry.out_ts
            if self.rtx_ssrc is not None and self.rtx_pt is not None:
                self.rtx_seq += 1
                out = self.build(original, view, self.rtx_seq, ts, now, self.rtx_ssrc,
                                 self.rtx_pt, _U16.pack(out_seq & 0xFFFF) + prefix, skip)
            else:
                out = self.build(original, view, out_seq, ts, now, self.ssrc, pt, prefix, skip)
            c.retransmitted += 1
            self.send_rtp(bytes(out))

    def request_keyframe(self, now: float) -> bool:
        """The subscriber lost the picture (PLI/FIR): ask the layer it gets or awaits."""
        receiver = self.receiver
        if receiver is None:
            wanted = self.selector.keyframe_wanted()
            if wanted < 0:
                return False
            receiver = self.track.layers[wanted]
        return receiver.request_keyframe(now)

    def sender_report(self, now: float) -> bytes | None:
        """An SR on the publisher's NTP timeline, so audio and video stay in sync."""
        receiver = self.receiver
        sr = receiver.last_sr if receiver is not None else None
        if sr is None or not self.packets:
            return None
        ntp_s, rtp_ts, arrived = sr
        elapsed = now - arrived
        pub_rtp = rtp_ts + int(elapsed * receiver.clock_rate)  # type: ignore[union-attr]
        out_rtp = (pub_rtp - self.munger.ts_offset) & 0xFFFFFFFF
        return build_sr(self.ssrc, ntp_from_unix(ntp_s + elapsed), out_rtp,
                        self.packets & 0xFFFFFFFF, self.octets & 0xFFFFFFFF)

    def padding(self, size: int, now: float) -> bytes | None:
        """A padding-only packet of about ``size`` bytes on the RTX stream (a bandwidth
        probe; None without RTX). It carries a transport-wide sequence number like
        everything else, so the estimator sees it."""
        if self.rtx_ssrc is None or self.rtx_pt is None:
            return None
        pad = max(1, min(size - 12 - self.ext_len, 255))
        self.rtx_seq += 1
        out = bytearray(12 + self.ext_len + pad)
        _HDR.pack_into(out, 0, 0xA0 | (0x10 if self.ext_len else 0), self.rtx_pt,
                       self.rtx_seq & 0xFFFF, self.last_ts & 0xFFFFFFFF, self.rtx_ssrc)
        if self.ext_len:
            out[12:12 + self.ext_len] = self.ext
            if self.tcc_off >= 0:
                tcc = self.tcc
                seq = tcc[0] & 0xFFFF
                _U16.pack_into(out, self.tcc_off, seq)
                tcc[0] += 1
                if self.on_sent is not None:
                    self.on_sent(seq, len(out), now)
        out[-1] = pad
        return bytes(out)

    # -- subscriber settings and allocation ------------------------------------------------
    def apply_settings(self, settings: dict[str, Any], now: float) -> None:
        """``track_settings`` fields: ``disabled``, ``quality``, ``width``/``height``,
        ``priority``."""
        sel = self.selector
        track = self.track
        if "quality" in settings:
            sel.set_max(layer_for_quality(settings["quality"], track.qualities))
        elif settings.get("width") or settings.get("height"):
            sel.set_max(layer_for_size(settings.get("width", 0), settings.get("height", 0),
                                       track.sizes))
        if "priority" in settings:
            self.priority = settings["priority"]
        if "disabled" in settings:
            self.disabled = bool(settings["disabled"])
        self._update_pause(now)

    def set_allocation(self, layer: int, now: float) -> None:
        """The allocator's target layer; -1 pauses the track for bandwidth."""
        if layer < 0:
            self.bw_paused = True
        else:
            self.bw_paused = False
            self.selector.set_allocation(layer)
        self._update_pause(now)

    def _update_pause(self, now: float) -> None:
        sel = self.selector
        want = self.disabled or self.bw_paused
        if want and not sel.paused:
            sel.pause()
            self.stop_forwarding()
        elif not want and sel.paused:
            sel.resume()
        self.track.refresh(self, now)


class Receiver:
    """One incoming media SSRC of a published track: a simulcast layer, or the only one."""

    __slots__ = ("track", "layer", "rid", "kind", "ssrc", "clock_rate", "codecs", "vp8_pts",
                 "cache", "nack", "downtracks", "pending", "last_sr", "last_keyframe_request",
                 "counters", "send_rtcp", "sender_ssrc", "rtx_pts", "highest_ext_seq",
                 "highest_ext_ts", "last_packet_at", "active", "packets", "octets", "nack_on",
                 "audio_level_id", "bitrate_bps", "_rate_octets", "_rate_at", "_rate_prev")

    def __init__(self, track: PublishedTrack, layer: int, rid: str) -> None:
        self.track = track
        self.layer = layer
        self.rid = rid
        self.kind = track.kind
        self.ssrc = 0  # until bound (a=ssrc, or the first packets' mid/rid)
        self.clock_rate = track.clock_rate
        self.codecs = track.codecs
        self.vp8_pts = frozenset(pt for pt, name in track.codecs.items() if name == "VP8")
        self.rtx_pts = track.rtx_pts
        self.audio_level_id = track.audio_level_id
        self.counters = track.counters
        self.send_rtcp = track.send_rtcp
        self.sender_ssrc = track.sender_ssrc
        self.cache = PacketCache(1024 if track.kind == "video" else 256)
        self.nack = NackGenerator()
        self.nack_on = track.nack  # only when the publisher's codec negotiated NACK
        # copy-on-write lists: a switch made while iterating one never disturbs the loop
        self.downtracks: list[DownTrack] = []  # forwarding this layer now
        self.pending: list[DownTrack] = []  # waiting for this layer's next keyframe
        self.last_sr: tuple[float, int, float] | None = None  # (ntp seconds, rtp ts, arrival)
        self.last_keyframe_request = -1e9
        self.highest_ext_seq = -1
        self.highest_ext_ts = 0
        self.last_packet_at = 0.0
        self.active = False
        self.packets = 0
        self.octets = 0
        #: recent peak bitrate (payload bits/s over the last two 1 s windows)
        self.bitrate_bps = 0
        self._rate_octets = 0
        self._rate_at = -1.0
        self._rate_prev = 0

    def measure(self, now: float) -> None:
        """Close a 1 s bitrate window (from the track's tick)."""
        if self._rate_at < 0:
            self._rate_at, self._rate_octets = now, self.octets
            return
        elapsed = now - self._rate_at
        if elapsed < 1.0:
            return
        bps = int((self.octets - self._rate_octets) * 8 / elapsed)
        self.bitrate_bps = max(bps, self._rate_prev)
        self._rate_prev = bps
        self._rate_at, self._rate_octets = now, self.octets

    def on_packet(self, data: bytes, view: RtpView, ext_seq: int, ext_ts: int,
                  now: float) -> None:
        self.last_packet_at = now
        track = self.track
        if not self.active:
            track.set_active(self, True, now)
        if view.payload_size == 0 or track.muted:
            # padding probes are never forwarded, nor anything of a muted track
            if track.muted:
                self.counters.dropped_muted += 1
            else:
                self.counters.dropped_padding += 1
            for dt in self.downtracks:
                dt.munger.drop(ext_seq)
            return
        self.packets += 1
        self.octets += view.payload_size
        self.cache.put(ext_seq, data)
        if self.nack_on:
            self.nack.on_packet(ext_seq, now)
        if ext_seq > self.highest_ext_seq:
            self.highest_ext_seq = ext_seq
            self.highest_ext_ts = ext_ts
        desc: Vp8Descriptor | None = None
        keyframe = False
        if view.payload_type in self.vp8_pts:
            start = view.payload_offset
            try:
                desc = vp8.parse_descriptor(data, start, start + view.payload_size)
            except ValueError:
                self.counters.malformed_vp8 += 1
                return
            keyframe = desc.is_keyframe
        elif self.kind == "audio":
            if self.audio_level_id:
                self._read_audio_level(data, view)
        elif self.pending:
            codec = self.codecs.get(view.payload_type, "")
            try:
                keyframe = codec == "H264" and h264.is_keyframe(view.payload(data))
            except ValueError:
                keyframe = False
        downtracks = self.downtracks  # the list before any switch below
        if self.pending:
            if keyframe:
                layer = self.layer
                for dt in self.pending:
                    if dt.selector.on_keyframe(layer):
                        dt.switch_to(self, data, view, ext_seq, ext_ts, now, desc)
            else:
                self.counters.waiting_keyframe += 1
        for dt in downtracks:
            dt.forward(data, view, ext_seq, ext_ts, now, desc)

    def _read_audio_level(self, data: bytes, view: RtpView) -> None:
        loc = view.find_extension(data, self.audio_level_id)
        if loc is not None and loc[1] >= 1:
            self.track.last_audio_level = data[loc[0]]

    def request_keyframe(self, now: float) -> bool:
        if self.kind != "video" or not self.ssrc \
                or now - self.last_keyframe_request < KEYFRAME_THROTTLE_S:
            return False
        self.last_keyframe_request = now
        self.counters.pli_out += 1
        self.send_rtcp(build_pli(self.sender_ssrc, self.ssrc))
        return True

    def nacks_due(self, now: float, rtt_s: float) -> None:
        if not self.nack_on:
            return
        seqs = self.nack.due(now, rtt_s)
        if seqs:
            self.counters.nacks_out += 1
            self.send_rtcp(build_nack(self.sender_ssrc, self.ssrc, seqs))


class PublishedTrack:
    """A published track: its layers' receivers and its subscribers' down-tracks.

    ``rids`` name the simulcast layers lowest first; ``layers`` counts them when they are
    told apart by SSRC (``a=ssrc-group:SIM``) rather than rid; with neither the track has
    one layer. ``qualities`` and
    ``sizes`` describe them (from ``add_track``'s ``simulcast_layers``) so a subscriber's
    ``track_settings`` can be mapped to a layer.
    """

    def __init__(self, *, track_sid: str, kind: str, clock_rate: int, codecs: dict[int, str],
                 rtx_pts: dict[int, int], audio_level_id: int, send_rtcp: SendFn,
                 sender_ssrc: int, counters: ForwardCounters, rids: tuple[str, ...] = (),
                 layers: int = 0, qualities: list[str] | None = None,
                 sizes: list[tuple[int, int]] | None = None, owner_sid: str = "",
                 source: str = "", nack: bool = True) -> None:
        n = max(len(rids), layers, 1)
        if n > MAX_LAYERS:
            raise ValueError(f"{n} simulcast layers; at most {MAX_LAYERS} are supported")
        self.track_sid = track_sid
        self.owner_sid = owner_sid  # the publishing participant
        self.nack = nack  # the publisher answers NACKs (negotiated rtcp-fb nack)
        self.source = source or ("microphone" if kind == "audio" else "camera")
        self.kind = kind
        self.clock_rate = clock_rate
        self.codecs = codecs  # payload type -> codec name
        self.rtx_pts = rtx_pts  # rtx payload type -> media payload type
        self.audio_level_id = audio_level_id
        self.last_audio_level = 0x7F
        self.send_rtcp = send_rtcp
        self.sender_ssrc = sender_ssrc
        self.counters = counters
        self.rids = rids
        self.qualities = qualities or (["low", "medium", "high"][-n:] if n <= 3 else [])
        self.sizes = sizes or []
        self.layers = [Receiver(self, i, rids[i] if rids else "") for i in range(n)]
        self.downtracks: list[DownTrack] = []
        # dynacast: which layers the publisher was told to send, and since when fewer
        # would do
        self.announced: list[bool] | None = None
        self._fewer_since: float | None = None
        #: muted (by its publisher or an admin): nothing of it is forwarded
        self.muted = False

    @property
    def simulcast(self) -> bool:
        return len(self.layers) > 1

    def layer_for_rid(self, rid: str) -> Receiver | None:
        for receiver in self.layers:
            if receiver.rid == rid:
                return receiver
        return None

    def add_downtrack(self, dt: DownTrack, now: float) -> None:
        self.downtracks.append(dt)
        for receiver in self.layers:
            if receiver.active:
                dt.selector.set_available(receiver.layer, True)
        if self.kind == "audio":  # no keyframes to wait for
            receiver = self.layers[0]
            dt.selector.set_available(0, True)
            dt.selector.on_keyframe(0)
            dt.receiver = receiver
            receiver.downtracks = [*receiver.downtracks, dt]
            return
        self.refresh(dt, now)

    def remove_downtrack(self, dt: DownTrack) -> None:
        if dt in self.downtracks:
            self.downtracks.remove(dt)
        dt.stop_forwarding()
        for receiver in self.layers:
            if dt in receiver.pending:
                receiver.pending = [d for d in receiver.pending if d is not dt]

    def refresh(self, dt: DownTrack, now: float) -> None:
        """Put ``dt`` on the pending lists of the layers it may switch to, and ask for a
        keyframe on the layer it wants (throttled)."""
        candidates = dt.selector.switch_candidates()
        for receiver in self.layers:
            waiting = dt in receiver.pending
            if receiver.layer in candidates:
                if not waiting:
                    receiver.pending = [*receiver.pending, dt]
            elif waiting:
                receiver.pending = [d for d in receiver.pending if d is not dt]
        wanted = dt.selector.keyframe_wanted()
        if wanted >= 0:
            self.layers[wanted].request_keyframe(now)

    def set_active(self, receiver: Receiver, active: bool, now: float) -> None:
        """A layer started or stopped arriving: every subscriber re-aims."""
        receiver.active = active
        if self.kind == "audio":
            return
        for dt in self.downtracks:
            dt.selector.set_available(receiver.layer, active)
            self.refresh(dt, now)

    def tick(self, now: float) -> None:
        """Timers (from the node's tick): stopped layers, and keyframe requests again for
        down-tracks still waiting for one (the publisher may have missed or ignored ours)."""
        for receiver in self.layers:
            receiver.measure(now)
        if self.kind != "video":
            return
        for receiver in self.layers:
            if receiver.active and now - receiver.last_packet_at > LAYER_TIMEOUT_S:
                self.set_active(receiver, False, now)
            if receiver.pending and receiver.ssrc:
                if any(dt.selector.keyframe_wanted() == receiver.layer
                       for dt in receiver.pending):
                    receiver.request_keyframe(now)

    def set_muted(self, muted: bool, now: float) -> None:
        """Stop forwarding (the subscribers' streams keep their numbering: dropped packets
        leave no gap) or start again; video restarts at a keyframe."""
        if muted == self.muted:
            return
        self.muted = muted
        if not muted and self.kind == "video":
            for dt in self.downtracks:
                dt.stop_forwarding()
                self.refresh(dt, now)

    def needed_layers(self) -> list[bool]:
        """Dynacast: the layers some subscriber may receive, i.e. every layer up to the
        highest one a subscriber's settings and allocation allow (lower ones stay on so a
        subscriber can always step down at once). With no subscriber, the lowest only."""
        top = 0
        for dt in self.downtracks:
            sel = dt.selector
            if not sel.paused:
                top = max(top, min(sel.max_spatial, sel.alloc_spatial))
        return [i <= top for i in range(len(self.layers))]

    def dynacast(self, now: float) -> list[bool] | None:
        """The layers to announce to the publisher when that changes (None: no change).

        More layers are announced at once; fewer only after ``DYNACAST_OFF_DELAY_S`` of
        wanting fewer. The forwarding never depends on the publisher honouring it."""
        if len(self.layers) < 2:
            return None
        needed = self.needed_layers()
        announced = self.announced
        if announced == needed:
            self._fewer_since = None
            return None
        if announced is not None and sum(needed) < sum(announced):
            if self._fewer_since is None:
                self._fewer_since = now
            if now - self._fewer_since < DYNACAST_OFF_DELAY_S:
                return None
        self._fewer_since = None
        self.announced = needed
        return needed

    def stats(self) -> dict[str, Any]:
        return {"track_sid": self.track_sid, "layers": [
            {"rid": r.rid, "ssrc": r.ssrc, "active": r.active, "downtracks": len(r.downtracks),
             "pending": len(r.pending)} for r in self.layers]}
