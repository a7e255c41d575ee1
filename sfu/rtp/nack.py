"""NACK generation toward a publisher (RFC 4585 generic NACK), for one incoming stream.

:class:`NackGenerator` watches the extended sequence numbers that arrive, remembers the
ones missing, and says which to NACK now: the first NACK for a missing packet goes out
after a short reorder delay (a packet that is merely late should not be requested), then
it is repeated every ``max(rtt, 20 ms)`` until it arrives, ``max_retries`` NACKs were sent,
or it is ``max_age_s`` old. Pure: times are monotonic seconds passed in; the shell calls
:meth:`NackGenerator.due` from one timer (:meth:`NackGenerator.next_due_at` says when)
and packs the result with :func:`sfu.rtp.rtcp.build_nack`.
"""

from __future__ import annotations

REORDER_DELAY_S = 0.005
MIN_RETRY_INTERVAL_S = 0.02
MAX_RETRIES = 10
MAX_MISSING = 1000
MAX_AGE_S = 1.0
_SLACK_S = 1e-9  # float rounding between next_due_at() and the timer calling due()


class NackGenerator:
    """Missing-packet tracker for one incoming SSRC.

    Counters: ``nacks_sent`` (seqs returned by :meth:`due`, repeats included),
    ``recovered`` (missing packets that arrived later), ``given_up`` (missing packets
    abandoned after ``max_retries``, ``max_age_s``, or evicted beyond ``max_missing``).
    A jump of more than ``max_missing`` packets is treated as a discontinuity (the stream
    restarted): nothing before it is requested.
    """

    __slots__ = ("reorder_delay_s", "min_retry_interval_s", "max_retries", "max_missing",
                 "max_age_s", "_highest", "_missing", "nacks_sent", "recovered", "given_up")

    def __init__(
        self,
        *,
        reorder_delay_s: float = REORDER_DELAY_S,
        min_retry_interval_s: float = MIN_RETRY_INTERVAL_S,
        max_retries: int = MAX_RETRIES,
        max_missing: int = MAX_MISSING,
        max_age_s: float = MAX_AGE_S,
    ) -> None:
        if max_retries < 1 or max_missing < 1:
            raise ValueError(
                f"NACK max_retries {max_retries} and max_missing {max_missing} must be >= 1"
            )
        self.reorder_delay_s = reorder_delay_s
        self.min_retry_interval_s = min_retry_interval_s
        self.max_retries = max_retries
        self.max_missing = max_missing
        self.max_age_s = max_age_s
        self._highest: int | None = None
        # ext seq -> [detected_at_s, last_nack_at_s, nacks]; insertion order is seq order
        self._missing: dict[int, list[float]] = {}
        self.nacks_sent = 0
        self.recovered = 0
        self.given_up = 0

    @property
    def missing(self) -> list[int]:
        """Extended seqs currently missing, ascending."""
        return list(self._missing)

    @property
    def highest(self) -> int | None:
        return self._highest

    def on_packet(self, ext_seq: int, now_s: float) -> None:
        """A packet (original or retransmission, already unwrapped) arrived at ``now_s``."""
        highest = self._highest
        if highest is not None and ext_seq == highest + 1:
            self._highest = ext_seq
            return
        if highest is None:
            self._highest = ext_seq
            return
        if ext_seq <= highest:
            if self._missing.pop(ext_seq, None) is not None:
                self.recovered += 1
            return
        self._highest = ext_seq
        missing = self._missing
        gap = ext_seq - highest - 1
        if gap > self.max_missing:
            self.given_up += len(missing)
            missing.clear()
            return
        for seq in range(highest + 1, ext_seq):
            missing[seq] = [now_s, 0.0, 0]
        excess = len(missing) - self.max_missing
        if excess > 0:
            self.given_up += excess
            for seq in list(missing)[:excess]:
                del missing[seq]

    def due(self, now_s: float, rtt_s: float) -> list[int]:
        """16-bit seqs to NACK now (ascending in extended order); marks them as sent."""
        missing = self._missing
        if not missing:
            return []
        retry_s = rtt_s if rtt_s > self.min_retry_interval_s else self.min_retry_interval_s
        reorder_s = self.reorder_delay_s
        max_age_s = self.max_age_s
        max_retries = self.max_retries
        due_s = now_s + _SLACK_S  # a timer armed at next_due_at() finds its work due
        out: list[int] = []
        expired: list[int] = []
        for seq, entry in missing.items():
            detected_at, last_at, nacks = entry
            if detected_at + max_age_s <= due_s:
                expired.append(seq)
            elif nacks == 0:
                if detected_at + reorder_s <= due_s:
                    entry[1] = now_s
                    entry[2] = 1
                    out.append(seq & 0xFFFF)
            elif last_at + retry_s <= due_s:
                if nacks >= max_retries:
                    expired.append(seq)
                else:
                    entry[1] = now_s
                    entry[2] = nacks + 1
                    out.append(seq & 0xFFFF)
        for seq in expired:
            del missing[seq]
        self.given_up += len(expired)
        self.nacks_sent += len(out)
        return out

    def next_due_at(self, rtt_s: float) -> float | None:
        """When :meth:`due` will next have something to do; None while nothing is missing."""
        if not self._missing:
            return None
        retry_s = rtt_s if rtt_s > self.min_retry_interval_s else self.min_retry_interval_s
        best = float("inf")
        for detected_at, last_at, nacks in self._missing.values():
            at = detected_at + self.reorder_delay_s if nacks == 0 else last_at + retry_s
            expire = detected_at + self.max_age_s
            if expire < at:
                at = expire
            if at < best:
                best = at
        return best

    def reset(self) -> None:
        """Forget everything (e.g. the publisher's SSRC changed)."""
        self._highest = None
        self._missing.clear()
