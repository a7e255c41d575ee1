"""The per-packet forwarding path: one publisher packet → rewritten packets for subscribers.

``Receiver`` is a published track's upstream (one media SSRC): packet cache, upstream NACKs,
keyframe requests, its publisher's Sender Report clock. ``DownTrack`` is one subscriber's
copy of that track: its own SSRC, payload types, header extensions (its mid, its transport's
transport-cc sequence, a fresh abs-send-time), seq/ts munging, NACK sequencer and RTX.

Everything here runs synchronously inside ``datagram_received``: no await, task, queue or
log line per packet. Headers are written as bytes with ``struct.pack_into``; the outgoing
header extension block of each down-track is a template built once at negotiation.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from sfu.codecs import h264, vp8
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
SendFn = Callable[[bytes], None]


def _is_keyframe(codec: str, data: bytes, view: RtpView) -> bool:
    try:
        if codec == "VP8":
            start = view.payload_offset
            return vp8.parse_descriptor(data, start, start + view.payload_size).is_keyframe
        if codec == "H264":
            return h264.is_keyframe(view.payload(data))
    except ValueError:
        return False
    return True


class ForwardCounters:
    __slots__ = ("forwarded", "forwarded_bytes", "dropped_padding", "nacks_in", "nacks_out",
                 "retransmitted", "rtx_upstream", "pli_out", "pli_in", "sr_out",
                 "waiting_keyframe", "unknown_ssrc", "malformed_rtcp")

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


class DownTrack:
    """One subscriber's copy of one published track."""

    __slots__ = ("receiver", "send_rtp", "send_rtcp", "ssrc", "pt_map", "rtx_ssrc", "rtx_pt",
                 "rtx_seq", "munger", "sequencer", "ext", "ext_len", "tcc_off", "abs_off",
                 "level_off", "level_in_id", "started", "counters", "tcc", "packets",
                 "octets", "last_ts", "mid", "rtt_s", "paused")

    def __init__(self, *, receiver: Receiver, ssrc: int, mid: str,
                 pt_map: dict[int, int], rtx_ssrc: int | None, rtx_pt: int | None,
                 extension_ids: dict[str, int], send_rtp: SendFn, send_rtcp: SendFn,
                 tcc: list[int], counters: ForwardCounters, initial_seq: int,
                 initial_ts: int) -> None:
        self.receiver = receiver
        self.ssrc = ssrc
        self.mid = mid
        self.pt_map = pt_map
        self.rtx_ssrc = rtx_ssrc
        self.rtx_pt = rtx_pt
        self.rtx_seq = initial_seq
        self.send_rtp = send_rtp
        self.send_rtcp = send_rtcp
        self.munger = RtpMunger()
        self.sequencer = Sequencer()
        self.counters = counters
        self.tcc = tcc  # the subscriber transport's transport-wide seq, shared [value]
        self.started = receiver.kind == "audio"
        if not self.started:
            receiver.waiting += 1  # until this down-track sees a keyframe
        self.packets = 0
        self.octets = 0
        self.last_ts = 0
        self.rtt_s = 0.1
        self.paused = False
        # header extension block template (one-byte form), built once
        elements = bytearray()
        self.tcc_off = self.abs_off = self.level_off = -1
        self.level_in_id = receiver.audio_level_id
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
        if level_id and receiver.kind == "audio" and self.level_in_id:
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

    def build(self, data: bytes, view: RtpView, seq: int, ts: int, now: float,
              ssrc: int, pt: int, prefix: bytes = b"") -> bytearray:
        """The packet for this subscriber: our header, our extensions, the same payload."""
        start = view.payload_offset
        end = len(data) if view.padding else start + view.payload_size
        ext_len = self.ext_len
        out = bytearray(12 + ext_len + len(prefix) + end - start)
        b0 = 0x80 | (0x10 if ext_len else 0) | (data[0] & 0x20)
        b1 = (data[1] & 0x80) | pt
        _HDR.pack_into(out, 0, b0, b1, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
        if ext_len:
            out[12:12 + ext_len] = self.ext
            if self.tcc_off >= 0:
                tcc = self.tcc
                _U16.pack_into(out, self.tcc_off, tcc[0] & 0xFFFF)
                tcc[0] += 1
            if self.abs_off >= 0:
                # 6.18 fixed-point seconds, 24 bits; keep the element header byte
                _ABS.pack_into(out, self.abs_off - 1, (out[self.abs_off - 1] << 24)
                               | (int(now * 262144) & 0xFFFFFF))
            if self.level_off >= 0:
                level = self.receiver.last_audio_level
                out[self.level_off] = level
        off = 12 + ext_len
        if prefix:
            out[off:off + len(prefix)] = prefix
            off += len(prefix)
        out[off:] = memoryview(data)[start:end]
        return out

    def forward(self, data: bytes, view: RtpView, ext_seq: int, ext_ts: int, now: float,
                keyframe: bool) -> None:
        if not self.started:
            if not keyframe:
                self.counters.waiting_keyframe += 1
                return
            self.started = True
            self.receiver.waiting -= 1
            self.munger.switch_source(ext_seq, ext_ts, now, self.receiver.clock_rate)
            self._send(data, view, ext_seq, ext_ts, now)
            self._replay_after(ext_seq, now)
            return
        self._send(data, view, ext_seq, ext_ts, now)

    def _replay_after(self, ext_seq: int, now: float) -> None:
        """The keyframe's first packet came late (e.g. recovered by upstream RTX): the rest
        of the keyframe already arrived and was skipped while waiting; send it from the cache
        so this subscriber can decode at once."""
        receiver = self.receiver
        cache = receiver.cache
        for seq in range(ext_seq + 1, receiver.highest_ext_seq + 1):
            packet = cache.get(seq)
            if packet is None:
                continue
            try:
                view = parse_rtp(packet)
            except ValueError:
                continue
            ext_ts = ((receiver.highest_ext_ts - view.timestamp) & 0xFFFFFFFF)
            self._send(packet, view, seq, receiver.highest_ext_ts - ext_ts, now)

    def _send(self, data: bytes, view: RtpView, ext_seq: int, ext_ts: int, now: float) -> None:
        mapped = self.munger.translate(ext_seq, ext_ts, now)
        if mapped is None:
            return  # from before the last switch
        seq, ts = mapped
        pt = self.pt_map.get(view.payload_type)
        if pt is None:
            return
        self.sequencer.push(seq, ext_seq, now)
        out = self.build(data, view, seq, ts, now, self.ssrc, pt)
        self.packets += 1
        self.octets += view.payload_size
        self.last_ts = ts
        self.send_rtp(bytes(out))
        self.counters.forwarded += 1

    def on_nack(self, seqs: list[int], now: float) -> None:
        c = self.counters
        c.nacks_in += 1
        cache = self.receiver.cache
        for ext_seq, out_seq in self.sequencer.nacked(seqs, now, self.rtt_s):
            original = cache.get(ext_seq)
            if original is None:
                continue
            try:
                view = parse_rtp(original)
            except ValueError:
                continue
            ts = (view.timestamp - self.munger.ts_offset) & 0xFFFFFFFF
            pt = self.pt_map.get(view.payload_type)
            if pt is None:
                continue
            if self.rtx_ssrc is not None and self.rtx_pt is not None:
                self.rtx_seq += 1
                out = self.build(original, view, self.rtx_seq, ts, now, self.rtx_ssrc,
                                 self.rtx_pt, _U16.pack(out_seq & 0xFFFF))
            else:
                out = self.build(original, view, out_seq, ts, now, self.ssrc, pt)
            c.retransmitted += 1
            self.send_rtp(bytes(out))

    def sender_report(self, now: float) -> bytes | None:
        """An SR on the publisher's NTP timeline, so audio and video stay in sync."""
        sr = self.receiver.last_sr
        if sr is None or not self.packets:
            return None
        ntp_s, rtp_ts, arrived = sr
        elapsed = now - arrived
        pub_rtp = rtp_ts + int(elapsed * self.receiver.clock_rate)
        out_rtp = (pub_rtp - self.munger.ts_offset) & 0xFFFFFFFF
        return build_sr(self.ssrc, ntp_from_unix(ntp_s + elapsed), out_rtp,
                        self.packets & 0xFFFFFFFF, self.octets & 0xFFFFFFFF)


class Receiver:
    """A published track's upstream: one media SSRC from one publisher transport."""

    __slots__ = ("track_sid", "kind", "ssrc", "clock_rate", "codecs", "cache", "nack",
                 "downtracks", "last_sr", "last_keyframe_request", "audio_level_id",
                 "last_audio_level", "counters", "send_rtcp", "sender_ssrc", "waiting",
                 "rtx_pts", "highest_ext_seq", "highest_ext_ts")

    def __init__(self, *, track_sid: str, kind: str, ssrc: int, clock_rate: int,
                 codecs: dict[int, str], rtx_pts: dict[int, int], audio_level_id: int,
                 send_rtcp: SendFn, sender_ssrc: int, counters: ForwardCounters) -> None:
        self.track_sid = track_sid
        self.kind = kind
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.codecs = codecs  # payload type -> codec name
        self.rtx_pts = rtx_pts  # rtx payload type -> media payload type
        self.cache = PacketCache(1024 if kind == "video" else 256)
        self.nack = NackGenerator()
        self.downtracks: list[DownTrack] = []
        self.last_sr: tuple[float, int, float] | None = None  # (ntp seconds, rtp ts, arrival)
        self.last_keyframe_request = -1e9
        self.audio_level_id = audio_level_id
        self.last_audio_level = 0x7F
        self.counters = counters
        self.send_rtcp = send_rtcp
        self.sender_ssrc = sender_ssrc
        self.waiting = 0
        self.highest_ext_seq = -1
        self.highest_ext_ts = 0

    def on_packet(self, data: bytes, view: RtpView, ext_seq: int, ext_ts: int,
                  now: float) -> None:
        if view.payload_size == 0:
            self.counters.dropped_padding += 1  # padding probes are never forwarded
            for dt in self.downtracks:
                dt.munger.drop(ext_seq)
            return
        self.cache.put(ext_seq, data)
        self.nack.on_packet(ext_seq, now)
        if ext_seq > self.highest_ext_seq:
            self.highest_ext_seq = ext_seq
            self.highest_ext_ts = ext_ts
        keyframe = False
        if self.kind == "video" and self.waiting:  # only a starting down-track needs to know
            codec = self.codecs.get(view.payload_type, "")
            keyframe = _is_keyframe(codec, data, view)
        elif self.audio_level_id:
            self._read_audio_level(data, view)
        for dt in self.downtracks:
            if not dt.paused:
                dt.forward(data, view, ext_seq, ext_ts, now, keyframe)

    def _read_audio_level(self, data: bytes, view: RtpView) -> None:
        loc = view.find_extension(data, self.audio_level_id)
        if loc is not None and loc[1] >= 1:
            self.last_audio_level = data[loc[0]]

    def request_keyframe(self, now: float) -> bool:
        if self.kind != "video" or now - self.last_keyframe_request < KEYFRAME_THROTTLE_S:
            return False
        self.last_keyframe_request = now
        self.counters.pli_out += 1
        self.send_rtcp(build_pli(self.sender_ssrc, self.ssrc))
        return True

    def nacks_due(self, now: float, rtt_s: float) -> None:
        seqs = self.nack.due(now, rtt_s)
        if seqs:
            self.counters.nacks_out += 1
            self.send_rtcp(build_nack(self.sender_ssrc, self.ssrc, seqs))

    def stats(self) -> dict[str, Any]:
        return {"track_sid": self.track_sid, "ssrc": self.ssrc,
                "downtracks": len(self.downtracks)}
