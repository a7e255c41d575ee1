"""Webhooks, the pure part: Standard Webhooks signatures, the retry schedule, and which
outbox rows to send now.

- :func:`sign` / :func:`headers`: ``webhook-id``, ``webhook-timestamp`` (the time of this
  attempt) and ``webhook-signature`` = ``v1,`` + base64 HMAC-SHA256 over
  ``{id}.{timestamp}.{body}`` keyed with the base64-decoded ``whsec_`` secret.
- :class:`RetryPolicy`: exponential backoff with jitter, until ``max_age_s`` after the
  event; then the delivery is failed (listed and replayable through the REST API).
- :func:`plan`: the outbox's head rows — the oldest pending delivery of each
  ``(endpoint, room)`` — are all that may be sent; a head not yet due, or already in flight,
  holds back its room's later events (in order per room and endpoint) and nobody else's.

The shell (:mod:`sfu.webhook_sender`) does the HTTP and the store writes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Delivery", "Outcome", "RetryPolicy", "SecretError", "headers", "outcome",
           "parse_secret", "plan", "sign"]

SECRET_PREFIX = "whsec_"


class SecretError(ValueError):
    """A webhook secret is not ``whsec_`` + base64 of at least 16 bytes."""


def parse_secret(text: str) -> bytes:
    """The HMAC key of a ``whsec_…`` secret (the prefix is optional, as in the spec's
    libraries)."""
    raw = text.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError("must be whsec_ followed by base64") from None
    if len(key) < 16:
        raise SecretError(f"decodes to {len(key)} bytes; at least 16 (24 to 64 recommended)")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, msg_id, timestamp, body),
            "content-type": "application/json"}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_s: float = 1.0
    max_s: float = 600.0
    max_age_s: float = 86400.0

    def delay_s(self, attempts: int, rng: random.Random) -> float:
        """Wait after the ``attempts``-th failed attempt: doubling from ``initial_s`` up to
        ``max_s``, scaled by a random factor in [0.5, 1) so endpoints coming back are not
        hit by every room at once."""
        base = min(self.max_s, self.initial_s * 2.0 ** min(attempts - 1, 62))
        return base * (0.5 + rng.random() / 2)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row with its event."""

    id: int
    endpoint: str
    room: str
    event_id: str
    event_type: str
    body: bytes
    attempts: int
    created_at: float
    next_attempt_at: float

    @property
    def key(self) -> tuple[str, str]:
        return (self.endpoint, self.room)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an attempt leads to: ``delivered``, ``retry`` at ``next_attempt_at``, or
    ``failed`` (given up after ``max_age_s``)."""

    status: str
    next_attempt_at: float | None = None


def outcome(d: Delivery, ok: bool, now: float, policy: RetryPolicy,
            rng: random.Random) -> Outcome:
    if ok:
        return Outcome("delivered")
    attempts = d.attempts + 1
    at = now + policy.delay_s(attempts, rng)
    if at - d.created_at > policy.max_age_s:
        return Outcome("failed")
    return Outcome("retry", at)


def plan(heads: Iterable[Delivery], in_flight: Iterable[tuple[str, str]], now: float, *,
         max_in_flight: int, busy: Mapping[str, int]) -> tuple[list[Delivery], float | None]:
    """The heads to send now (at most ``max_in_flight`` per endpoint, counting ``busy``),
    and when the earliest head not yet due will be (None: none waits)."""
    flying = set(in_flight)
    counts = dict(busy)
    due: list[Delivery] = []
    wake: float | None = None
    for d in sorted(heads, key=lambda h: h.id):
        if d.key in flying:
            continue
        if d.next_attempt_at > now:
            wake = d.next_attempt_at if wake is None else min(wake, d.next_attempt_at)
            continue
        if counts.get(d.endpoint, 0) >= max_in_flight:
            continue
        counts[d.endpoint] = counts.get(d.endpoint, 0) + 1
        due.append(d)
    return due, wake
