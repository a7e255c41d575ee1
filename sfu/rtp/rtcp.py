"""RTCP as bytes: parse compound packets into dataclasses, build the packets an SFU sends.

Covers SR, RR, SDES, BYE (RFC 3550), generic NACK and PLI/FIR (RFC 4585, RFC 5104), REMB
(draft-alvestrand-rmcat-remb) and transport-cc feedback
(draft-holmer-rmcat-transport-wide-cc-extensions-01). Everything else (APP, XR, other
feedback formats, unknown types) is kept as :class:`RawRtcp`.

Malformed input raises :class:`ValueError` naming the packet type and the field; one bad
packet rejects the whole compound (callers count and drop it). Reduced-size RTCP (RFC 5506)
is accepted: a compound need not start with SR/RR. Padding is honoured per packet.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from sfu.rtp.header import Buffer

SR = 200
RR = 201
SDES = 202
BYE = 203
APP = 204
RTPFB = 205
PSFB = 206
XR = 207

RTPFB_NACK = 1
RTPFB_TRANSPORT_CC = 15
PSFB_PLI = 1
PSFB_FIR = 4
PSFB_AFB = 15

SDES_CNAME = 1

_HDR = struct.Struct("!BBH")
_U32 = struct.Struct("!I")
_TWO_U32 = struct.Struct("!II")
_SENDER_INFO = struct.Struct("!IQIII")
_BLOCK = struct.Struct("!IIIIII")
_TWCC_HEAD = struct.Struct("!IIHHI")
_MAX_PACKET_BYTES = 4 * 0x10000  # the 16-bit length field counts 32-bit words


# --- packet types ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report (RFC 3550 6.4.1).

    ``fraction_lost`` is in 1/256 units; ``cumulative_lost`` is 24-bit signed;
    ``jitter`` is in RTP timestamp units; ``lsr`` is the middle 32 bits of the last SR's
    NTP time and ``dlsr`` the delay since then in 1/65536 s (both 0 without an SR).
    """

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    ext_highest_seq: int
    jitter: int
    lsr: int
    dlsr: int


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int  # 64-bit NTP
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    def to_bytes(self) -> bytes:
        return build_sr(self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count,
                        self.octet_count, self.reports)


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def to_bytes(self) -> bytes:
        return build_rr(self.ssrc, self.reports)


@dataclass(frozen=True, slots=True)
class SdesChunk:
    ssrc: int
    items: tuple[tuple[int, bytes], ...]  # (item type, value), in wire order

    @property
    def cname(self) -> str | None:
        for item_type, value in self.items:
            if item_type == SDES_CNAME:
                return value.decode("utf-8", errors="replace")
        return None


@dataclass(frozen=True, slots=True)
class Sdes:
    chunks: tuple[SdesChunk, ...]

    def to_bytes(self) -> bytes:
        return build_sdes(self.chunks)


@dataclass(frozen=True, slots=True)
class Bye:
    ssrcs: tuple[int, ...]
    reason: str | None = None

    def to_bytes(self) -> bytes:
        return build_bye(self.ssrcs, self.reason)


@dataclass(frozen=True, slots=True)
class Nack:
    """Generic NACK: the 16-bit sequence numbers reported lost, in wire order."""

    sender_ssrc: int
    media_ssrc: int
    lost_seqs: tuple[int, ...]

    def to_bytes(self) -> bytes:
        return build_nack(self.sender_ssrc, self.media_ssrc, self.lost_seqs)


@dataclass(frozen=True, slots=True)
class TransportCc:
    """Transport-wide congestion control feedback.

    ``reference_time`` is the raw 24-bit field (64 ms units). ``packets`` holds one
    ``(seq, arrival_time_us)`` per reported status, seq 16-bit and in order, arrival None
    when not received; arrival times are ``reference_time * 64000`` plus the cumulative
    receive deltas (250 µs units), so they live in the feedback sender's time base.
    """

    sender_ssrc: int
    media_ssrc: int
    base_seq: int
    reference_time: int
    fb_pkt_count: int
    packets: tuple[tuple[int, int | None], ...]

    @property
    def status_count(self) -> int:
        return len(self.packets)

    def to_bytes(self) -> bytes:
        return build_transport_cc(
            sender_ssrc=self.sender_ssrc, media_ssrc=self.media_ssrc, base_seq=self.base_seq,
            fb_pkt_count=self.fb_pkt_count, arrivals_us=[t for _, t in self.packets])


