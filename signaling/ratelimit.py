"""Per-connection message rate limiting: a token bucket that takes ``now``."""

from __future__ import annotations


class TokenBucket:
    """``rate_per_s`` tokens refill per second up to ``burst``; each message costs one."""

    __slots__ = ("rate_per_s", "burst", "_tokens", "_last", "denied_in_a_row")

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._last = now
        self.denied_in_a_row = 0

    def allow(self, now: float) -> bool:
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate_per_s)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.denied_in_a_row = 0
            return True
        self.denied_in_a_row += 1
        return False
