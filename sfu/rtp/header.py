"""RTP packets as bytes: header parsing, header extensions (RFC 8285), in-place rewriting.

Nothing here decodes media, and only :func:`rebuild_extensions` copies a payload.
:func:`parse_rtp` returns an :class:`RtpView` of offsets into the caller's buffer;
rewriting works in place on a ``bytearray`` with :mod:`struct`'s ``pack_into``. Malformed input raises :class:`ValueError` with a
message naming the field and the sizes involved.

Header extension helpers take the negotiated extension id (from ``a=extmap``); the SFU
keeps the id → URI mapping, this module knows only bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import NamedTuple, TypeAlias

Buffer: TypeAlias = bytes | bytearray | memoryview

RTP_HEADER_SIZE = 12
ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE = 0x1000  # the low 4 bits ("appbits") may be non-zero on the wire

_FIXED = struct.Struct("!BBHII")
_REWRITE = struct.Struct("!BHII")
_EXT_HEADER = struct.Struct("!HH")
_U16 = struct.Struct("!H")
_new_tuple = tuple.__new__
_BYTE = [bytes((i,)) for i in range(256)]
_ZEROS = (b"", b"\x00", b"\x00\x00", b"\x00\x00\x00")


class RtpView(NamedTuple):
    """Fixed header fields of one RTP packet and where its parts lie in the buffer.

    Offsets and ``*_size`` values are in bytes. ``ext_profile`` is 0 when the packet has
    no header extension (X bit clear); ``ext_offset``/``ext_size`` then are 0 too and
    otherwise locate the extension data after the 4-byte profile/length word.
    ``payload_size`` excludes RTP padding; ``padding_size`` includes the count byte.
    """

    payload_type: int
    marker: bool
    seq: int
    timestamp: int
    ssrc: int
    csrc_count: int
    padding: bool
    ext_profile: int
    ext_offset: int
    ext_size: int
    payload_offset: int
    payload_size: int
    padding_size: int

    def payload(self, buf: Buffer) -> memoryview:
        """The payload (without padding) as a zero-copy view of ``buf``."""
        start = self.payload_offset
        return memoryview(buf)[start : start + self.payload_size]

    def csrcs(self, buf: Buffer) -> tuple[int, ...]:
        return struct.unpack_from(f"!{self.csrc_count}I", buf, RTP_HEADER_SIZE)

    def extensions(self, buf: Buffer) -> list[tuple[int, int, int]]:
        """All extension elements as ``(id, offset, length)``, in wire order."""
        if not self.ext_profile:
            return []
        start = self.ext_offset
        return _elements(buf, self.ext_profile, start, start + self.ext_size)

    def find_extension(self, buf: Buffer, ext_id: int) -> tuple[int, int] | None:
        """Like :func:`find_extension` without re-reading the fixed header."""
        if not self.ext_profile:
            return None
        start = self.ext_offset
        return _find(buf, self.ext_profile, start, start + self.ext_size, ext_id)


def parse_rtp(buf: Buffer) -> RtpView:
    """Validate the RTP header of ``buf`` and return its fields and layout.

    Checks the version, that CSRCs, the extension block and the padding fit in the
    packet. Extension elements are not walked here (see :func:`find_extension`).
    """
    n = len(buf)
    if n < 12:
        raise ValueError(f"RTP packet too short: {n} bytes, the fixed header needs 12")
    b0, b1, seq, timestamp, ssrc = _FIXED.unpack_from(buf)
    if b0 & 0xC0 != 0x80:
        raise ValueError(f"RTP version is {b0 >> 6}, expected 2")
    cc = b0 & 0x0F
    off = 12 + 4 * cc
    if b0 & 0x10:
        if n < off + 4:
            raise ValueError(
                f"RTP header extension truncated: packet has {n} bytes, the extension header"
                f" ends at {off + 4}"
            )
        profile, words = _EXT_HEADER.unpack_from(buf, off)
        ext_offset = off + 4
        ext_size = 4 * words
        off = ext_offset + ext_size
        if off > n:
            raise ValueError(
                f"RTP header extension of {words} words overruns the packet: header ends at"
                f" {off}, packet has {n} bytes"
            )
    elif off > n:
        raise ValueError(f"RTP packet too short for {cc} CSRCs: {n} bytes, need {off}")
    else:
        profile = ext_offset = ext_size = 0
    if b0 & 0x20:
        pad = buf[n - 1]
        if pad == 0:
            raise ValueError("RTP padding bit set but the padding count byte is 0")
        if pad > n - off:
            raise ValueError(
                f"RTP padding count {pad} exceeds the {n - off} bytes after the header"
            )
        return _new_tuple(
            RtpView,
            (b1 & 0x7F, b1 > 127, seq, timestamp, ssrc, cc, True, profile, ext_offset,
             ext_size, off, n - off - pad, pad),
        )
    return _new_tuple(
        RtpView,
        (b1 & 0x7F, b1 > 127, seq, timestamp, ssrc, cc, False, profile, ext_offset, ext_size,
         off, n - off, 0),
    )


def is_rtcp(buf: Buffer) -> bool:
    """RFC 5761 demultiplexing: True if ``buf`` is RTCP rather than RTP (rtcp-mux)."""
    return len(buf) >= 2 and 192 <= buf[1] <= 223


# --- header extensions -------------------------------------------------------------------


def _locate(buf: Buffer) -> tuple[int, int, int, int, int]:
    """``(b0, header_end, profile, ext_start, ext_end)``; profile 0 when there is none."""
    n = len(buf)
    if n < 12:
        raise ValueError(f"RTP packet too short: {n} bytes, the fixed header needs 12")
    b0 = buf[0]
    if b0 & 0xC0 != 0x80:
        raise ValueError(f"RTP version is {b0 >> 6}, expected 2")
    off = 12 + 4 * (b0 & 0x0F)
    if not b0 & 0x10:
        if off > n:
            raise ValueError(
                f"RTP packet too short for {b0 & 0x0F} CSRCs: {n} bytes, need {off}"
            )
        return b0, off, 0, off, off
    if n < off + 4:
        raise ValueError(
            f"RTP header extension truncated: packet has {n} bytes, the extension header"
            f" ends at {off + 4}"
        )
    profile, words = _EXT_HEADER.unpack_from(buf, off)
    end = off + 4 + 4 * words
    if end > n:
        raise ValueError(
            f"RTP header extension of {words} words overruns the packet: header ends at"
            f" {end}, packet has {n} bytes"
        )
    return b0, off, profile, off + 4, end


def _elements(buf: Buffer, profile: int, pos: int, end: int) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    if profile == ONE_BYTE_PROFILE:
        while pos < end:
            b = buf[pos]
            ext_id = b >> 4
            if ext_id == 0:  # padding byte
                pos += 1
                continue
            if ext_id == 15:  # RFC 8285 4.2: stop processing the block
                break
            length = (b & 0x0F) + 1
            pos += 1
            if pos + length > end:
                raise ValueError(
                    f"RTP one-byte header extension id {ext_id} of {length} bytes overruns"
                    f" the extension block by {pos + length - end} bytes"
                )
            out.append((ext_id, pos, length))
            pos += length
    elif profile & 0xFFF0 == TWO_BYTE_PROFILE:
        while pos < end:
            ext_id = buf[pos]
            if ext_id == 0:  # padding byte
                pos += 1
                continue
            if pos + 2 > end:
                raise ValueError(
                    f"RTP two-byte header extension id {ext_id} has no length byte"
                )
            length = buf[pos + 1]
            pos += 2
            if pos + length > end:
                raise ValueError(
                    f"RTP two-byte header extension id {ext_id} of {length} bytes overruns"
                    f" the extension block by {pos + length - end} bytes"
                )
            out.append((ext_id, pos, length))
            pos += length
    return out


def _find(buf: Buffer, profile: int, pos: int, end: int, want: int) -> tuple[int, int] | None:
    if profile == ONE_BYTE_PROFILE:
        while pos < end:
            b = buf[pos]
            ext_id = b >> 4
            if ext_id == 0:
                pos += 1
                continue
            if ext_id == 15:
                return None
            length = (b & 0x0F) + 1
            pos += 1
            if pos + length > end:
                raise ValueError(
                    f"RTP one-byte header extension id {ext_id} of {length} bytes overruns"
                    f" the extension block by {pos + length - end} bytes"
                )
            if ext_id == want:
                return pos, length
            pos += length
    elif profile & 0xFFF0 == TWO_BYTE_PROFILE:
        while pos < end:
            ext_id = buf[pos]
            if ext_id == 0:
                pos += 1
                continue
            if pos + 2 > end:
                raise ValueError(
                    f"RTP two-byte header extension id {ext_id} has no length byte"
                )
            length = buf[pos + 1]
            pos += 2
            if pos + length > end:
                raise ValueError(
                    f"RTP two-byte header extension id {ext_id} of {length} bytes overruns"
                    f" the extension block by {pos + length - end} bytes"
                )
            if ext_id == want:
                return pos, length
            pos += length
    return None


def iter_extensions(buf: Buffer) -> list[tuple[int, int, int]]:
    """All RFC 8285 extension elements of ``buf`` as ``(id, offset, length)``.

    Padding bytes are skipped; a one-byte element with id 15 ends the walk (RFC 8285
    4.2). A block with another profile (not 0xBEDE / 0x100X) yields nothing.
    """
    _, _, profile, start, end = _locate(buf)
    if not profile:
        return []
    return _elements(buf, profile, start, end)


def find_extension(buf: Buffer, ext_id: int) -> tuple[int, int] | None:
    """``(offset, length)`` of the first element with ``ext_id``, or None if absent.

    Validates the fixed header and the extension block bounds, and the elements walked
    before the one found.
    """
    n = len(buf)
    if n < 12:
        raise ValueError(f"RTP packet too short: {n} bytes, the fixed header needs 12")
    b0 = buf[0]
    if b0 & 0xC0 != 0x80:
        raise ValueError(f"RTP version is {b0 >> 6}, expected 2")
    if not b0 & 0x10:
        return None
    off = 12 + 4 * (b0 & 0x0F)
    if n < off + 4:
        raise ValueError(
            f"RTP header extension truncated: packet has {n} bytes, the extension header"
            f" ends at {off + 4}"
        )
    profile, words = _EXT_HEADER.unpack_from(buf, off)
    end = off + 4 + 4 * words
    if end > n:
        raise ValueError(
            f"RTP header extension of {words} words overruns the packet: header ends at"
            f" {end}, packet has {n} bytes"
        )
    return _find(buf, profile, off + 4, end, ext_id)


def extension_value(buf: Buffer, ext_id: int) -> bytes | None:
    loc = find_extension(buf, ext_id)
    if loc is None:
        return None
    off, length = loc
    return bytes(buf[off : off + length])


def _read_string(buf: Buffer, ext_id: int, what: str) -> str | None:
    loc = find_extension(buf, ext_id)
    if loc is None:
        return None
    off, length = loc
    raw = bytes(buf[off : off + length])
    nul = raw.find(0)  # as libwebrtc: a NUL ends the string
    if nul >= 0:
        raw = raw[:nul]
    if not raw:
        raise ValueError(f"RTP {what} header extension (id {ext_id}) is empty")
    try:
        return raw.decode("ascii" if what != "mid" else "utf-8")
    except UnicodeDecodeError:
        raise ValueError(
            f"RTP {what} header extension (id {ext_id}) is not valid text: {raw!r}"
        ) from None


def read_mid(buf: Buffer, ext_id: int) -> str | None:
    """The ``urn:ietf:params:rtp-hdrext:sdes:mid`` value (RFC 8843), or None if absent."""
    return _read_string(buf, ext_id, "mid")


def read_rid(buf: Buffer, ext_id: int) -> str | None:
    """An ``sdes:rtp-stream-id`` or ``sdes:repaired-rtp-stream-id`` value (RFC 8852)."""
    return _read_string(buf, ext_id, "rid")


def read_abs_send_time(buf: Buffer, ext_id: int) -> int | None:
    """The raw 24-bit abs-send-time (6.18 fixed-point seconds, wraps every 64 s)."""
    loc = find_extension(buf, ext_id)
    if loc is None:
        return None
    off, length = loc
    if length != 3:
        raise ValueError(f"RTP abs-send-time extension (id {ext_id}) is {length} bytes, not 3")
    return (buf[off] << 16) | (buf[off + 1] << 8) | buf[off + 2]


def read_transport_seq(buf: Buffer, ext_id: int) -> int | None:
    """The 16-bit transport-wide sequence number (transport-cc; 4-byte -02 form accepted)."""
    loc = find_extension(buf, ext_id)
    if loc is None:
        return None
    off, length = loc
    if length != 2 and length != 4:
        raise ValueError(
            f"RTP transport-cc extension (id {ext_id}) is {length} bytes, expected 2 or 4"
        )
    return (buf[off] << 8) | buf[off + 1]


class AudioLevel(NamedTuple):
    """RFC 6464 client-to-mixer audio level: voice activity flag and level in dBov."""

    voice_activity: bool
    level_dbov: int  # 0 (loudest) .. -127 (silence)


def read_audio_level(buf: Buffer, ext_id: int) -> AudioLevel | None:
    loc = find_extension(buf, ext_id)
    if loc is None:
        return None
    off, length = loc
    if length == 0:
        raise ValueError(f"RTP audio level extension (id {ext_id}) is empty")
    b = buf[off]
    return AudioLevel(b > 127, -(b & 0x7F))


def abs_send_time_from_us(time_us: int) -> int:
    """24-bit abs-send-time for a time in µs (any epoch; only the low 64 s are kept)."""
    return ((time_us << 18) // 1_000_000) & 0xFFFFFF


def abs_send_time_to_us(value: int) -> int:
    """µs within the 64 s abs-send-time period, rounded down."""
    return (value * 1_000_000) >> 18


def encode_abs_send_time(time_us: int) -> bytes:
    return (((time_us << 18) // 1_000_000) & 0xFFFFFF).to_bytes(3, "big")


def encode_transport_seq(seq: int) -> bytes:
    return _U16.pack(seq & 0xFFFF)


def encode_audio_level(voice_activity: bool, level_dbov: int) -> bytes:
    if not -127 <= level_dbov <= 0:
        raise ValueError(f"audio level {level_dbov} dBov is outside -127..0")
    return _BYTE[(0x80 if voice_activity else 0) | -level_dbov]


# --- rewriting ---------------------------------------------------------------------------


def rewrite_header(
    buf: bytearray,
    *,
    seq: int,
    timestamp: int,
    ssrc: int,
    payload_type: int,
    marker: bool | None = None,
) -> None:
    """Overwrite seq, timestamp, SSRC, payload type and (unless None) the marker in place.

    ``seq`` and ``timestamp`` may be extended (unwrapped) values; they are masked to 16
    and 32 bits.
    """
    if len(buf) < 12:
        raise ValueError(f"RTP packet too short: {len(buf)} bytes, the fixed header needs 12")
    if not 0 <= payload_type <= 127:
        raise ValueError(f"RTP payload type {payload_type} is outside 0..127")
    if marker is None:
        b1 = (buf[1] & 0x80) | payload_type
    else:
        b1 = 0x80 | payload_type if marker else payload_type
    _REWRITE.pack_into(buf, 1, b1, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)


def rewrite_extension(buf: bytearray, ext_id: int, value: bytes) -> None:
    """Overwrite the bytes of extension ``ext_id`` in place; the length must not change."""
    loc = find_extension(buf, ext_id)
    if loc is None:
        raise ValueError(f"RTP header extension id {ext_id} is not in the packet")
    off, length = loc
    if len(value) != length:
        raise ValueError(
            f"RTP header extension id {ext_id} is {length} bytes, cannot rewrite it in place"
            f" with {len(value)} bytes"
        )
    buf[off : off + length] = value


def write_transport_seq(buf: bytearray, offset: int, seq: int) -> None:
    """Store a transport-wide seq (masked to 16 bits) at ``offset`` (see find_extension).

    With :func:`rebuild_extensions` this makes the fan-out path cheap: rebuild once per
    incoming packet and subscriber extension layout, then per subscriber copy the
    template, :func:`rewrite_header` and write its own transport seq / abs-send-time.
    """
    _U16.pack_into(buf, offset, seq & 0xFFFF)


def write_abs_send_time(buf: bytearray, offset: int, time_us: int) -> None:
    """Store the 24-bit abs-send-time for ``time_us`` at ``offset``."""
    value = ((time_us << 18) // 1_000_000) & 0xFFFFFF
    buf[offset] = value >> 16
    buf[offset + 1] = (value >> 8) & 0xFF
    buf[offset + 2] = value & 0xFF


def rebuild_extensions(
    buf: Buffer,
    keep: Mapping[int, int | None],
    add: Iterable[tuple[int, Buffer]] = (),
) -> bytearray:
    """A copy of ``buf`` carrying only some extensions, renumbered, plus added ones.

    ``keep`` maps an input extension id to its output id (None or absent: drop it).
    ``add`` appends ``(id, value)`` elements, replacing a kept element with the same
    output id. The one-byte form (0xBEDE) is used when every id is 1..14 and every value
    1..16 bytes, else the two-byte form (0x1000). Without elements the X bit is cleared.
    CSRCs, payload and RTP padding are copied untouched. An input id repeated in the
    packet is kept once (first occurrence); elements of a non-RFC 8285 block are dropped.
    """
    n = len(buf)
    if n < 12:
        raise ValueError(f"RTP packet too short: {n} bytes, the fixed header needs 12")
    b0 = buf[0]
    if b0 & 0xC0 != 0x80:
        raise ValueError(f"RTP version is {b0 >> 6}, expected 2")
    hdr_end = 12 + 4 * (b0 & 0x0F)
    elems: dict[int, Buffer] = {}
    one_byte = True
    if b0 & 0x10:
        if n < hdr_end + 4:
            raise ValueError(
                f"RTP header extension truncated: packet has {n} bytes, the extension header"
                f" ends at {hdr_end + 4}"
            )
        profile, words = _EXT_HEADER.unpack_from(buf, hdr_end)
        pos = hdr_end + 4
        end = pos + 4 * words
        if end > n:
            raise ValueError(
                f"RTP header extension of {words} words overruns the packet: header ends at"
                f" {end}, packet has {n} bytes"
            )
        if profile == ONE_BYTE_PROFILE:  # the common case, walked inline
            while pos < end:
                b = buf[pos]
                in_id = b >> 4
                if in_id == 0:
                    pos += 1
                    continue
                if in_id == 15:
                    break
                nxt = pos + 2 + (b & 0x0F)
                if nxt > end:
                    raise ValueError(
                        f"RTP one-byte header extension id {in_id} of {(b & 0x0F) + 1} bytes"
                        f" overruns the extension block by {nxt - end} bytes"
                    )
                out_id = keep.get(in_id)
                if out_id is not None and out_id not in elems:
                    elems[out_id] = buf[pos + 1 : nxt]
                    if out_id > 14:
                        one_byte = False
                pos = nxt
        elif profile:
            for in_id, value_pos, length in _elements(buf, profile, pos, end):
                out_id = keep.get(in_id)
                if out_id is not None and out_id not in elems:
                    elems[out_id] = buf[value_pos : value_pos + length]
                    if out_id > 14 or length == 0 or length > 16:
                        one_byte = False
    elif hdr_end > n:
        raise ValueError(f"RTP packet too short for {b0 & 0x0F} CSRCs: {n} bytes, need {hdr_end}")
    else:
        end = hdr_end
    for out_id, value in add:
        elems[out_id] = value
        length = len(value)
        if out_id > 14 or length == 0 or length > 16:
            one_byte = False

    out = bytearray(buf[:hdr_end])
    if not elems:
        out[0] = b0 & 0xEF
        out += buf[end:]
        return out
    out[0] = b0 | 0x10
    parts: list[Buffer] = []
    append = parts.append
    if one_byte:
        for out_id, value in elems.items():
            if out_id < 1:
                raise ValueError(f"RTP header extension id {out_id} is outside 1..255")
            append(_BYTE[(out_id << 4) | (len(value) - 1)])
            append(value)
        profile = ONE_BYTE_PROFILE
    else:
        for out_id, value in elems.items():
            length = len(value)
            if not 1 <= out_id <= 255:
                raise ValueError(f"RTP header extension id {out_id} is outside 1..255")
            if length > 255:
                raise ValueError(
                    f"RTP header extension id {out_id} value of {length} bytes exceeds 255"
                )
            append(_BYTE[out_id])
            append(_BYTE[length])
            append(value)
        profile = TWO_BYTE_PROFILE
    body = b"".join(parts)
    size = len(body)
    pad = -size & 3
    out += _EXT_HEADER.pack(profile, (size + pad) >> 2)
    out += body
    if pad:
        out += _ZEROS[pad]
    out += buf[end:]
    return out


# --- unwrapping --------------------------------------------------------------------------


class SeqUnwrapper:
    """16-bit RTP/transport sequence numbers → extended ints ("unwrap once").

    The first value maps to itself; later values map to the extended number nearest to
    the highest seen so far, so reordering and wrap-around both come out right. A packet
    older than the first one seen may map to a negative number.
    """

    __slots__ = ("_highest",)

    def __init__(self) -> None:
        self._highest: int | None = None

    @property
    def highest(self) -> int | None:
        """The highest extended value returned so far."""
        return self._highest

    def unwrap(self, seq: int) -> int:
        highest = self._highest
        if highest is None:
            self._highest = seq
            return seq
        delta = (seq - highest) & 0xFFFF
        if delta >= 0x8000:
            return highest + delta - 0x10000
        ext = highest + delta
        self._highest = ext
        return ext


class TsUnwrapper:
    """32-bit RTP timestamps → extended ints, like :class:`SeqUnwrapper`."""

    __slots__ = ("_highest",)

    def __init__(self) -> None:
        self._highest: int | None = None

    @property
    def highest(self) -> int | None:
        return self._highest

    def unwrap(self, timestamp: int) -> int:
        highest = self._highest
        if highest is None:
            self._highest = timestamp
            return timestamp
        delta = (timestamp - highest) & 0xFFFFFFFF
        if delta >= 0x80000000:
            return highest + delta - 0x100000000
        ext = highest + delta
        self._highest = ext
        return ext
