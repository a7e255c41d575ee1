"""Media for the load generators: encoded once with PyAV, then looped as RTP payloads.

:func:`load_media` encodes ``duration_s`` of synthetic video (a moving gradient with a band
of fresh noise, so the encoder has real work and reaches its target bitrate) with libvpx, and
a sine tone with libopus in 20 ms packets. The loop has one keyframe, its first frame, so
restarting the loop is how a publisher answers a keyframe request. :func:`load_simulcast_media`
encodes the same picture at several sizes (one loop per simulcast layer, lowest first).

:func:`packetize_vp8` splits a frame into RTP payload chunks and :func:`write_vp8_descriptor`
writes the RFC 7741 payload descriptor (X, I with a 15-bit picture id, S on a frame's first
packet, optionally L with a TL0PICIDX and T with TID 0). :class:`Vp8FrameAssembler` does the
reverse on the receiving side (:meth:`~Vp8FrameAssembler.push_frames` also says each frame's
RTP timestamp, sequence numbers and picture id) and :class:`Vp8Checker` decodes complete
frames to prove the forwarded stream is valid VP8.
"""

from __future__ import annotations

import functools
import math
import random
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

from sfu.codecs.vp8 import parse_descriptor

__all__ = [
    "OPUS_FRAME_SAMPLES",
    "VP8_DESCRIPTOR_SIZE",
    "VP8_LAYERED_DESCRIPTOR_SIZE",
    "AssembledFrame",
    "EncodedMedia",
    "Vp8Checker",
    "Vp8FrameAssembler",
    "load_media",
    "load_simulcast_media",
    "packetize_vp8",
    "write_vp8_descriptor",
]

OPUS_FRAME_SAMPLES = 960  # 20 ms at 48 kHz
VP8_DESCRIPTOR_SIZE = 4  # X byte, I with a 15-bit picture id
VP8_LAYERED_DESCRIPTOR_SIZE = 6  # ... plus L (TL0PICIDX) and T (TID, Y)


@dataclass(frozen=True, slots=True)
class EncodedMedia:
    """A loop of encoded media: VP8 frames ``(data, keyframe)`` at ``fps``, Opus packets
    of 20 ms each."""

    width: int
    height: int
    fps: int
    video_frames: tuple[tuple[bytes, bool], ...]
    audio_packets: tuple[bytes, ...]

    @property
    def video_bitrate_bps(self) -> int:
        seconds = len(self.video_frames) / self.fps
        return int(sum(len(f) for f, _ in self.video_frames) * 8 / seconds) if seconds else 0

    @property
    def audio_bitrate_bps(self) -> int:
        seconds = len(self.audio_packets) * 0.02
        return int(sum(len(p) for p in self.audio_packets) * 8 / seconds) if seconds else 0


@functools.lru_cache(maxsize=4)
def load_media(
    *,
    width: int = 640,
    height: int = 360,
    fps: int = 30,
    duration_s: float = 2.0,
    video_bitrate_bps: int = 600_000,
    audio_bitrate_bps: int = 32_000,
) -> EncodedMedia:
    """The encoded loop (about 0.4 s of CPU for the defaults; kept for the process)."""
    frames = encode_vp8(width=width, height=height, fps=fps,
                        frames=max(1, round(duration_s * fps)), bitrate_bps=video_bitrate_bps)
    packets = encode_opus(packets=max(1, round(duration_s / 0.02)), bitrate_bps=audio_bitrate_bps)
    return EncodedMedia(width, height, fps, tuple(frames), tuple(packets))


