"""Split a TCP or TLS byte stream into STUN messages and ChannelData frames (RFC 8656 §12.5).

A STUN message is 20 bytes of header plus its length; a ChannelData frame is 4 bytes plus its
length rounded up to a multiple of 4 (the padding is part of the frame on streams). Anything
else on the stream is unrecoverable: :meth:`StreamFramer.feed` raises ValueError and the
connection should be closed.
"""

from __future__ import annotations

__all__ = ["StreamFramer"]

MAX_FRAME = 20 + 0xFFFF


class StreamFramer:
    """Incremental framer: feed bytes, get whole frames back."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            first = buf[pos]
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            if first < 0x40:
                if length % 4:
                    raise ValueError(f"STUN length {length} on the stream is not a multiple of 4")
                size = 20 + length
            elif first < 0x80:
                size = 4 + length + (-length % 4)
            else:
                raise ValueError(f"unframeable byte 0x{first:02X} on the stream")
            if n - pos < size:
                break
            frames.append(bytes(buf[pos:pos + size]))
            pos += size
        if pos:
            del buf[:pos]
        if len(buf) > MAX_FRAME:
            raise ValueError("frame longer than 65555 bytes")
        return frames