@dataclass(frozen=True, slots=True)
class Pli:
    sender_ssrc: int
    media_ssrc: int

    def to_bytes(self) -> bytes:
        return build_pli(self.sender_ssrc, self.media_ssrc)


@dataclass(frozen=True, slots=True)
class FirEntry:
    ssrc: int
    seq_nr: int  # 8-bit command sequence number


@dataclass(frozen=True, slots=True)
class Fir:
    sender_ssrc: int
    entries: tuple[FirEntry, ...]

    def to_bytes(self) -> bytes:
        return build_fir(self.sender_ssrc, self.entries)


@dataclass(frozen=True, slots=True)
class Remb:
    sender_ssrc: int
    bitrate_bps: int
    ssrcs: tuple[int, ...]

    def to_bytes(self) -> bytes:
        return build_remb(self.sender_ssrc, self.bitrate_bps, self.ssrcs)


@dataclass(frozen=True, slots=True)
class RawRtcp:
    """A packet this module does not interpret (APP, XR, other formats): its bytes."""

    packet_type: int
    count: int  # the 5-bit count / format field
    data: bytes  # the whole packet, header and padding included

    def to_bytes(self) -> bytes:
        return self.data


RtcpPacket: TypeAlias = (
    SenderReport | ReceiverReport | Sdes | Bye | Nack | TransportCc | Pli | Fir | Remb | RawRtcp
)


# --- parsing -----------------------------------------------------------------------------


def parse_rtcp(buf: Buffer, *, max_twcc_statuses: int = 0xFFFF) -> list[RtcpPacket]:
    """Parse a (compound) RTCP packet; raises ValueError if any part is malformed.

    A transport-cc packet of a few dozen bytes may claim 65535 "not received" statuses,
    each of which becomes a tuple (≈ 10 ms of CPU here): ``max_twcc_statuses`` rejects
    feedback claiming more (a receiver never reports more packets than were sent to it).
    """
    n = len(buf)
    if n == 0:
        raise ValueError("RTCP packet is empty")
    out: list[RtcpPacket] = []
    pos = 0
    while pos < n:
        if n - pos < 4:
            raise ValueError(
                f"RTCP header truncated at offset {pos}: {n - pos} bytes left, need 4"
            )
        b0, packet_type, words = _HDR.unpack_from(buf, pos)
        if b0 & 0xC0 != 0x80:
            raise ValueError(f"RTCP version is {b0 >> 6} at offset {pos}, expected 2")
        end = pos + 4 + 4 * words
        if end > n:
            raise ValueError(
                f"RTCP packet type {packet_type} at offset {pos} declares {4 + 4 * words}"
                f" bytes, only {n - pos} remain"
            )
        body_end = end
        if b0 & 0x20:
            pad = buf[end - 1]
            if pad == 0 or pad > 4 * words:
                raise ValueError(
                    f"RTCP packet type {packet_type} at offset {pos}: padding count {pad}"
                    f" is invalid for a {4 + 4 * words}-byte packet"
                )
            body_end -= pad
        count = b0 & 0x1F
        body = pos + 4
        packet: RtcpPacket
        if packet_type == SR:
            packet = _parse_sr(buf, body, body_end, count)
        elif packet_type == RR:
            packet = _parse_rr(buf, body, body_end, count)
        elif packet_type == SDES:
            packet = _parse_sdes(buf, body, body_end, count)
        elif packet_type == BYE:
            packet = _parse_bye(buf, body, body_end, count)
        elif packet_type == RTPFB and count == RTPFB_NACK:
            packet = _parse_nack(buf, body, body_end)
        elif packet_type == RTPFB and count == RTPFB_TRANSPORT_CC:
            packet = _parse_transport_cc(buf, body, body_end, max_twcc_statuses)
        elif packet_type == PSFB and count == PSFB_PLI:
            if body_end - body < 8:
                raise ValueError(f"RTCP PLI too short: {body_end - body} bytes, need 8")
            packet = Pli(*_TWO_U32.unpack_from(buf, body))
        elif packet_type == PSFB and count == PSFB_FIR:
            packet = _parse_fir(buf, body, body_end)
        elif (packet_type == PSFB and count == PSFB_AFB and body_end - body >= 12
              and bytes(buf[body + 8 : body + 12]) == b"REMB"):
            packet = _parse_remb(buf, body, body_end)
        else:
            packet = RawRtcp(packet_type, count, bytes(buf[pos:end]))
        out.append(packet)
        pos = end
    return out


