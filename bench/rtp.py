"""The bench clients' RTP cores (pure: time is passed in, nothing here touches a socket).

:class:`PublisherCore` turns a looped :class:`~bench.media.EncodedMedia` into RTP: Opus every
20 ms and VP8 frames at the loop's frame rate, each packet with the mid, abs-send-time and
transport-wide sequence header extensions. RTP timestamps follow each packet's scheduled
send time (``start`` + its index × its duration), and the sender reports map that timeline
to wall-clock NTP, so a receiver can compute one-way delay from RTP timestamps alone. NACKed
packets come back from a send cache (RTX when negotiated), and a keyframe request restarts
the loop on its keyframe. :class:`SimulcastPublisherCore` sends the same way with RID
simulcast, as Chromium does: per layer a media and an RTX SSRC announced only by the mid and
rtp-stream-id / repaired-rtp-stream-id header extensions, keyframes per layer, and a way to
hold a layer's keyframes back. :class:`AudioPublisherCore` sends the Opus stream alone.

:class:`ReceiverCore` follows what a subscriber receives: packets and bytes per SSRC,
extended sequence numbers, loss (with and without retransmissions), one-way delay from the
latest sender report's NTP ↔ RTP mapping, and produces the RTCP a browser would send:
transport-cc feedback, receiver reports, NACKs and PLIs. With ``decode`` it also
reassembles and decodes the video, and with ``record_frames`` it lists every decoded frame
(:class:`DecodedFrame`).
"""

from __future__ import annotations

import struct
import zlib
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from sfu.rtp.header import parse_rtp
from sfu.rtp.nack import NackGenerator
from sfu.rtp.ntp import ntp_from_unix, unix_from_ntp
from sfu.rtp.rtcp import (
    Fir,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    SenderReport,
    TransportCc,
    build_nack,
    build_pli,
    build_rr,
    build_sdes_cname,
    build_sr,
    parse_rtcp,
)
from sfu.rtp.stats import ReceiveStats
from sfu.rtp.twcc import TwccRecorder
from sfu.webrtc.sdp import (
    EXT_ABS_SEND_TIME,
    EXT_MID,
    EXT_REPAIRED_RID,
    EXT_RID,
    EXT_TRANSPORT_CC,
)

from .media import (
    OPUS_FRAME_SAMPLES,
    VP8_DESCRIPTOR_SIZE,
    VP8_LAYERED_DESCRIPTOR_SIZE,
    EncodedMedia,
    Vp8Checker,
    Vp8FrameAssembler,
    packetize_vp8,
    write_vp8_descriptor,
)

__all__ = ["PUBLISHER_EXTENSIONS", "SIMULCAST_EXTENSIONS", "AudioPublisherCore", "DecodedFrame",
           "PublisherCore", "ReceiverCore", "RecvStream", "SimulcastLayer", "SimulcastPublisherCore",
           "SimulcastSource", "StreamInfo"]

_HDR = struct.Struct("!BBHII")
_U16 = struct.Struct("!H")
_ABS = struct.Struct("!I")
_CACHE_SIZE = 1024  # packets per stream kept for retransmission (power of two)
_SEEN_SIZE = 4096  # extended seqs remembered per received stream to spot duplicates
MAX_LATE_S = 0.5  # a publisher further behind its schedule skips ahead instead of bursting

#: The header extension ids the bench publisher offers (Chromium's numbering).
PUBLISHER_EXTENSIONS: Mapping[str, int] = {
    EXT_ABS_SEND_TIME: 2,
    EXT_TRANSPORT_CC: 3,
    EXT_MID: 4,
}

#: The ids with RID simulcast, Chromium's numbering: also rtp-stream-id and
#: repaired-rtp-stream-id.
SIMULCAST_EXTENSIONS: Mapping[str, int] = {
    **PUBLISHER_EXTENSIONS,
    EXT_RID: 10,
    EXT_REPAIRED_RID: 11,
}


class _SendStream:
    __slots__ = ("ssrc", "pt", "clock_rate", "seq", "ts_base", "template", "abs_off",
                 "tcc_off", "cache", "packets", "octets", "mid")

    def __init__(self, ssrc: int, pt: int, clock_rate: int, seq: int, ts_base: int,
                 mid: str, ext_ids: Mapping[str, int], rid: str = "",
                 repaired: bool = False) -> None:
        self.ssrc = ssrc
        self.pt = pt
        self.clock_rate = clock_rate
        self.seq = seq
        self.ts_base = ts_base
        self.mid = mid
        self.cache: list[tuple[int, int, bool, bytes] | None] = [None] * _CACHE_SIZE
        self.packets = 0
        self.octets = 0
        self.template, self.abs_off, self.tcc_off = _extension_template(
            mid, ext_ids, rid, repaired)


