"""NTP timestamps as used by RTCP (RFC 3550 4, RFC 5905 6).

A full NTP timestamp is a 64-bit int: seconds since 1900-01-01 in the high 32 bits, the
fraction of a second in the low 32. RTCP's LSR/DLSR use the "middle 32 bits" (16.16
fixed point seconds, "NTP short"). Wall-clock input (``t_s``, Unix seconds) comes from
the caller's shell; nothing here reads a clock.
"""

from __future__ import annotations

import math

NTP_UNIX_OFFSET_S = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
_ERA_S = 1 << 32


def ntp_from_unix(t_s: float) -> int:
    """64-bit NTP timestamp for a Unix time in seconds (wraps at the 2036 era boundary)."""
    whole_s = math.floor(t_s)
    frac = int((t_s - whole_s) * 4294967296.0)
    return (((whole_s + NTP_UNIX_OFFSET_S) & 0xFFFFFFFF) << 32) | (frac & 0xFFFFFFFF)


def unix_from_ntp(ntp: int) -> float:
    """Unix seconds for a 64-bit NTP timestamp.

    RFC 4330 3: a timestamp whose seconds have the top bit clear is in era 1 (from
    2036-02-07), so the mapping covers 1968..2104.
    """
    seconds = (ntp >> 32) & 0xFFFFFFFF
    if not seconds & 0x80000000:
        seconds += _ERA_S
    return seconds - NTP_UNIX_OFFSET_S + (ntp & 0xFFFFFFFF) / 4294967296.0


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp: RTCP's LSR (16.16 seconds)."""
    return (ntp >> 16) & 0xFFFFFFFF


def ntp_short_from_seconds(duration_s: float) -> int:
    """A duration as a 32-bit 16.16 fixed-point value (DLSR), clamped to 0..2^32-1."""
    value = int(duration_s * 65536.0)
    if value < 0:
        return 0
    return min(value, 0xFFFFFFFF)


def seconds_from_ntp_short(value: int) -> float:
    """A 16.16 fixed-point duration (DLSR, or a difference of middle-32 values) in s."""
    return value / 65536.0