def _report_blocks(
    buf: Buffer, pos: int, end: int, count: int, what: str
) -> tuple[ReportBlock, ...]:
    if pos + 24 * count > end:
        raise ValueError(
            f"RTCP {what} with {count} report blocks needs {24 * count} bytes for them,"
            f" has {end - pos}"
        )
    blocks = []
    for _ in range(count):
        ssrc, lost_word, ext_highest_seq, jitter, lsr, dlsr = _BLOCK.unpack_from(buf, pos)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        blocks.append(ReportBlock(ssrc, lost_word >> 24, lost, ext_highest_seq, jitter, lsr,
                                  dlsr))
        pos += 24
    return tuple(blocks)


def _parse_sr(buf: Buffer, pos: int, end: int, count: int) -> SenderReport:
    if end - pos < 24:
        raise ValueError(f"RTCP SR too short: {end - pos} bytes after the header, need 24")
    ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(buf, pos)
    reports = _report_blocks(buf, pos + 24, end, count, "SR")
    return SenderReport(ssrc, ntp, rtp_ts, packets, octets, reports)


def _parse_rr(buf: Buffer, pos: int, end: int, count: int) -> ReceiverReport:
    if end - pos < 4:
        raise ValueError(f"RTCP RR too short: {end - pos} bytes after the header, need 4")
    (ssrc,) = _U32.unpack_from(buf, pos)
    return ReceiverReport(ssrc, _report_blocks(buf, pos + 4, end, count, "RR"))


def _parse_sdes(buf: Buffer, pos: int, end: int, count: int) -> Sdes:
    start = pos
    chunks = []
    for index in range(count):
        if pos + 4 > end:
            raise ValueError(f"RTCP SDES chunk {index} of {count} is truncated")
        (ssrc,) = _U32.unpack_from(buf, pos)
        pos += 4
        items = []
        while True:
            if pos >= end:
                raise ValueError(f"RTCP SDES chunk for SSRC {ssrc:#010x} has no end item")
            item_type = buf[pos]
            if item_type == 0:
                pos += 1
                break
            if pos + 2 > end:
                raise ValueError(f"RTCP SDES item type {item_type} has no length byte")
            length = buf[pos + 1]
            pos += 2
            if pos + length > end:
                raise ValueError(
                    f"RTCP SDES item type {item_type} of {length} bytes overruns the packet by"
                    f" {pos + length - end} bytes"
                )
            items.append((item_type, bytes(buf[pos : pos + length])))
            pos += length
        pos += -(pos - start) & 3  # chunks are 32-bit aligned
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return Sdes(tuple(chunks))


def _parse_bye(buf: Buffer, pos: int, end: int, count: int) -> Bye:
    if pos + 4 * count > end:
        raise ValueError(
            f"RTCP BYE with {count} SSRCs needs {4 * count} bytes, has {end - pos}"
        )
    ssrcs = struct.unpack_from(f"!{count}I", buf, pos)
    pos += 4 * count
    reason = None
    if pos < end:
        length = buf[pos]
        if pos + 1 + length > end:
            raise ValueError(
                f"RTCP BYE reason of {length} bytes overruns the packet by"
                f" {pos + 1 + length - end} bytes"
            )
        reason = bytes(buf[pos + 1 : pos + 1 + length]).decode("utf-8", errors="replace")
    return Bye(ssrcs, reason)