@functools.lru_cache(maxsize=4)
def load_simulcast_media(
    *,
    width: int = 640,
    height: int = 360,
    fps: int = 30,
    duration_s: float = 2.0,
    video_bitrate_bps: int = 600_000,
    audio_bitrate_bps: int = 32_000,
    scales: tuple[int, ...] = (4, 2, 1),
) -> tuple[EncodedMedia, ...]:
    """One loop per simulcast layer, lowest first: ``width`` x ``height`` divided by each of
    ``scales`` (default 160x90, 320x180, 640x360), all at ``fps`` with the same number of
    frames, so the layers' loops stay in step. The top layer (scale 1) gets
    ``video_bitrate_bps``, a layer scaled by ``s`` a 1/s² share (at least 30 kbps). The
    layers share one Opus loop. About 0.6 s of CPU for the defaults; kept for the process.
    """
    if not scales:
        raise ValueError("no simulcast scales")
    for scale in scales:
        if scale < 1 or width % scale or height % scale:
            raise ValueError(f"video size {width}x{height} cannot be divided by {scale}")
    frames = max(1, round(duration_s * fps))
    packets = tuple(encode_opus(packets=max(1, round(duration_s / 0.02)),
                                bitrate_bps=audio_bitrate_bps))
    layers = []
    for scale in scales:
        w, h = width // scale, height // scale
        video = encode_vp8(width=w, height=h, fps=fps, frames=frames,
                           bitrate_bps=max(30_000, video_bitrate_bps // (scale * scale)))
        layers.append(EncodedMedia(w, h, fps, tuple(video), packets))
    return tuple(layers)


def encode_vp8(*, width: int, height: int, fps: int, frames: int,
               bitrate_bps: int) -> list[tuple[bytes, bool]]:
    """``frames`` VP8 frames of a moving gradient with a band of fresh noise; only the first
    is a keyframe (the loop restarts on it)."""
    import av

    if width % 2 or height % 2:
        raise ValueError(f"video size {width}x{height} must be even")
    codec = av.CodecContext.create("libvpx", "w")
    codec.width = width
    codec.height = height
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, fps)
    codec.framerate = Fraction(fps, 1)
    codec.bit_rate = bitrate_bps
    codec.gop_size = 1 << 20  # one keyframe: the first frame
    codec.thread_count = 1  # PyAV's default (auto) is 20-50x slower here for 360p
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                     "auto-alt-ref": "0", "kf-max-dist": str(1 << 20)}
    rng = random.Random(7)
    ramp = bytes(i & 0xFF for i in range(width + height + 4 * frames + 256))
    chroma = bytes((128 + ((i // 4) % 64) - 32) & 0xFF for i in range(width + height + frames))
    band_h = max(2, height // 6)
    band_w = max(2, width * 3 // 8)
    out: list[tuple[bytes, bool]] = []
    cw, ch = width // 2, height // 2
    for t in range(frames):
        frame = av.VideoFrame(width, height, "yuv420p")
        rows = [ramp[y + 4 * t: y + 4 * t + width] for y in range(height)]
        top = (t * 5) % (height - band_h) if height > band_h else 0
        left = (t * 7) % (width - band_w) if width > band_w else 0
        for y in range(top, top + band_h):
            rows[y] = rows[y][:left] + rng.randbytes(band_w) + rows[y][left + band_w:]
        _fill_plane(frame.planes[0], rows, width)
        _fill_plane(frame.planes[1], [chroma[y + t: y + t + cw] for y in range(ch)], cw)
        _fill_plane(frame.planes[2], [chroma[2 * y + t: 2 * y + t + cw] for y in range(ch)], cw)
        frame.pts = t
        out += [(bytes(p), bool(p.is_keyframe)) for p in codec.encode(frame)]
    out += [(bytes(p), bool(p.is_keyframe)) for p in codec.encode(None)]
    if not out or not out[0][1]:
        raise RuntimeError("libvpx produced no keyframe first")
    return out


def _fill_plane(plane: object, rows: list[bytes], width: int) -> None:
    stride = plane.line_size  # type: ignore[attr-defined]
    pad = bytes(stride - width)
    data = b"".join(row + pad for row in rows) if pad else b"".join(rows)
    plane.update(data)  # type: ignore[attr-defined]


def encode_opus(*, packets: int, bitrate_bps: int, tone_hz: float = 440.0) -> list[bytes]:
    """``packets`` Opus packets of 20 ms (48 kHz stereo) of a sine tone."""
    import av

    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = 48000
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = bitrate_bps
    codec.time_base = Fraction(1, 48000)
    out: list[bytes] = []
    step = 2 * math.pi * tone_hz / 48000
    i = 0
    while len(out) < packets:
        start = i * OPUS_FRAME_SAMPLES
        samples = [int(6000 * math.sin(step * (start + k))) for k in range(OPUS_FRAME_SAMPLES)]
        frame = av.AudioFrame(format="s16", layout="stereo", samples=OPUS_FRAME_SAMPLES)
        frame.planes[0].update(struct.pack(f"<{2 * OPUS_FRAME_SAMPLES}h",
                                           *(s for s in samples for _ in (0, 1))))
        frame.sample_rate = 48000
        frame.pts = start
        out += [bytes(p) for p in codec.encode(frame)]
        i += 1
    return out[:packets]


# -- VP8 RTP payloads (RFC 7741) ----------------------------------------------------------


def packetize_vp8(frame: bytes, max_payload: int = 1200,
                  descriptor_size: int = VP8_DESCRIPTOR_SIZE) -> list[bytes]:
    """The frame split into near-equal chunks that fit ``max_payload`` with a descriptor of
    ``descriptor_size`` bytes."""
    room = max_payload - descriptor_size
    if room <= 0:
        raise ValueError(f"max_payload {max_payload} leaves no room after the descriptor")
    count = max(1, -(-len(frame) // room))
    size = -(-len(frame) // count)
    return [frame[i:i + size] for i in range(0, len(frame), size)] or [b""]


def write_vp8_descriptor(buf: bytearray, offset: int, start: bool, picture_id: int,
                         tl0picidx: int = -1) -> None:
    """X=1, S=start, PID=0; I=1 with a 15-bit picture id (M=1). With ``tl0picidx`` >= 0
    also L=1 with that TL0PICIDX (8 bits) and T=1 with TID 0, Y=1: 6 bytes
    (:data:`VP8_LAYERED_DESCRIPTOR_SIZE`) instead of 4."""
    buf[offset] = 0x90 if start else 0x80
    buf[offset + 2] = 0x80 | ((picture_id >> 8) & 0x7F)
    buf[offset + 3] = picture_id & 0xFF
    if tl0picidx < 0:
        buf[offset + 1] = 0x80
        return
    buf[offset + 1] = 0xE0  # I, L, T
    buf[offset + 4] = tl0picidx & 0xFF
    buf[offset + 5] = 0x20  # TID 0, Y (layer sync), KEYIDX unused


class AssembledFrame(NamedTuple):
    """A complete VP8 frame out of :class:`Vp8FrameAssembler`: its data (descriptors
    removed), RTP timestamp, first and last extended sequence numbers, whether it is a
    keyframe, and the picture id of its first packet (-1 if none)."""

    data: bytes
    timestamp: int
    first_seq: int
    last_seq: int
    keyframe: bool
    picture_id: int


class Vp8FrameAssembler:
    """RTP packets of one VP8 stream → complete frames in decoding order, like a receiver's
    jitter buffer: packets may arrive out of order (retransmissions), a frame is emitted
    once every packet from its first (S=1, partition 0) to its last (marker) is there, and
    only if it follows the previously emitted frame without a gap — or is a keyframe.

    When the next frame stays incomplete for ``max_wait_s`` (a packet lost for good), the
    assembler skips to the next complete keyframe it holds; until then ``blocked_since``
    says since when it waits (a receiver sends a PLI). Counters: ``frames``, ``keyframes``,
    ``incomplete`` (frames skipped), ``late`` (packets of frames already emitted or skipped).
    """

    __slots__ = ("_buf", "_next_seq", "max_wait_s", "max_packets", "blocked_since", "frames",
                 "keyframes", "incomplete", "late")

    def __init__(self, *, max_wait_s: float = 1.0, max_packets: int = 4096) -> None:
        # ext seq -> (timestamp, starts frame, marker, keyframe, VP8 data, picture id)
        self._buf: dict[int, tuple[int, bool, bool, bool, bytes, int]] = {}
        self._next_seq: int | None = None  # first packet of the next frame to emit
        self.max_wait_s = max_wait_s
        self.max_packets = max_packets
        self.blocked_since: float | None = None
        self.frames = 0
        self.keyframes = 0
        self.incomplete = 0
        self.late = 0

    def push(self, ext_seq: int, timestamp: int, marker: bool, payload: bytes,
             now: float) -> list[bytes]:
        """One packet's payload (descriptor included); the frames it completes."""
        return [f.data for f in self.push_frames(ext_seq, timestamp, marker, payload, now)]

    def push_frames(self, ext_seq: int, timestamp: int, marker: bool, payload: bytes,
                    now: float) -> list[AssembledFrame]:
        """Like :meth:`push`, with each frame's timestamp, sequence numbers and picture id."""
        if self._next_seq is not None and ext_seq < self._next_seq:
            self.late += 1
            return []
        try:
            desc = parse_descriptor(payload)
        except ValueError:
            return []
        self._buf[ext_seq] = (timestamp, desc.starts_frame, marker, desc.is_keyframe,
                              payload[desc.header_size:], desc.picture_id)
        if len(self._buf) > self.max_packets:
            self._skip_to(None)
        out: list[AssembledFrame] = []
        while True:
            frame = self._frame_at(self._next_seq) if self._next_seq is not None else None
            if frame is not None:
                out.append(frame)
                continue
            waited = self.blocked_since is not None and now - self.blocked_since >= self.max_wait_s
            if self._next_seq is None or waited:
                key = self._complete_keyframe()
                if key is not None:
                    self._skip_to(key)
                    continue
            break
        if out or not self._buf:
            self.blocked_since = None
        if self._buf and self.blocked_since is None:
            self.blocked_since = now
        return out

    def _frame_end(self, first: int) -> int | None:
        """The last seq of the complete frame starting at ``first``, else None."""
        buf = self._buf
        head = buf.get(first)
        if head is None or not head[1]:
            return None
        ts = head[0]
        seq = first
        while True:
            entry = buf.get(seq)
            if entry is None or entry[0] != ts or (seq != first and entry[1]):
                return None
            if entry[2]:
                return seq
            seq += 1

    def _frame_at(self, first: int) -> AssembledFrame | None:
        last = self._frame_end(first)
        if last is None:
            return None
        buf = self._buf
        timestamp, _, _, keyframe, _, picture_id = buf[first]
        if keyframe:
            self.keyframes += 1
        parts = [buf.pop(seq)[4] for seq in range(first, last + 1)]
        self._next_seq = last + 1
        self.frames += 1
        return AssembledFrame(b"".join(parts), timestamp, first, last, keyframe, picture_id)

    def _complete_keyframe(self) -> int | None:
        floor = self._next_seq if self._next_seq is not None else -(1 << 62)
        for seq in sorted(s for s, e in self._buf.items() if e[3] and s >= floor):
            if self._frame_end(seq) is not None:
                return seq
        return None

    def _skip_to(self, first: int | None) -> None:
        """Give up the frames before ``first`` (all of them if None)."""
        keep = {s: e for s, e in self._buf.items() if first is not None and s >= first}
        self.incomplete += len({e[0] for s, e in self._buf.items() if s not in keep})
        self._buf = keep
        self._next_seq = first
        self.blocked_since = None


class Vp8Checker:
    """Decodes complete VP8 frames with FFmpeg's decoder: ``decoded`` frames of
    ``width`` x ``height``, ``errors`` frames it refused."""

    def __init__(self) -> None:
        import av

        self._av = av
        self._codec = av.CodecContext.create("vp8", "r")
        self.decoded = 0
        self.errors = 0
        self.width = 0
        self.height = 0

    def decode(self, frame: bytes) -> list[tuple[int, int]]:
        """Decode one frame; the sizes of the pictures it produced (none if refused)."""
        sizes = []
        try:
            for decoded in self._codec.decode(self._av.Packet(frame)):
                self.decoded += 1
                self.width, self.height = decoded.width, decoded.height
                sizes.append((decoded.width, decoded.height))
        except self._av.FFmpegError:
            self.errors += 1
        return sizes
