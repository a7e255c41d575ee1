"""RTP retransmission payload format (RFC 4588), SSRC-multiplexed as WebRTC uses it.

An RTX packet is the original packet with the RTX stream's SSRC, payload type and
sequence number, and the original sequence number (OSN) prepended to the payload. Header
extensions, CSRCs, marker and timestamp are the original's. :func:`build_rtx` makes one for
a subscriber; :func:`unwrap_rtx` turns a publisher's RTX packet back into the original.
RTP padding is not carried over. Padding-only RTX packets are bandwidth probes
(:func:`is_padding_only`) and are never forwarded.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from sfu.rtp.header import Buffer, RtpView, parse_rtp

_FIXED = struct.Struct("!BBHII")
_U16 = struct.Struct("!H")


class HeaderRewrite(NamedTuple):
    """The subscriber's sequence number and timestamp for a packet given with the
    publisher's header (as stored in :class:`~sfu.rtp.cache.PacketCache`)."""

    seq: int
    timestamp: int


def build_rtx(
    original: Buffer,
    *,
    rtx_ssrc: int,
    rtx_payload_type: int,
    rtx_seq: int,
    header_rewrite: HeaderRewrite | None = None,
    view: RtpView | None = None,
) -> bytes:
    """The RTX packet retransmitting ``original``.

    Without ``header_rewrite``, ``original`` is the packet as it was sent to this
    subscriber (header already rewritten): the OSN is its sequence number and its timestamp
    is kept. With ``header_rewrite``, ``original`` may carry the publisher's header: the OSN
    is ``header_rewrite.seq`` and the timestamp ``header_rewrite.timestamp`` (both masked),
    saving a copy. Extensions are copied as they are (renumber them with
    :func:`~sfu.rtp.header.rebuild_extensions`, before or after, if the ids differ).
    ``rtx_seq`` is masked to 16 bits. ``view`` (the :func:`~sfu.rtp.header.parse_rtp`
    result for ``original``) skips re-parsing.
    """
    if not 0 <= rtx_payload_type <= 127:
        raise ValueError(f"RTX payload type {rtx_payload_type} is outside 0..127")
    if view is None:
        view = parse_rtp(original)
    if header_rewrite is None:
        osn = view.seq
        timestamp = view.timestamp
    else:
        osn = header_rewrite.seq & 0xFFFF
        timestamp = header_rewrite.timestamp & 0xFFFFFFFF
    b0 = original[0] & 0xDF  # no padding
    b1 = (original[1] & 0x80) | rtx_payload_type
    start = view.payload_offset
    end = start + view.payload_size
    return b"".join((
        _FIXED.pack(b0, b1, rtx_seq & 0xFFFF, timestamp, rtx_ssrc),
        original[12:start],
        _U16.pack(osn),
        original[start:end],
    ))


def unwrap_rtx(packet: Buffer, *, media_ssrc: int, media_payload_type: int) -> tuple[int, bytes]:
    """``(osn, original)``: the retransmitted packet with seq = OSN and the media
    SSRC and payload type; extensions, CSRCs, marker and timestamp kept, padding removed.

    Raises :class:`ValueError` if the packet is malformed or too short to hold an OSN
    (check :func:`is_padding_only` first: padding probes have none).
    """
    if not 0 <= media_payload_type <= 127:
        raise ValueError(f"RTP payload type {media_payload_type} is outside 0..127")
    view = parse_rtp(packet)
    if view.payload_size < 2:
        raise ValueError(
            f"RTX payload of {view.payload_size} bytes has no original sequence number"
        )
    start = view.payload_offset
    osn = (packet[start] << 8) | packet[start + 1]
    b0 = packet[0] & 0xDF
    b1 = (packet[1] & 0x80) | media_payload_type
    return osn, b"".join((
        _FIXED.pack(b0, b1, osn, view.timestamp, media_ssrc),
        packet[12:start],
        packet[start + 2 : start + view.payload_size],
    ))


def is_padding_only(view: RtpView) -> bool:
    """True if the packet carries nothing but padding (a bandwidth probe)."""
    return view.payload_size == 0