def _parse_nack(buf: Buffer, pos: int, end: int) -> Nack:
    if end - pos < 8 or (end - pos) % 4:
        raise ValueError(
            f"RTCP NACK body is {end - pos} bytes, expected 8 plus a multiple of 4"
        )
    sender_ssrc, media_ssrc = _TWO_U32.unpack_from(buf, pos)
    lost: list[int] = []
    for p in range(pos + 8, end, 4):
        pid = (buf[p] << 8) | buf[p + 1]
        blp = (buf[p + 2] << 8) | buf[p + 3]
        lost.append(pid)
        bit = 0
        while blp:
            if blp & 1:
                lost.append((pid + bit + 1) & 0xFFFF)
            blp >>= 1
            bit += 1
    return Nack(sender_ssrc, media_ssrc, tuple(lost))


def _parse_fir(buf: Buffer, pos: int, end: int) -> Fir:
    if end - pos < 8 or (end - pos - 8) % 8:
        raise ValueError(
            f"RTCP FIR body is {end - pos} bytes, expected 8 plus a multiple of 8"
        )
    (sender_ssrc,) = _U32.unpack_from(buf, pos)
    entries = tuple(
        FirEntry(_U32.unpack_from(buf, p)[0], buf[p + 4]) for p in range(pos + 8, end, 8)
    )
    return Fir(sender_ssrc, entries)


def _parse_remb(buf: Buffer, pos: int, end: int) -> Remb:
    if end - pos < 16:
        raise ValueError(f"RTCP REMB too short: {end - pos} bytes, need 16")
    (sender_ssrc,) = _U32.unpack_from(buf, pos)
    num_ssrcs = buf[pos + 12]
    exponent = buf[pos + 13] >> 2
    mantissa = ((buf[pos + 13] & 0x03) << 16) | (buf[pos + 14] << 8) | buf[pos + 15]
    if pos + 16 + 4 * num_ssrcs > end:
        raise ValueError(
            f"RTCP REMB lists {num_ssrcs} SSRCs but has room for {(end - pos - 16) // 4}"
        )
    ssrcs = struct.unpack_from(f"!{num_ssrcs}I", buf, pos + 16)
    return Remb(sender_ssrc, mantissa << exponent, ssrcs)


def _parse_transport_cc(buf: Buffer, pos: int, end: int, max_statuses: int) -> TransportCc:
    if end - pos < 18:
        raise ValueError(
            f"RTCP transport-cc feedback too short: {end - pos} bytes, need at least 18"
        )
    sender_ssrc, media_ssrc, base_seq, status_count, ref_word = _TWCC_HEAD.unpack_from(
        buf, pos
    )
    if status_count == 0:
        raise ValueError("RTCP transport-cc feedback has a packet status count of 0")
    if status_count > max_statuses:
        raise ValueError(
            f"RTCP transport-cc feedback reports {status_count} statuses, more than the"
            f" {max_statuses} allowed"
        )
    reference_time = ref_word >> 8
    pos += 16
    symbols: list[int] = []
    extend = symbols.extend
    while len(symbols) < status_count:
        if pos + 2 > end:
            raise ValueError(
                f"RTCP transport-cc status chunks truncated after {len(symbols)} of"
                f" {status_count} statuses"
            )
        chunk = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
        if chunk < 0x8000:  # run length
            extend([(chunk >> 13) & 3] * (chunk & 0x1FFF))
        elif chunk < 0xC000:  # 14 one-bit symbols
            extend([(chunk >> shift) & 1 for shift in range(13, -1, -1)])
        else:  # 7 two-bit symbols
            extend([(chunk >> shift) & 3 for shift in range(12, -1, -2)])
    del symbols[status_count:]
    time_us = reference_time * 64000
    packets: list[tuple[int, int | None]] = []
    append = packets.append
    seq = base_seq
    for symbol in symbols:
        if symbol == 0:
            append((seq, None))
        elif symbol == 1:
            if pos >= end:
                raise ValueError(f"RTCP transport-cc receive delta for seq {seq} is truncated")
            time_us += buf[pos] * 250
            pos += 1
            append((seq, time_us))
        elif symbol == 2:
            if pos + 2 > end:
                raise ValueError(f"RTCP transport-cc receive delta for seq {seq} is truncated")
            delta = (buf[pos] << 8) | buf[pos + 1]
            if delta & 0x8000:
                delta -= 0x10000
            time_us += delta * 250
            pos += 2
            append((seq, time_us))
        else:
            raise ValueError(
                f"RTCP transport-cc status symbol 3 (reserved) for seq {seq}"
            )
        seq = (seq + 1) & 0xFFFF
    return TransportCc(sender_ssrc, media_ssrc, base_seq, reference_time, ref_word & 0xFF,
                       tuple(packets))


