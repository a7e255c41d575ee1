"""Per API key rate limiting: one token bucket per key, taking ``now``.

Keys are the API keys of *verified* tokens (an HS256 token's ``iss``, an RS256/ES256 token's
``kid``), so the number of buckets is bounded by the server's configuration and a forged token
cannot spend a real key's budget.
"""

from __future__ import annotations

import math


class KeyedRateLimiter:
    """``rate_per_s`` requests per second per key, up to ``burst`` at once."""

    __slots__ = ("rate_per_s", "burst", "_buckets")

    def __init__(self, rate_per_s: float, burst: int) -> None:
        if not math.isfinite(rate_per_s) or rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last update)

    def take(self, key: str, now: float) -> float:
        """Spend one request of ``key``: 0.0 when allowed, else the seconds until it would be."""
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate_per_s)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate_per_s