def _extension_template(mid: str, ext_ids: Mapping[str, int], rid: str = "",
                        repaired: bool = False) -> tuple[bytes, int, int]:
    """12 header bytes + a one-byte-form extension block: mid, then ``rid`` as
    rtp-stream-id (or as repaired-rtp-stream-id when ``repaired``), abs-send-time and
    transport-cc, each if it has an id in ``ext_ids``; offsets of the abs-send-time and
    transport-cc values (-1 if not used)."""
    elements = bytearray()
    abs_off = tcc_off = -1
    for uri, value in ((EXT_MID, mid), (EXT_REPAIRED_RID if repaired else EXT_RID, rid)):
        ext_id = ext_ids.get(uri, 0)
        if not ext_id or not value:
            continue
        raw = value.encode()
        if not 1 <= ext_id <= 14 or len(raw) > 16:
            raise ValueError(f"{uri} id {ext_id} with {value!r} does not fit the one-byte form")
        elements += bytes([(ext_id << 4) | (len(raw) - 1)]) + raw
    abs_id = ext_ids.get(EXT_ABS_SEND_TIME, 0)
    if abs_id:
        abs_off = len(elements) + 1
        elements += bytes([(abs_id << 4) | 2, 0, 0, 0])
    tcc_id = ext_ids.get(EXT_TRANSPORT_CC, 0)
    if tcc_id:
        tcc_off = len(elements) + 1
        elements += bytes([(tcc_id << 4) | 1, 0, 0])
    while len(elements) % 4:
        elements.append(0)
    if not elements:
        return bytes(12), -1, -1
    block = struct.pack("!HH", 0xBEDE, len(elements) // 4) + bytes(elements)
    return (bytes(12) + block, abs_off + 16 if abs_off >= 0 else -1,
            tcc_off + 16 if tcc_off >= 0 else -1)


class _PublisherBase:
    """What both publisher cores share: the Opus stream, one schedule for audio packets
    and video frames, packet building (header extensions stamped at send time),
    retransmissions from the send caches, sender reports."""

    def __init__(self, audio_packets: tuple[bytes, ...], fps: int, audio: _SendStream, *,
                 start: float, wall_offset_s: float, tcc_seq: int, cname: str) -> None:
        self.audio = audio
        self._audio_packets = audio_packets
        self.rtx_enabled = False
        self.cname = cname
        self.start = start
        self.wall_offset_s = wall_offset_s
        self.tcc_seq = tcc_seq
        self._audio_index = 0  # packets scheduled so far
        self._video_index = 0  # frames scheduled so far
        self._frame_s = 1.0 / fps
        self.nacked = 0
        self.retransmitted = 0
        self.retransmit_misses = 0
        self.late_skips = 0
        self.recording = False
        #: How late packets left against their schedule (ms), while ``recording``.
        self.send_lag_ms: array[float] = array("d")

    # -- pacing -------------------------------------------------------------------------

    @property
    def next_at(self) -> float:
        """When :meth:`due` has the next packet to send."""
        audio_at = self.start + self._audio_index * 0.02
        video_at = self.start + self._video_index * self._frame_s
        return audio_at if audio_at < video_at else video_at

    def due(self, now: float) -> list[bytes]:
        """Every packet scheduled at or before ``now``, in schedule order."""
        out: list[bytes] = []
        start = self.start
        if now - self.next_at > MAX_LATE_S:
            # Stalled (a busy loop): skip what is too old instead of sending a burst.
            self.late_skips += 1
            self._audio_index = int((now - start) / 0.02)
            self._video_index = int((now - start) / self._frame_s)
        while True:
            audio_at = start + self._audio_index * 0.02
            video_at = start + self._video_index * self._frame_s
            if audio_at <= video_at:
                if audio_at > now:
                    break
                out.append(self._audio_packet(now))
                if self.recording:
                    self.send_lag_ms.append((now - audio_at) * 1000.0)
            else:
                if video_at > now:
                    break
                out += self._video_frame(now)
                if self.recording:
                    self.send_lag_ms.append((now - video_at) * 1000.0)
        return out

    def _audio_packet(self, now: float) -> bytes:
        packets = self._audio_packets
        payload = packets[self._audio_index % len(packets)]
        ts = self.audio.ts_base + self._audio_index * OPUS_FRAME_SAMPLES
        self._audio_index += 1
        return self._emit(self.audio, ts, False, payload, now)

    def _video_frame(self, now: float) -> list[bytes]:
        """The packets of the next scheduled video frame (every layer's, with simulcast)."""
        raise NotImplementedError

    def _emit(self, stream: _SendStream, ts: int, marker: bool, payload: bytes,
              now: float) -> bytes:
        seq = stream.seq
        stream.seq = (seq + 1) & 0xFFFF
        stream.cache[seq & (_CACHE_SIZE - 1)] = (seq, ts, marker, payload)
        stream.packets += 1
        stream.octets += len(payload)
        return self._build(stream, seq, ts, marker, payload, now)

    def _build(self, stream: _SendStream, seq: int, ts: int, marker: bool, payload: bytes,
               now: float) -> bytes:
        head = bytearray(stream.template)
        ext = len(head) > 12
        _HDR.pack_into(head, 0, 0x90 if ext else 0x80, (0x80 if marker else 0) | stream.pt,
                       seq, ts & 0xFFFFFFFF, stream.ssrc)
        if stream.abs_off >= 0:
            off = stream.abs_off - 1  # keep the element header byte
            _ABS.pack_into(head, off, (head[off] << 24)
                           | (int((now + self.wall_offset_s) * 262144) & 0xFFFFFF))
        if stream.tcc_off >= 0:
            _U16.pack_into(head, stream.tcc_off, self.tcc_seq)
            self.tcc_seq = (self.tcc_seq + 1) & 0xFFFF
        return bytes(head) + payload

    def _retransmit(self, stream: _SendStream, rtx: _SendStream | None,
                    seqs: tuple[int, ...] | list[int], now: float) -> list[bytes]:
        """``stream``'s packets still in its send cache: on ``rtx`` (RFC 4588) if given,
        else as they were."""
        out = []
        for seq in seqs:
            self.nacked += 1
            entry = stream.cache[seq & (_CACHE_SIZE - 1)]
            if entry is None or entry[0] != seq:
                self.retransmit_misses += 1
                continue
            _, ts, marker, payload = entry
            self.retransmitted += 1
            if rtx is not None:
                rtx_seq = rtx.seq
                rtx.seq = (rtx_seq + 1) & 0xFFFF
                rtx.packets += 1
                rtx.octets += len(payload) + 2
                out.append(self._build(rtx, rtx_seq, ts, marker, _U16.pack(seq) + payload, now))
            else:
                out.append(self._build(stream, seq, ts, marker, payload, now))
        return out

    def _sender_reports(self, streams: Sequence[_SendStream], cname_ssrc: int,
                        now: float) -> bytes:
        """A compound RTCP packet: an SR per stream of ``streams`` that has sent, and an
        SDES with our cname."""
        parts = []
        ntp = ntp_from_unix(now + self.wall_offset_s)
        for stream in streams:
            if not stream.packets:
                continue
            rtp_ts = stream.ts_base + round((now - self.start) * stream.clock_rate)
            parts.append(build_sr(stream.ssrc, ntp, rtp_ts, stream.packets, stream.octets))
        if not parts:
            return b""
        parts.append(build_sdes_cname(cname_ssrc, self.cname))
        return b"".join(parts)


class PublisherCore(_PublisherBase):
    """One publisher's audio + video RTP, paced by :meth:`due` (see the module docstring).

    ``start`` and every ``now`` are monotonic seconds; ``wall_offset_s`` turns them into
    Unix time for the NTP field of sender reports.
    """

    def __init__(
        self,
        media: EncodedMedia,
        *,
        audio_ssrc: int,
        video_ssrc: int,
        rtx_ssrc: int,
        start: float,
        wall_offset_s: float,
        initial: tuple[int, int, int, int, int, int],
        audio_mid: str = "0",
        video_mid: str = "1",
        audio_pt: int = 111,
        video_pt: int = 96,
        rtx_pt: int = 97,
        ext_ids: Mapping[str, int] = PUBLISHER_EXTENSIONS,
        max_payload: int = 1200,
        cname: str = "bench",
    ) -> None:
        """``initial``: random (audio seq, audio ts, video seq, video ts, rtx seq,
        transport seq) starting values."""
        a_seq, a_ts, v_seq, v_ts, rtx_seq, tcc_seq = initial
        super().__init__(
            media.audio_packets, media.fps,
            _SendStream(audio_ssrc, audio_pt, 48000, a_seq, a_ts, audio_mid, ext_ids),
            start=start, wall_offset_s=wall_offset_s, tcc_seq=tcc_seq, cname=cname)
        self.media = media
        self.video = _SendStream(video_ssrc, video_pt, 90000, v_seq, v_ts, video_mid, ext_ids)
        self.rtx = _SendStream(rtx_ssrc, rtx_pt, 90000, rtx_seq, 0, video_mid, ext_ids)
        self._loop_pos = 0  # position in the video loop (a keyframe request resets it)
        self._picture_id = v_seq & 0x7FFF
        self._frames = [(packetize_vp8(data, max_payload), key) for data, key in media.video_frames]
        self.keyframes_sent = 0
        self.keyframe_requests = 0

    def _video_frame(self, now: float) -> list[bytes]:
        chunks, key = self._frames[self._loop_pos]
        self._loop_pos = (self._loop_pos + 1) % len(self._frames)
        ts = self.video.ts_base + round(self._video_index * 90000 * self._frame_s)
        self._video_index += 1
        if key:
            self.keyframes_sent += 1
        pid = self._picture_id
        self._picture_id = (pid + 1) & 0x7FFF
        last = len(chunks) - 1
        out = []
        for i, chunk in enumerate(chunks):
            desc = bytearray(VP8_DESCRIPTOR_SIZE)
            write_vp8_descriptor(desc, 0, i == 0, pid)
            out.append(self._emit(self.video, ts, i == last, bytes(desc) + chunk, now))
        return out

    # -- feedback from the SFU --------------------------------------------------------------

    def request_keyframe(self) -> None:
        """PLI or FIR: the next frame sent is the loop's keyframe."""
        self.keyframe_requests += 1
        self._loop_pos = 0

    def nack(self, media_ssrc: int, seqs: tuple[int, ...] | list[int], now: float) -> list[bytes]:
        """Retransmissions for NACKed sequence numbers still in the send cache."""
        if media_ssrc == self.video.ssrc:
            return self._retransmit(self.video, self.rtx if self.rtx_enabled else None,
                                    seqs, now)
        if media_ssrc == self.audio.ssrc:
            return self._retransmit(self.audio, None, seqs, now)
        return []

    def on_rtcp(self, packets: Sequence[object], now: float) -> list[bytes]:
        """Handle parsed RTCP from the SFU; returns retransmissions to send."""
        out: list[bytes] = []
        for pkt in packets:
            if isinstance(pkt, Nack):
                out += self.nack(pkt.media_ssrc, pkt.lost_seqs, now)
            elif isinstance(pkt, Pli):
                if pkt.media_ssrc == self.video.ssrc:
                    self.request_keyframe()
            elif isinstance(pkt, Fir):
                if any(e.ssrc == self.video.ssrc for e in pkt.entries):
                    self.request_keyframe()
        return out

    def sender_reports(self, now: float) -> bytes:
        """A compound RTCP packet: an SR per media stream that has sent, and an SDES."""
        return self._sender_reports((self.audio, self.video), self.video.ssrc, now)

    @property
    def video_packets(self) -> int:
        """Video packets sent, retransmissions not included."""
        return self.video.packets

    @property
    def packets_sent(self) -> int:
        return self.audio.packets + self.video.packets + self.rtx.packets


class AudioPublisherCore(_PublisherBase):
    """An audio-only publisher: the Opus loop every 20 ms, nothing else (``sfu bench
    audio``). Same header extensions, sender reports and counters as :class:`PublisherCore`;
    ``start`` and every ``now`` are monotonic seconds."""

    def __init__(self, media: EncodedMedia, *, audio_ssrc: int, start: float,
                 wall_offset_s: float, initial: tuple[int, int, int], audio_mid: str = "0",
                 audio_pt: int = 111, ext_ids: Mapping[str, int] = PUBLISHER_EXTENSIONS,
                 cname: str = "bench") -> None:
        """``initial``: random (seq, ts, transport seq) starting values."""
        seq, ts, tcc_seq = initial
        super().__init__(
            media.audio_packets, media.fps,
            _SendStream(audio_ssrc, audio_pt, 48000, seq, ts, audio_mid, ext_ids),
            start=start, wall_offset_s=wall_offset_s, tcc_seq=tcc_seq, cname=cname)
        self.keyframes_sent = 0
        self.keyframe_requests = 0
        self.video_packets = 0

    @property
    def next_at(self) -> float:
        return self.start + self._audio_index * 0.02

    def due(self, now: float) -> list[bytes]:
        """Every audio packet scheduled at or before ``now``."""
        start = self.start
        if now - self.next_at > MAX_LATE_S:
            self.late_skips += 1
            self._audio_index = int((now - start) / 0.02)
        out: list[bytes] = []
        while (at := start + self._audio_index * 0.02) <= now:
            out.append(self._audio_packet(now))
            if self.recording:
                self.send_lag_ms.append((now - at) * 1000.0)
        return out

    def on_rtcp(self, packets: Sequence[object], now: float) -> list[bytes]:
        """NACKs for the audio SSRC (none when the answer has no ``nack`` for Opus)."""
        out: list[bytes] = []
        for pkt in packets:
            if isinstance(pkt, Nack) and pkt.media_ssrc == self.audio.ssrc:
                out += self._retransmit(self.audio, None, pkt.lost_seqs, now)
        return out

    def sender_reports(self, now: float) -> bytes:
        return self._sender_reports((self.audio,), self.audio.ssrc, now)

    @property
    def packets_sent(self) -> int:
        return self.audio.packets


# -- simulcast --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimulcastSource:
    """One simulcast layer to send: its rid, its loop, its SSRCs and (random) starting
    values of its sequence numbers, RTP timestamps and VP8 picture ids."""

    rid: str
    media: EncodedMedia
    ssrc: int
    rtx_ssrc: int
    seq: int = 0
    timestamp: int = 0
    rtx_seq: int = 0
    picture_id: int = 0
    tl0picidx: int = 0


class SimulcastLayer:
    """One layer's sending state and counters (see :class:`SimulcastPublisherCore`).

    Counters: ``keyframes_sent``, ``plis`` and ``firs`` received for its SSRC, and
    ``held_requests``, the PLIs/FIRs that arrived while its keyframes were held.
    """

    __slots__ = ("rid", "media", "video", "rtx", "frames", "loop_pos", "picture_id",
                 "tl0picidx", "hold_until", "keyframe_pending", "keyframes_sent", "plis",
                 "firs", "held_requests")

    def __init__(self, source: SimulcastSource, video: _SendStream, rtx: _SendStream,
                 frames: list[tuple[list[bytes], bool]]) -> None:
        self.rid = source.rid
        self.media = source.media
        self.video = video
        self.rtx = rtx
        self.frames = frames
        self.loop_pos = 0
        self.picture_id = source.picture_id & 0x7FFF
        self.tl0picidx = source.tl0picidx & 0xFF
        self.hold_until = float("-inf")
        self.keyframe_pending = False
        self.keyframes_sent = 0
        self.plis = 0
        self.firs = 0
        self.held_requests = 0

    @property
    def keyframe_requests(self) -> int:
        return self.plis + self.firs

    def held(self, now: float) -> bool:
        """Whether keyframes are held at ``now``."""
        return now < self.hold_until


class SimulcastPublisherCore(_PublisherBase):
    """One publisher's audio + RID-simulcast video, as Chromium sends it: per layer a
    media SSRC and an RTX SSRC, every packet with the mid and rtp-stream-id (RTX:
    repaired-rtp-stream-id) header extensions besides abs-send-time and transport-cc, in
    the one-byte form.

    Every layer sends a frame at each video tick (lowest layer first) with its own
    sequence numbers, RTP timestamps, VP8 picture ids and TL0PICIDX (with
    ``layered_descriptors``; TID is always 0). A PLI or FIR on a layer's SSRC makes that
    layer's next frame its loop's keyframe; NACKs are answered on that layer's RTX SSRC
    (when ``rtx_enabled``). :meth:`hold_keyframes` makes a layer ignore keyframe requests
    and skip its loop's keyframe (it wraps to the frame after it) until a given time; a
    request that arrived meanwhile is honoured by the first frame after that.

    All sources must have the same frame rate. Audio comes from ``audio_media`` (default:
    the last source's loop). ``start`` and every ``now`` are monotonic seconds.
    """

    def __init__(
        self,
        sources: Sequence[SimulcastSource],
        *,
        audio_ssrc: int,
        start: float,
        wall_offset_s: float,
        audio_initial: tuple[int, int] = (0, 0),
        tcc_seq: int = 0,
        audio_media: EncodedMedia | None = None,
        audio_mid: str = "0",
        video_mid: str = "1",
        audio_pt: int = 111,
        video_pt: int = 96,
        rtx_pt: int = 97,
        ext_ids: Mapping[str, int] = SIMULCAST_EXTENSIONS,
        max_payload: int = 1200,
        cname: str = "bench",
        layered_descriptors: bool = True,
    ) -> None:
        if not sources:
            raise ValueError("simulcast needs at least one source")
        fps = sources[0].media.fps
        if any(s.media.fps != fps for s in sources):
            raise ValueError("simulcast sources must share one frame rate")
        rids = [s.rid for s in sources]
        if len(set(rids)) != len(rids):
            raise ValueError(f"duplicate rids in {rids}")
        ssrcs = [x for s in sources for x in (s.ssrc, s.rtx_ssrc)] + [audio_ssrc]
        if len(set(ssrcs)) != len(ssrcs):
            raise ValueError("SSRCs must differ")
        a_seq, a_ts = audio_initial
        media = audio_media or sources[-1].media
        super().__init__(
            media.audio_packets, fps,
            _SendStream(audio_ssrc, audio_pt, 48000, a_seq, a_ts, audio_mid, ext_ids),
            start=start, wall_offset_s=wall_offset_s, tcc_seq=tcc_seq, cname=cname)
        self._layered = layered_descriptors
        self._desc_size = VP8_LAYERED_DESCRIPTOR_SIZE if layered_descriptors \
            else VP8_DESCRIPTOR_SIZE
        self.layers: list[SimulcastLayer] = []
        for s in sources:
            video = _SendStream(s.ssrc, video_pt, 90000, s.seq, s.timestamp, video_mid,
                                ext_ids, s.rid)
            rtx = _SendStream(s.rtx_ssrc, rtx_pt, 90000, s.rtx_seq, s.timestamp, video_mid,
                              ext_ids, s.rid, repaired=True)
            frames = [(packetize_vp8(data, max_payload, self._desc_size), key)
                      for data, key in s.media.video_frames]
            self.layers.append(SimulcastLayer(s, video, rtx, frames))
        self._by_rid = {layer.rid: layer for layer in self.layers}
        self._by_ssrc = {layer.video.ssrc: layer for layer in self.layers}

    def layer(self, rid: str) -> SimulcastLayer:
        """The layer sent with ``rid``; raises KeyError."""
        return self._by_rid[rid]

    def _video_frame(self, now: float) -> list[bytes]:
        index = self._video_index
        self._video_index += 1
        out: list[bytes] = []
        for layer in self.layers:
            out += self._layer_frame(layer, index, now)
        return out

    def _layer_frame(self, layer: SimulcastLayer, index: int, now: float) -> list[bytes]:
        held = layer.held(now)
        if layer.keyframe_pending and not held:
            layer.keyframe_pending = False
            layer.loop_pos = 0
        frames = layer.frames
        pos = layer.loop_pos
        chunks, key = frames[pos]
        if held:
            for _ in range(len(frames) - 1):
                if not key:
                    break
                pos = (pos + 1) % len(frames)
                chunks, key = frames[pos]
        layer.loop_pos = (pos + 1) % len(frames)
        ts = layer.video.ts_base + round(index * 90000 * self._frame_s)
        if key:
            layer.keyframes_sent += 1
        pid = layer.picture_id
        layer.picture_id = (pid + 1) & 0x7FFF
        tl0 = -1
        if self._layered:
            tl0 = layer.tl0picidx
            layer.tl0picidx = (tl0 + 1) & 0xFF  # every frame is TID 0
        last = len(chunks) - 1
        out = []
        for i, chunk in enumerate(chunks):
            desc = bytearray(self._desc_size)
            write_vp8_descriptor(desc, 0, i == 0, pid, tl0)
            out.append(self._emit(layer.video, ts, i == last, bytes(desc) + chunk, now))
        return out

    # -- feedback from the SFU --------------------------------------------------------------

    def hold_keyframes(self, rid: str, until: float) -> None:
        """Until ``until`` (monotonic seconds), layer ``rid`` sends no keyframe: requests
        are counted (``held_requests``) but wait, and the loop skips its keyframe."""
        self._by_rid[rid].hold_until = until

    def request_keyframe(self, rid: str, now: float) -> None:
        """A PLI or FIR for layer ``rid``: its next frame is its loop's keyframe, unless
        keyframes are held; then the first frame after the hold."""
        layer = self._by_rid[rid]
        if layer.held(now):
            layer.held_requests += 1
        layer.keyframe_pending = True

    def nack(self, media_ssrc: int, seqs: tuple[int, ...] | list[int], now: float) -> list[bytes]:
        """Retransmissions for NACKed sequence numbers still in the send cache (on the
        layer's RTX SSRC when ``rtx_enabled``)."""
        layer = self._by_ssrc.get(media_ssrc)
        if layer is not None:
            return self._retransmit(layer.video, layer.rtx if self.rtx_enabled else None,
                                    seqs, now)
        if media_ssrc == self.audio.ssrc:
            return self._retransmit(self.audio, None, seqs, now)
        return []

    def on_rtcp(self, packets: Sequence[object], now: float) -> list[bytes]:
        """Handle parsed RTCP from the SFU; returns retransmissions to send."""
        out: list[bytes] = []
        for pkt in packets:
            if isinstance(pkt, Nack):
                out += self.nack(pkt.media_ssrc, pkt.lost_seqs, now)
            elif isinstance(pkt, Pli):
                layer = self._by_ssrc.get(pkt.media_ssrc)
                if layer is not None:
                    layer.plis += 1
                    self.request_keyframe(layer.rid, now)
            elif isinstance(pkt, Fir):
                for entry in pkt.entries:
                    layer = self._by_ssrc.get(entry.ssrc)
                    if layer is not None:
                        layer.firs += 1
                        self.request_keyframe(layer.rid, now)
        return out

    def sender_reports(self, now: float) -> bytes:
        """A compound RTCP packet: an SR per SSRC that has sent (audio, each layer's media
        and RTX), and an SDES."""
        streams = [self.audio]
        for layer in self.layers:
            streams += (layer.video, layer.rtx)
        return self._sender_reports(streams, self.layers[0].video.ssrc, now)

    @property
    def keyframes_sent(self) -> int:
        return sum(layer.keyframes_sent for layer in self.layers)

    @property
    def keyframe_requests(self) -> int:
        return sum(layer.keyframe_requests for layer in self.layers)

    @property
    def video_packets(self) -> int:
        """Video packets sent on every layer, retransmissions not included."""
        return sum(layer.video.packets for layer in self.layers)

    @property
    def packets_sent(self) -> int:
        return self.audio.packets + sum(layer.video.packets + layer.rtx.packets
                                        for layer in self.layers)


# -- receiving -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a subscriber offer says about one forwarded SSRC."""

    kind: str
    clock_rate: int
    nack: bool
    rtx_ssrc: int | None = None
    pli: bool = False


class DecodedFrame(NamedTuple):
    """One decoded video frame, as :class:`ReceiverCore` records it with ``record_frames``:
    its RTP timestamp, decoded size, whether it was a keyframe, when its last packet
    arrived (monotonic seconds), its VP8 picture id (-1 if none), its first and last
    extended RTP sequence numbers, and the CRC-32 of its VP8 data (descriptors removed:
    the bytes the encoder produced, to tell which source frame it was)."""

    rtp_timestamp: int
    width: int
    height: int
    keyframe: bool
    arrival: float
    picture_id: int
    first_seq: int
    last_seq: int
    crc32: int


@dataclass(slots=True)
class RecvStream:
    """Counters of one received media SSRC (extended sequence numbers)."""

    ssrc: int
    info: StreamInfo
    highest: int = -1
    base: int = -1
    received: int = 0  # every packet on this SSRC or its RTX, duplicates included
    unique: int = 0  # distinct sequence numbers received, originals or retransmitted
    originals: int = 0  # distinct sequence numbers received as originals
    rtx: int = 0
    padding: int = 0
    octets: int = 0
    sr_unix: float = 0.0
    sr_rtp: int = 0
    stats: ReceiveStats = field(default_factory=ReceiveStats)
    nacker: NackGenerator | None = None
    seen: list[int] = field(default_factory=lambda: [-1] * _SEEN_SIZE)


class ReceiverCore:
    """One subscriber transport's receiving side (see the module docstring).

    ``on_rtp(data, now)``: ``now`` is monotonic seconds; delays are measured as
    ``now + wall_offset_s`` minus the sender's NTP time of the packet's RTP timestamp.
    """

    def __init__(self, sender_ssrc: int, *, wall_offset_s: float,
                 twcc_interval_s: float = 0.1, rr_interval_s: float = 1.0,
                 decode: bool = False, delay_every: int = 1,
                 record_frames: bool = False) -> None:
        self.sender_ssrc = sender_ssrc
        self.wall_offset_s = wall_offset_s
        self.twcc_interval_s = twcc_interval_s
        self.rr_interval_s = rr_interval_s
        self.infos: dict[int, StreamInfo] = {}
        self.rtx_of: dict[int, int] = {}  # rtx ssrc -> media ssrc
        self.streams: dict[int, RecvStream] = {}
        self.twcc = TwccRecorder()
        self.tcc_id = 0
        self.abs_id = 0
        self.packets = 0
        self.octets = 0
        self.unknown_ssrc = 0
        self.malformed = 0
        #: RTCP sent, by kind; ``rr_blocks``: report blocks in those RRs (``_after_sr``:
        #: the ones answering a sender report, from which the server measures RTT)
        self.sent = {"transport_cc": 0, "rr": 0, "nack": 0, "pli": 0, "rr_blocks": 0,
                     "rr_blocks_after_sr": 0}
        self.srs = 0
        self.recording = False
        self.delays_ms: array[float] = array("d")
        #: Time since the last hop stamped abs-send-time, read as CLOCK_MONOTONIC (what
        #: sfu's forwarder stamps; from a server with another epoch the values are noise).
        self.hop_delays_ms: array[float] = array("d")
        self._delay_every = max(1, delay_every)
        self._delay_tick = 0
        self._next_twcc = 0.0
        self._next_rr = 0.0
        self._last_pli = -1e9
        self._given_up = 0
        #: With ``decode``: the one video SSRC that is decoded (the first to arrive; a
        #: meeting subscriber receives several).
        self.decode_ssrc: int | None = None
        self.assembler = Vp8FrameAssembler() if decode else None
        self.checker = Vp8Checker() if decode else None
        #: Whether to append every decoded video frame to ``decoded_frames`` (with ``decode``).
        self.record_frames = record_frames
        self.decoded_frames: list[DecodedFrame] = []

    def set_streams(self, infos: Mapping[int, StreamInfo], tcc_id: int,
                    abs_id: int = 0) -> None:
        """The SSRCs the latest subscriber offer announces, and the transport-cc and
        abs-send-time extension ids."""
        self.infos = dict(infos)
        self.rtx_of = {i.rtx_ssrc: ssrc for ssrc, i in infos.items() if i.rtx_ssrc is not None}
        self.tcc_id = tcc_id
        self.abs_id = abs_id

    def _stream(self, ssrc: int) -> RecvStream | None:
        info = self.infos.get(ssrc)
        if info is None:
            return None
        stream = RecvStream(ssrc, info)
        if info.nack:
            stream.nacker = NackGenerator()
        self.streams[ssrc] = stream
        return stream

    def on_rtp(self, data: bytes, now: float) -> None:
        try:
            view = parse_rtp(data)
        except ValueError:
            self.malformed += 1
            return
        self.packets += 1
        self.octets += len(data)
        if self.tcc_id:
            loc = view.find_extension(data, self.tcc_id)
            if loc is not None and loc[1] >= 2:
                off = loc[0]
                self.twcc.on_packet((data[off] << 8) | data[off + 1], int(now * 1_000_000))
        ssrc = view.ssrc
        stream = self.streams.get(ssrc) or self._stream(ssrc)
        seq = view.seq
        payload_offset = view.payload_offset
        is_rtx = False
        if stream is None:
            media_ssrc = self.rtx_of.get(ssrc)
            stream = self.streams.get(media_ssrc) if media_ssrc is not None else None
            if stream is None:
                self.unknown_ssrc += 1
                return
            stream.received += 1
            stream.rtx += 1
            if view.payload_size < 2:
                stream.padding += 1  # a bandwidth probe
                return
            seq = (data[payload_offset] << 8) | data[payload_offset + 1]
            payload_offset += 2
            is_rtx = True
        else:
            stream.received += 1
            if view.payload_size == 0:
                stream.padding += 1
                return
        stream.octets += len(data)
        highest = stream.highest
        if highest < 0:
            ext = stream.base = stream.highest = seq
        else:
            delta = (seq - highest) & 0xFFFF
            ext = highest + delta - 0x10000 if delta >= 0x8000 else highest + delta
            if ext > highest:
                stream.highest = ext
        seen = stream.seen
        slot = ext & (_SEEN_SIZE - 1)
        if seen[slot] != ext:
            seen[slot] = ext
            stream.unique += 1
            if not is_rtx:
                stream.originals += 1
        if stream.nacker is not None:
            stream.nacker.on_packet(ext, now)
        info = stream.info
        ts = view.timestamp
        if not is_rtx:
            stream.stats.on_packet(ext, ts, now, info.clock_rate)
            if self.recording and stream.sr_unix:
                self._delay_tick += 1
                if self._delay_tick >= self._delay_every:
                    self._delay_tick = 0
                    sent = stream.sr_unix + (
                        ((ts - stream.sr_rtp + 0x80000000) & 0xFFFFFFFF) - 0x80000000
                    ) / info.clock_rate
                    self.delays_ms.append((now + self.wall_offset_s - sent) * 1000.0)
                    if self.abs_id:
                        loc = view.find_extension(data, self.abs_id)
                        if loc is not None and loc[1] == 3:
                            off = loc[0]
                            stamp = (data[off] << 16) | (data[off + 1] << 8) | data[off + 2]
                            self.hop_delays_ms.append(
                                ((int(now * 262144) - stamp) & 0xFFFFFF) * 1000.0 / 262144)
        assembler = self.assembler
        checker = self.checker
        if assembler is not None and info.kind == "video" and checker is not None and (
                self.decode_ssrc == stream.ssrc or self.decode_ssrc is None):
            self.decode_ssrc = stream.ssrc
            end = payload_offset + view.payload_size - (2 if is_rtx else 0)
            for frame in assembler.push_frames(ext, ts, view.marker, data[payload_offset:end],
                                               now):
                sizes = checker.decode(frame.data)
                if self.record_frames and sizes:
                    crc = zlib.crc32(frame.data)
                    self.decoded_frames += [
                        DecodedFrame(frame.timestamp, width, height, frame.keyframe, now,
                                     frame.picture_id, frame.first_seq, frame.last_seq, crc)
                        for width, height in sizes]

    def on_rtcp(self, data: bytes, now: float) -> None:
        try:
            packets = parse_rtcp(data)
        except ValueError:
            self.malformed += 1
            return
        for pkt in packets:
            if isinstance(pkt, SenderReport):
                stream = self.streams.get(pkt.ssrc)
                if stream is not None:
                    self.srs += 1
                    stream.stats.on_sender_report(pkt.ntp_timestamp, now)
                    stream.sr_unix = unix_from_ntp(pkt.ntp_timestamp)
                    stream.sr_rtp = pkt.rtp_timestamp

    def due(self, now: float) -> list[bytes]:
        """RTCP to send now: NACKs (and a PLI when a lost video packet is given up),
        transport-cc feedback every ``twcc_interval_s``, receiver reports every
        ``rr_interval_s``."""
        out: list[bytes] = []
        given_up = 0
        pli_ssrc = 0
        for ssrc, stream in self.streams.items():
            nacker = stream.nacker
            if nacker is None:
                continue
            seqs = nacker.due(now, 0.02)
            if seqs:
                out.append(build_nack(self.sender_ssrc, ssrc, seqs))
                self.sent["nack"] += 1
            given_up += nacker.given_up
            if stream.info.pli:
                pli_ssrc = ssrc
        blocked = self.assembler.blocked_since if self.assembler is not None else None
        stuck = blocked is not None and now - blocked >= 0.5
        if (given_up > self._given_up or stuck) and pli_ssrc and now - self._last_pli >= 1.0:
            self._last_pli = now
            out.append(build_pli(self.sender_ssrc, pli_ssrc))
            self.sent["pli"] += 1
        self._given_up = given_up
        if self.tcc_id and now >= self._next_twcc:
            self._next_twcc = now + self.twcc_interval_s
            media_ssrc = next(iter(self.streams), 0)
            feedback = self.twcc.feedback(int(now * 1_000_000), self.sender_ssrc, media_ssrc)
            self.sent["transport_cc"] += len(feedback)
            out += feedback
        if now >= self._next_rr:
            self._next_rr = now + self.rr_interval_s
            blocks = [s.stats.report_block(ssrc, now) for ssrc, s in self.streams.items()
                      if s.stats.received]
            for i in range(0, len(blocks), 31):
                out.append(build_rr(self.sender_ssrc, blocks[i:i + 31]))
                self.sent["rr"] += 1
            self.sent["rr_blocks"] += len(blocks)
            self.sent["rr_blocks_after_sr"] += sum(1 for b in blocks if b.lsr)
        return out

    def counters(self) -> dict[str, int]:
        """Sums over streams, for window deltas (``expected``/``unique`` also per kind, as
        ``<kind>_expected`` / ``<kind>_unique``)."""
        totals = {"received": 0, "unique": 0, "originals": 0, "expected": 0, "rtx": 0,
                  "padding": 0, "octets": 0, "audio_expected": 0, "audio_unique": 0,
                  "video_expected": 0, "video_unique": 0}
        for s in self.streams.values():
            totals["received"] += s.received
            totals["unique"] += s.unique
            totals["originals"] += s.originals
            totals["rtx"] += s.rtx
            totals["padding"] += s.padding
            totals["octets"] += s.octets
            if s.base >= 0:
                expected = s.highest - s.base + 1
                totals["expected"] += expected
                totals[f"{s.info.kind}_expected"] += expected
                totals[f"{s.info.kind}_unique"] += s.unique
        return totals


def classify_feedback(packets: list[object], counts: dict[str, int]) -> None:
    """Count RTCP a publisher receives, by kind."""
    for pkt in packets:
        name = {TransportCc: "transport_cc", ReceiverReport: "rr", Remb: "remb", Nack: "nack",
                Pli: "pli", Fir: "fir", SenderReport: "sr"}.get(type(pkt), "other")
        counts[name] = counts.get(name, 0) + 1
        if isinstance(pkt, ReceiverReport):
            counts["rr_blocks"] = counts.get("rr_blocks", 0) + len(pkt.reports)