# --- building ----------------------------------------------------------------------------


def _packet(packet_type: int, count: int, body: bytes) -> bytes:
    return _HDR.pack(0x80 | count, packet_type, len(body) // 4) + body


def _check_u32(value: int, what: str) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"RTCP {what} {value} is outside 0..2^32-1")


def _ssrc_pair(sender_ssrc: int, media_ssrc: int) -> bytes:
    _check_u32(sender_ssrc, "sender SSRC")
    _check_u32(media_ssrc, "media SSRC")
    return _TWO_U32.pack(sender_ssrc, media_ssrc)


def _pack_blocks(reports: Sequence[ReportBlock], what: str) -> bytes:
    if len(reports) > 31:
        raise ValueError(f"RTCP {what} carries at most 31 report blocks, got {len(reports)}")
    parts = []
    for r in reports:
        if not 0 <= r.fraction_lost <= 255:
            raise ValueError(f"RTCP report block fraction lost {r.fraction_lost} outside 0..255")
        if not -0x800000 <= r.cumulative_lost <= 0x7FFFFF:
            raise ValueError(
                f"RTCP report block cumulative lost {r.cumulative_lost} does not fit 24 bits"
            )
        for value, name in ((r.ssrc, "report block SSRC"),
                            (r.ext_highest_seq, "extended highest seq"),
                            (r.jitter, "jitter"), (r.lsr, "LSR"), (r.dlsr, "DLSR")):
            _check_u32(value, name)
        parts.append(_BLOCK.pack(r.ssrc, (r.fraction_lost << 24) | (r.cumulative_lost & 0xFFFFFF),
                                 r.ext_highest_seq, r.jitter, r.lsr, r.dlsr))
    return b"".join(parts)


def build_sr(
    ssrc: int,
    ntp_timestamp: int,
    rtp_timestamp: int,
    packet_count: int,
    octet_count: int,
    reports: Sequence[ReportBlock] = (),
) -> bytes:
    """A sender report; the counts are sent modulo 2^32 as RFC 3550 6.4.1 says."""
    _check_u32(ssrc, "SR SSRC")
    if not 0 <= ntp_timestamp < 1 << 64:
        raise ValueError(f"RTCP SR NTP timestamp {ntp_timestamp} is outside 64 bits")
    body = _SENDER_INFO.pack(ssrc, ntp_timestamp, rtp_timestamp & 0xFFFFFFFF,
                             packet_count & 0xFFFFFFFF, octet_count & 0xFFFFFFFF)
    return _packet(SR, len(reports), body + _pack_blocks(reports, "SR"))


def build_rr(ssrc: int, reports: Sequence[ReportBlock] = ()) -> bytes:
    _check_u32(ssrc, "RR SSRC")
    return _packet(RR, len(reports), _U32.pack(ssrc) + _pack_blocks(reports, "RR"))


def build_sdes(chunks: Sequence[SdesChunk]) -> bytes:
    if len(chunks) > 31:
        raise ValueError(f"RTCP SDES carries at most 31 chunks, got {len(chunks)}")
    parts = []
    for chunk in chunks:
        _check_u32(chunk.ssrc, "SDES SSRC")
        data = bytearray(_U32.pack(chunk.ssrc))
        for item_type, value in chunk.items:
            if not 1 <= item_type <= 255:
                raise ValueError(f"RTCP SDES item type {item_type} is outside 1..255")
            if len(value) > 255:
                raise ValueError(
                    f"RTCP SDES item type {item_type} value of {len(value)} bytes exceeds 255"
                )
            data += bytes((item_type, len(value)))
            data += value
        data += b"\x00" * (4 - len(data) % 4)  # end item plus 32-bit alignment
        parts.append(bytes(data))
    return _packet(SDES, len(chunks), b"".join(parts))


