"""ChannelData messages (RFC 8656 §12.4): a 4-byte header (channel number, length) and data.

Channel numbers are 0x4000–0x4FFF (RFC 8656). RFC 5766 allowed 0x4000–0x7FFE and coturn (and
its test client, which picks channel numbers at random up to 0x7FFF) still uses that range,
so a server may opt in to it with :data:`LEGACY_MAX_CHANNEL`.

Over TCP and TLS a ChannelData message is padded to a multiple of 4 bytes; over UDP padding is
optional, and whatever follows the data is ignored.
"""

from __future__ import annotations

__all__ = [
    "LEGACY_MAX_CHANNEL",
    "MAX_CHANNEL",
    "MIN_CHANNEL",
    "encode_channel_data",
    "is_channel_data",
    "parse_channel_data",
]

MIN_CHANNEL = 0x4000
MAX_CHANNEL = 0x4FFF
LEGACY_MAX_CHANNEL = 0x7FFF
HEADER_LENGTH = 4


def is_channel_data(data: bytes) -> bool:
    """The first two bits are 01 (RFC 7983 demultiplexing: first byte 64–127)."""
    return len(data) >= 1 and 0x40 <= data[0] <= 0x7F


def parse_channel_data(data: bytes) -> tuple[int, bytes]:
    """Return ``(channel, payload)``; ValueError when truncated or not ChannelData."""
    if len(data) < HEADER_LENGTH:
        raise ValueError(f"ChannelData truncated: {len(data)} bytes, header needs 4")
    channel = (data[0] << 8) | data[1]
    if not MIN_CHANNEL <= channel <= LEGACY_MAX_CHANNEL:
        raise ValueError(f"channel number 0x{channel:04X} is not a ChannelData channel")
    length = (data[2] << 8) | data[3]
    if HEADER_LENGTH + length > len(data):
        raise ValueError(f"ChannelData length {length} exceeds the {len(data) - 4} bytes received")
    return channel, bytes(data[HEADER_LENGTH:HEADER_LENGTH + length])


def encode_channel_data(channel: int, payload: bytes, pad: bool = False) -> bytes:
    """Header + payload, padded to a multiple of 4 bytes when ``pad`` (stream transports)."""
    if not MIN_CHANNEL <= channel <= LEGACY_MAX_CHANNEL:
        raise ValueError(f"channel number 0x{channel:04X} out of range")
    if len(payload) > 0xFFFF:
        raise ValueError("ChannelData payload longer than 65535 bytes")
    out = channel.to_bytes(2, "big") + len(payload).to_bytes(2, "big") + payload
    if pad and len(payload) % 4:
        out += b"\x00" * (-len(payload) % 4)
    return out
