"""H.264 RTP payloads (RFC 6184): NAL unit types and keyframe detection, no decoding.

Packetizations: single NAL unit (types 1-23), STAP-A (24) and FU-A (28) (what WebRTC's
packetization-mode 0 and 1 use), and the interleaved-mode STAP-B (25) and FU-B (29).
MTAP16/MTAP24 (26/27) are rejected as unsupported. A packet starts a keyframe when it
carries an IDR slice (5) or a sequence parameter set (7) — libwebrtc sends SPS and PPS
in a STAP-A ahead of the IDR — or is the first fragment of a fragmented IDR/SPS.
Malformed payloads raise :class:`ValueError`.
"""

from __future__ import annotations

from sfu.rtp.header import Buffer

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
STAP_A = 24
STAP_B = 25
MTAP16 = 26
MTAP24 = 27
FU_A = 28
FU_B = 29

_KEY_TYPES = frozenset((NAL_IDR, NAL_SPS))
# where the first aggregation unit starts (after the header, and STAP-B's DON)
_AGGREGATES = {STAP_A: 1, STAP_B: 3}
_NAMES = {STAP_A: "STAP-A", STAP_B: "STAP-B"}


def _aggregated_types(payload: Buffer, nal_type: int) -> list[int]:
    pos = _AGGREGATES[nal_type]
    n = len(payload)
    if pos > n:
        raise ValueError(f"H.264 {_NAMES[nal_type]} truncated: {n} bytes, the header needs {pos}")
    types: list[int] = []
    while pos < n:
        if pos + 2 > n:
            raise ValueError(
                f"H.264 {_NAMES[nal_type]} unit size truncated at byte {pos} of {n}"
            )
        size = (payload[pos] << 8) | payload[pos + 1]
        if size == 0:
            raise ValueError(
                f"H.264 {_NAMES[nal_type]} unit at byte {pos} has size 0"
            )
        end = pos + 2 + size
        if end > n:
            raise ValueError(
                f"H.264 {_NAMES[nal_type]} unit of {size} bytes at byte {pos} overruns the"
                f" {n}-byte payload"
            )
        types.append(payload[pos + 2] & 0x1F)
        pos = end
    if not types:
        raise ValueError(f"H.264 {_NAMES[nal_type]} aggregates no NAL unit")
    return types


def _bad_type(nal_type: int) -> ValueError:
    if nal_type == MTAP16 or nal_type == MTAP24:
        return ValueError(f"H.264 MTAP (NAL unit type {nal_type}) is not supported")
    return ValueError(f"H.264 NAL unit type {nal_type} is not valid in RTP")


def nal_types(payload: Buffer) -> list[int]:
    """The types of the NAL units in this payload, in order.

    A fragment (FU-A/FU-B) yields the type of the fragmented NAL unit, for every fragment;
    aggregates yield one type per aggregated unit.
    """
    if not payload:
        raise ValueError("H.264 payload is empty")
    nal_type = payload[0] & 0x1F
    if 0 < nal_type < 24:
        return [nal_type]
    if nal_type == FU_A or nal_type == FU_B:
        if len(payload) < 2:
            raise ValueError("H.264 FU truncated: no FU header")
        return [payload[1] & 0x1F]
    if nal_type in _AGGREGATES:
        return _aggregated_types(payload, nal_type)
    raise _bad_type(nal_type)


def is_keyframe(payload: Buffer) -> bool:
    """True if the packet starts a keyframe: IDR or SPS, single, aggregated or 1st fragment."""
    if not payload:
        raise ValueError("H.264 payload is empty")
    nal_type = payload[0] & 0x1F
    if 0 < nal_type < 24:
        return nal_type == NAL_IDR or nal_type == NAL_SPS
    if nal_type == FU_A or nal_type == FU_B:
        if len(payload) < 2:
            raise ValueError("H.264 FU truncated: no FU header")
        fu = payload[1]
        return fu & 0x80 != 0 and (fu & 0x1F) in _KEY_TYPES
    if nal_type in _AGGREGATES:
        return not _KEY_TYPES.isdisjoint(_aggregated_types(payload, nal_type))
    raise _bad_type(nal_type)


def fu_start(payload: Buffer) -> bool:
    """True for a single NAL, an aggregate, or the first fragment of an FU."""
    if not payload:
        raise ValueError("H.264 payload is empty")
    nal_type = payload[0] & 0x1F
    if nal_type == FU_A or nal_type == FU_B:
        if len(payload) < 2:
            raise ValueError("H.264 FU truncated: no FU header")
        return payload[1] & 0x80 != 0
    return True