def build_sdes_cname(ssrc: int, cname: str) -> bytes:
    return build_sdes([SdesChunk(ssrc, ((SDES_CNAME, cname.encode("utf-8")),))])


def build_bye(ssrcs: Sequence[int], reason: str | None = None) -> bytes:
    if len(ssrcs) > 31:
        raise ValueError(f"RTCP BYE carries at most 31 SSRCs, got {len(ssrcs)}")
    for ssrc in ssrcs:
        _check_u32(ssrc, "BYE SSRC")
    body = b"".join(_U32.pack(ssrc) for ssrc in ssrcs)
    if reason is not None:
        text = reason.encode("utf-8")
        if len(text) > 255:
            raise ValueError(f"RTCP BYE reason of {len(text)} bytes exceeds 255")
        body += bytes((len(text),)) + text
        body += b"\x00" * (-len(body) & 3)
    return _packet(BYE, len(ssrcs), body)


def nack_pairs(lost_seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Compress sequence numbers into (PID, BLP) pairs, PID 16-bit.

    Extended (unwrapped) values pack optimally across a wrap; 16-bit values that straddle
    the wrap still come out right, in one more pair.
    """
    pairs: list[tuple[int, int]] = []
    pid: int | None = None
    blp = 0
    for seq in sorted(set(lost_seqs)):
        if pid is not None and seq - pid <= 16:
            blp |= 1 << (seq - pid - 1)
        else:
            if pid is not None:
                pairs.append((pid & 0xFFFF, blp))
            pid = seq
            blp = 0
    if pid is not None:
        pairs.append((pid & 0xFFFF, blp))
    return pairs


def build_nack(sender_ssrc: int, media_ssrc: int, lost_seqs: Iterable[int]) -> bytes:
    pairs = nack_pairs(lost_seqs)
    if not pairs:
        raise ValueError("RTCP NACK needs at least one sequence number")
    body = _ssrc_pair(sender_ssrc, media_ssrc) + b"".join(
        struct.pack("!HH", pid, blp) for pid, blp in pairs
    )
    return _packet(RTPFB, RTPFB_NACK, body)


def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return _packet(PSFB, PSFB_PLI, _ssrc_pair(sender_ssrc, media_ssrc))


def build_fir(sender_ssrc: int, entries: Iterable[FirEntry | tuple[int, int]]) -> bytes:
    """FIR (RFC 5104 4.3.1); the media source SSRC field is 0 as the RFC requires."""
    fci = []
    for entry in entries:
        ssrc, seq_nr = (entry.ssrc, entry.seq_nr) if isinstance(entry, FirEntry) else entry
        _check_u32(ssrc, "FIR SSRC")
        fci.append(_U32.pack(ssrc) + bytes((seq_nr & 0xFF, 0, 0, 0)))
    if not fci:
        raise ValueError("RTCP FIR needs at least one entry")
    return _packet(PSFB, PSFB_FIR, _ssrc_pair(sender_ssrc, 0) + b"".join(fci))


def build_remb(sender_ssrc: int, bitrate_bps: int, ssrcs: Sequence[int]) -> bytes:
    """REMB; the bitrate is rounded down to an 18-bit mantissa and a 6-bit exponent."""
    if bitrate_bps < 0:
        raise ValueError(f"REMB bitrate {bitrate_bps} bps is negative")
    if len(ssrcs) > 255:
        raise ValueError(f"REMB lists at most 255 SSRCs, got {len(ssrcs)}")
    exponent = max(0, bitrate_bps.bit_length() - 18)
    if exponent > 63:
        raise ValueError(f"REMB bitrate {bitrate_bps} bps does not fit 18 bits × 2^63")
    mantissa = bitrate_bps >> exponent
    for ssrc in ssrcs:
        _check_u32(ssrc, "REMB SSRC")
    body = (_ssrc_pair(sender_ssrc, 0) + b"REMB"
            + bytes((len(ssrcs), (exponent << 2) | (mantissa >> 16), (mantissa >> 8) & 0xFF,
                     mantissa & 0xFF))
            + b"".join(_U32.pack(ssrc) for ssrc in ssrcs))
    return _packet(PSFB, PSFB_AFB, body)


class TransportCcEncoder:
    """Builds one transport-cc feedback packet status by status.

    The chunk coding is libwebrtc's: a pending chunk holds statuses until no chunk kind
    can take the next one, then the cheapest fitting chunk is emitted (run length, 14
    one-bit or 7 two-bit symbols). ``add_received``/``add_missing`` refuse what would not
    fit (a receive delta outside ±8.19 s, the byte budget, 65535 statuses); the caller then
    starts a new packet. Arrival times are µs in any time base; the reference time is
    the first received packet's arrival in 64 ms units (mod 2^24), deltas are 250 µs
    ticks measured on absolute ticks, so nothing drifts.
    """

    __slots__ = ("base_seq", "status_count", "max_size_bytes", "_size", "_chunks", "_syms",
                 "_pending", "_all_same", "_has_large", "_deltas", "_reference_time",
                 "_last_tick")

    def __init__(self, base_seq: int, *, max_size_bytes: int = 1200) -> None:
        if max_size_bytes < 32:
            raise ValueError(f"transport-cc max size {max_size_bytes} bytes is below 32")
        self.base_seq = base_seq & 0xFFFF
        self.status_count = 0
        self.max_size_bytes = min(max_size_bytes, _MAX_PACKET_BYTES)
        self._size = 20  # RTCP header, sender/media SSRC, base seq ... fb pkt count
        self._chunks: list[int] = []
        self._syms: list[int] = []  # the pending chunk's first (up to 14) symbols
        self._pending = 0  # statuses in the pending chunk
        self._all_same = True
        self._has_large = False
        self._deltas = bytearray()
        self._reference_time: int | None = None  # in 64 ms units, not wrapped
        self._last_tick = 0

    @property
    def size_bytes(self) -> int:
        """The packet's size so far, padding included."""
        return (self._size + 3) & ~3

    def _can_add(self, symbol: int) -> bool:
        pending = self._pending
        if pending < 7:
            return True
        if pending < 14 and not self._has_large and symbol != 2:
            return True
        return pending < 0x1FFF and self._all_same and self._syms[0] == symbol

    def _add(self, symbol: int) -> None:
        syms = self._syms
        if self._pending < 14:
            syms.append(symbol)
        self._pending += 1
        if symbol != syms[0]:
            self._all_same = False
        if symbol == 2:
            self._has_large = True

    def _emit(self) -> None:
        syms = self._syms
        if self._all_same:
            self._chunks.append((syms[0] << 13) | self._pending)
            self._clear()
        elif self._pending == 14:
            chunk = 0x8000
            for i, symbol in enumerate(syms):
                chunk |= symbol << (13 - i)
            self._chunks.append(chunk)
            self._clear()
        else:
            chunk = 0xC000
            for i in range(7):
                chunk |= syms[i] << (12 - 2 * i)
            self._chunks.append(chunk)
            rest = syms[7 : self._pending]
            self._syms = rest
            self._pending = len(rest)
            self._all_same = all(s == rest[0] for s in rest)
            self._has_large = 2 in rest

    def _clear(self) -> None:
        self._syms = []
        self._pending = 0
        self._all_same = True
        self._has_large = False

    def _encode_last(self) -> int:
        syms = self._syms
        if self._all_same:
            return (syms[0] << 13) | self._pending
        if self._pending <= 7:
            chunk = 0xC000
            for i, symbol in enumerate(syms):
                chunk |= symbol << (12 - 2 * i)
            return chunk
        chunk = 0x8000
        for i, symbol in enumerate(syms):
            chunk |= symbol << (13 - i)
        return chunk

    def add_received(self, arrival_time_us: int) -> bool:
        """Add the next status as received at ``arrival_time_us``; False if it won't fit."""
        tick = arrival_time_us // 250
        reference = self._reference_time
        if reference is None:
            reference = arrival_time_us // 64000
            delta = tick - reference * 256
        else:
            delta = tick - self._last_tick
        if 0 <= delta <= 255:
            symbol = 1
            delta_size = 1
        elif -32768 <= delta <= 32767:
            symbol = 2
            delta_size = 2
        else:
            return False
        if self.status_count >= 0xFFFF:
            return False
        pending = self._pending
        syms = self._syms
        if (pending < 7 or (pending < 14 and not self._has_large and symbol != 2)
                or (pending < 0x1FFF and self._all_same and syms[0] == symbol)):
            grow = delta_size if pending else delta_size + 2  # _can_add, inlined
            if ((self._size + grow + 3) & ~3) > self.max_size_bytes:
                return False
            if pending < 14:  # _add, inlined
                syms.append(symbol)
            self._pending = pending + 1
            if symbol != syms[0]:
                self._all_same = False
            if symbol == 2:
                self._has_large = True
        else:
            grow = delta_size + 2
            if ((self._size + grow + 3) & ~3) > self.max_size_bytes:
                return False
            self._emit()
            self._add(symbol)
        self._size += grow
        self.status_count += 1
        if delta_size == 1:
            self._deltas.append(delta)
        else:
            self._deltas += delta.to_bytes(2, "big", signed=True)
        self._reference_time = reference
        self._last_tick = tick
        return True

    def add_missing(self, count: int) -> int:
        """Add up to ``count`` not-received statuses; returns how many fitted."""
        count = min(count, 0xFFFF - self.status_count)
        added = 0
        while added < count:
            pending = self._pending
            if not pending:
                if ((self._size + 2 + 3) & ~3) > self.max_size_bytes:
                    break
                run = min(count - added, 0x1FFF)
                self._size += 2
                self._syms = [0] * min(run, 14)
                self._pending = run
                self._all_same = True
                self._has_large = False
                added += run
            elif self._all_same and self._syms[0] == 0 and pending < 0x1FFF:
                take = min(count - added, 0x1FFF - pending)
                self._syms += [0] * min(take, 14 - len(self._syms))
                self._pending = pending + take
                added += take
            elif self._can_add(0):
                self._add(0)
                added += 1
            else:
                self._emit()  # full; its 2 bytes are already counted
        self.status_count += added
        return added

    def to_bytes(self, sender_ssrc: int, media_ssrc: int, fb_pkt_count: int) -> bytes:
        if not self.status_count:
            raise ValueError("transport-cc feedback needs at least one packet status")
        chunks = self._chunks + [self._encode_last()] if self._pending else self._chunks
        reference = (self._reference_time or 0) & 0xFFFFFF
        body = bytearray(_ssrc_pair(sender_ssrc, media_ssrc))
        body += struct.pack("!HHI", self.base_seq, self.status_count,
                            (reference << 8) | (fb_pkt_count & 0xFF))
        body += struct.pack(f"!{len(chunks)}H", *chunks)
        body += self._deltas
        pad = -len(body) & 3
        b0 = 0x80 | RTPFB_TRANSPORT_CC
        if pad:
            body += bytes(pad - 1)
            body.append(pad)
            b0 |= 0x20  # as libwebrtc: padding flagged with the P bit
        return _HDR.pack(b0, RTPFB, len(body) // 4) + bytes(body)


def build_transport_cc(
    *,
    sender_ssrc: int,
    media_ssrc: int,
    base_seq: int,
    fb_pkt_count: int,
    arrivals_us: Sequence[int | None],
) -> bytes:
    """One transport-cc feedback packet: ``arrivals_us[i]`` for seq ``base_seq + i``.

    None means not received. Raises ValueError when the statuses do not fit one packet
    (a receive delta beyond ±8.19 s, more than 65535 statuses, over 256 KiB).
    """
    encoder = TransportCcEncoder(base_seq, max_size_bytes=_MAX_PACKET_BYTES)
    i = 0
    n = len(arrivals_us)
    while i < n:
        arrival = arrivals_us[i]
        if arrival is None:
            j = i + 1
            while j < n and arrivals_us[j] is None:
                j += 1
            if encoder.add_missing(j - i) != j - i:
                raise ValueError(f"transport-cc feedback cannot hold {n} statuses")
            i = j
            continue
        if not encoder.add_received(arrival):
            raise ValueError(
                f"transport-cc status {i} (arrival {arrival} µs) does not fit one packet:"
                " delta beyond ±8.19 s or too many statuses"
            )
        i += 1
    return encoder.to_bytes(sender_ssrc, media_ssrc, fb_pkt_count)
