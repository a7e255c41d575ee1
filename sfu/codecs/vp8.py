"""VP8 RTP payload descriptor (RFC 7741 4.2) and payload header (RFC 7741 4.3).

::

     0 1 2 3 4 5 6 7
    +-+-+-+-+-+-+-+-+
    |X|R|N|S|R| PID | (required)
    +-+-+-+-+-+-+-+-+
 X: |I|L|T|K| RSV   | (optional)
    +-+-+-+-+-+-+-+-+
 I: |M| PictureID   | (optional, 7 or 15 bits)
    +-+-+-+-+-+-+-+-+
    |   PictureID   | (only when M)
    +-+-+-+-+-+-+-+-+
 L: |   TL0PICIDX   | (optional)
    +-+-+-+-+-+-+-+-+
T/K:|TID|Y| KEYIDX  | (optional, present when T or K)
    +-+-+-+-+-+-+-+-+

:func:`parse_descriptor` reads the descriptor (and, at the start of a keyframe, the frame
size from the VP8 keyframe header) without copying; :func:`rewrite_descriptor` writes a
descriptor with a 15-bit picture id and a new TL0PICIDX and copies the rest untouched.
:class:`Vp8Munger` chooses those values so that a subscriber sees contiguous picture ids
across simulcast layer switches and republishes.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from sfu.rtp.header import Buffer

_new_tuple = tuple.__new__
_PID15 = struct.Struct("!BBBB")  # b0, X byte, picture id (M bit set), 15 bits
_PID15_TL0 = struct.Struct("!BBBBB")  # ... plus TL0PICIDX

PICTURE_ID_MOD = 1 << 15
TL0PICIDX_MOD = 1 << 8


class Vp8Descriptor(NamedTuple):
    """One packet's VP8 payload descriptor.

    ``header_size`` is the descriptor length in bytes (the VP8 payload starts there).
    Absent optional fields are -1 (``picture_id_bits`` 0). ``is_keyframe`` is true for the
    first packet of a keyframe (S=1, PID=0 and the payload header's P bit 0); only then
    are ``width``/``height`` (pixels, scaling bits removed) non-zero.
    """

    header_size: int
    non_reference: bool
    start_of_partition: bool
    partition_index: int
    picture_id: int
    picture_id_bits: int
    tl0picidx: int
    tid: int
    layer_sync: bool
    keyidx: int
    is_keyframe: bool
    width: int
    height: int

    @property
    def starts_frame(self) -> bool:
        """First packet of a frame: start of partition 0."""
        return self.start_of_partition and self.partition_index == 0


def parse_descriptor(payload: Buffer, start: int = 0, end: int = -1) -> Vp8Descriptor:
    """Parse the descriptor at ``payload[start:end]`` (``end`` -1: the end of ``payload``).

    ``start``/``end`` let the caller pass a whole RTP packet with the
    :class:`~sfu.rtp.header.RtpView` payload bounds instead of slicing it;
    ``header_size`` is relative to ``start``. Raises :class:`ValueError` when the
    descriptor is truncated, no VP8 payload follows it, or a keyframe's first packet is
    too short for the 10-byte keyframe header.
    """
    n = len(payload) if end < 0 else end
    if n <= start:
        raise ValueError("VP8 payload is empty")
    b0 = payload[start]
    pos = start + 1
    picture_id = tl0picidx = tid = keyidx = -1
    bits = 0
    layer_sync = False
    if b0 & 0x80:
        if pos >= n:
            raise ValueError("VP8 descriptor truncated: the X bit is set but the payload ends")
        x = payload[pos]
        pos += 1
        if x & 0x80:
            if pos >= n:
                raise ValueError("VP8 descriptor truncated: the I bit is set but the payload ends")
            b = payload[pos]
            if b & 0x80:
                if pos + 1 >= n:
                    raise ValueError(
                        "VP8 descriptor truncated: 15-bit picture id needs 2 bytes, payload"
                        " has 1"
                    )
                picture_id = ((b & 0x7F) << 8) | payload[pos + 1]
                bits = 15
                pos += 2
            else:
                picture_id = b
                bits = 7
                pos += 1
        if x & 0x40:
            if pos >= n:
                raise ValueError("VP8 descriptor truncated: the L bit is set but the payload ends")
            tl0picidx = payload[pos]
            pos += 1
        if x & 0x30:
            if pos >= n:
                raise ValueError(
                    "VP8 descriptor truncated: the T or K bit is set but the payload ends"
                )
            b = payload[pos]
            pos += 1
            if x & 0x20:
                tid = b >> 6
                layer_sync = b & 0x20 != 0
            if x & 0x10:
                keyidx = b & 0x1F
    if pos >= n:
        raise ValueError(f"VP8 payload has no data after the {pos - start}-byte descriptor")
    if b0 & 0x17 == 0x10 and not payload[pos] & 0x01:  # S=1, PID=0, P=0: keyframe
        if n - pos < 10:
            raise ValueError(
                f"VP8 keyframe header truncated: {n - pos} bytes, the frame tag and size need 10"
            )
        return _new_tuple(
            Vp8Descriptor,
            (pos - start, b0 & 0x20 != 0, True, 0, picture_id, bits, tl0picidx, tid,
             layer_sync, keyidx, True,
             (payload[pos + 6] | (payload[pos + 7] << 8)) & 0x3FFF,
             (payload[pos + 8] | (payload[pos + 9] << 8)) & 0x3FFF),
        )
    return _new_tuple(
        Vp8Descriptor,
        (pos - start, b0 & 0x20 != 0, b0 & 0x10 != 0, b0 & 0x07, picture_id, bits, tl0picidx,
         tid, layer_sync, keyidx, False, 0, 0),
    )


def descriptor_head(payload: Buffer, start: int, desc: Vp8Descriptor, picture_id: int,
                    tl0picidx: int) -> tuple[bytes, int]:
    """The new descriptor up to the T/K byte, and how many bytes of the payload at
    ``start`` it replaces (the T/K byte and everything after it are kept as they are)."""
    b0 = payload[start]
    x = payload[start + 1] if b0 & 0x80 else 0
    b0 = (b0 & 0x37) | 0x80  # X set; N, S, PID kept; reserved bits cleared
    pid_hi = 0x80 | ((picture_id >> 8) & 0x7F)
    pid_lo = picture_id & 0xFF
    old = desc.header_size - 1 if x & 0x30 else desc.header_size  # the T/K byte stays
    if x & 0x40:
        tl0 = tl0picidx & 0xFF if tl0picidx >= 0 else desc.tl0picidx
        return _PID15_TL0.pack(b0, 0x80 | (x & 0x70), pid_hi, pid_lo, tl0), old
    return _PID15.pack(b0, 0x80 | (x & 0x70), pid_hi, pid_lo), old


def rewrite_descriptor(
    payload: Buffer,
    *,
    picture_id: int,
    tl0picidx: int = -1,
    start: int = 0,
    desc: Vp8Descriptor | None = None,
) -> bytes:
    """A copy of ``payload`` whose descriptor carries ``picture_id`` as 15 bits (M set).

    The picture id is written even when the input had a 7-bit one or none. TL0PICIDX is
    replaced by ``tl0picidx`` when the input has one (and ``tl0picidx`` >= 0); it is not
    added when absent. N, S, PID and the T/K byte are copied; reserved bits are cleared.
    Values are masked (15 and 8 bits).

    With ``start`` > 0, ``payload`` is a whole RTP packet whose payload starts at
    ``start``: the bytes before it (the RTP header) and everything after the descriptor
    (VP8 data and RTP padding) are copied untouched, so the result is the rewritten packet.
    ``desc`` skips re-parsing when the caller already has the descriptor of this payload.
    """
    if desc is None:
        desc = parse_descriptor(payload, start)
    head, old = descriptor_head(payload, start, desc, picture_id, tl0picidx)
    if start:
        return b"".join((payload[:start], head, payload[start + old :]))
    return b"".join((head, payload[old:]))


def rewrite_descriptor_in_place(
    buf: bytearray,
    *,
    picture_id: int,
    tl0picidx: int = -1,
    start: int = 0,
    desc: Vp8Descriptor | None = None,
) -> None:
    """Like :func:`rewrite_descriptor`, changing ``buf`` itself (typically a whole packet
    copied once for :func:`~sfu.rtp.header.rewrite_header`).

    A descriptor that already has a 15-bit picture id is overwritten in place; otherwise
    ``buf`` grows by 1 to 4 bytes (the rest moves).
    """
    if desc is None:
        desc = parse_descriptor(buf, start)
    head, old = descriptor_head(buf, start, desc, picture_id, tl0picidx)
    buf[start : start + old] = head  # same size (15-bit input): nothing moves


class Vp8Munger:
    """Picture id and TL0PICIDX for one down-track, continuous across source switches.

    Call :meth:`on_packet` for every forwarded packet, with ``switching=True`` for the
    first packet forwarded from a new source (new simulcast layer, republish). Within one
    source the output follows the source's numbering shifted by a constant offset, so
    reordered packets keep their own picture id; at a switch the next output picture id is
    the highest one forwarded + 1 (TL0PICIDX likewise). :meth:`drop` removes a whole
    dropped frame from the numbering (temporal layer filtering) when it is the next frame
    in order. Source values are unwrapped once (7-bit ids mod 128, 15-bit mod 32768); a
    source without picture ids gets one per frame (counted at S=1, PID=0). Returned values
    are wire values: picture id mod 2^15, TL0PICIDX mod 2^8 (-1 if the source has none).
    """

    __slots__ = ("_started", "_pid_bits", "_src_pid", "_frames", "_pid_offset",
                 "_last_out_pid", "_src_tl0", "_tl0_offset", "_last_out_tl0", "_tl0_started")

    def __init__(self) -> None:
        self._started = False
        self._pid_bits = 0
        self._src_pid = 0  # highest extended source picture id of the current source
        self._frames = 0  # synthetic source picture id when the source has none
        self._pid_offset = 0  # extended source id - extended output id
        self._last_out_pid = -1  # highest extended output picture id
        self._tl0_started = False
        self._src_tl0 = 0
        self._tl0_offset = 0
        self._last_out_tl0 = -1

    @property
    def last_picture_id(self) -> int:
        """The highest picture id forwarded (wire value), -1 before the first packet."""
        return self._last_out_pid & 0x7FFF if self._last_out_pid >= 0 else -1

    def _source_pid(self, desc: Vp8Descriptor, switching: bool) -> int:
        """The extended source picture id of ``desc``; updates the highest seen."""
        bits = desc.picture_id_bits
        if bits == 0:
            if desc.start_of_partition and desc.partition_index == 0 and not switching:
                self._frames += 1
            return self._frames
        if switching:
            self._src_pid = desc.picture_id
            return desc.picture_id
        mask = (1 << bits) - 1
        highest = self._src_pid
        delta = (desc.picture_id - highest) & mask
        if delta > mask >> 1:
            return highest + delta - mask - 1
        ext = highest + delta
        self._src_pid = ext
        return ext

    def _source_tl0(self, tl0: int, switching: bool) -> int:
        if switching:
            self._src_tl0 = tl0
            return tl0
        highest = self._src_tl0
        delta = (tl0 - highest) & 0xFF
        if delta > 0x7F:
            return highest + delta - 0x100
        ext = highest + delta
        self._src_tl0 = ext
        return ext

    def on_packet(self, desc: Vp8Descriptor, switching: bool = False) -> tuple[int, int]:
        """``(picture_id, tl0picidx)`` to write into this forwarded packet."""
        if not self._started or desc.picture_id_bits != self._pid_bits:
            switching = True  # the first packet, or the source changed its id size
        if switching:
            self._started = True
            self._pid_bits = desc.picture_id_bits
            self._frames = 0
            src = self._source_pid(desc, True)
            nxt = self._last_out_pid + 1 if self._last_out_pid >= 0 else src
            self._pid_offset = src - nxt
        else:
            src = self._source_pid(desc, False)
        out = src - self._pid_offset
        if out > self._last_out_pid:
            self._last_out_pid = out
        tl0 = desc.tl0picidx
        if tl0 < 0:
            return out & 0x7FFF, -1
        if switching or not self._tl0_started:
            self._tl0_started = True
            src_tl0 = self._source_tl0(tl0, True)
            nxt = self._last_out_tl0 + 1 if self._last_out_tl0 >= 0 else src_tl0
            self._tl0_offset = src_tl0 - nxt
        else:
            src_tl0 = self._source_tl0(tl0, False)
        out_tl0 = src_tl0 - self._tl0_offset
        if out_tl0 > self._last_out_tl0:
            self._last_out_tl0 = out_tl0
        return out & 0x7FFF, out_tl0 & 0xFF

    def drop(self, desc: Vp8Descriptor) -> None:
        """A packet of the current source that is not forwarded (e.g. a filtered layer).

        If it belongs to the next picture in order, that picture id is removed from the
        output numbering so the next forwarded frame follows without a gap. A dropped
        packet of an older or already-counted picture changes nothing (a reordered
        dropped frame leaves a gap that can no longer be closed). TL0PICIDX is never
        shifted: dropped frames are never in the base layer.
        """
        if not self._started or desc.picture_id_bits != self._pid_bits:
            return
        if desc.picture_id_bits == 0:
            if desc.start_of_partition and desc.partition_index == 0:
                self._frames += 1
                self._pid_offset += 1
            return
        before = self._src_pid
        src = self._source_pid(desc, False)
        if src == before + 1:
            self._pid_offset += 1
