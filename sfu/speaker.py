"""Active speaker detection from the RFC 6464 audio level of each participant's audio.

Input: the ``urn:ietf:params:rtp-hdrext:ssrc-audio-level`` extension a sender puts on each
audio packet: a 7-bit level in -dBov (0 = full scale, 127 = digital silence) and a V bit.
The V (voice activity) bit is ignored: aiortc always sends 0 and browsers differ in when
they set it, while the level is computed the same way everywhere (RFC 6465 appendix A).

Model, per participant:

- **Level scale.** ``level = 1 - dBov / 80`` clamped to 0..1: linear in decibels, so
  speech (-20..-40 dBov) lands at 0.5..0.75 and everything at or below -80 dBov (room
  noise after noise suppression, silence) is 0. Averaging in decibels rather than in
  amplitude is what keeps a single loud packet from dominating the average.
- **Smoothing.** An exponential average of that level with a time constant of 0.1 s
  (``smoothing_s``). Each packet's level counts for the time since the previous packet, so
  any packetisation (10-60 ms) or caller-side sampling works. When packets stop (DTX,
  mute, loss) the average is held for 0.1 s (``hold_s``) and then decays toward silence
  with the same time constant; the packet after such a gap counts as one 20 ms frame, so
  a click after a pause does not jump the level up.
- **Hysteresis.** A participant becomes *active* once the smoothed level has stayed above
  the activation threshold (-50 dBov, level 0.375) for 0.1 s (``min_active_s``), and
  *inactive* once it has stayed below the lower deactivation threshold (-60 dBov, level
  0.25) for 0.2 s (``hangover_s``). The 10 dB gap keeps noise near either threshold
  from flapping; the minimum duration rejects clicks (a burst of up to 100 ms at full
  scale never activates); the hangover bridges pauses between words. A participant
  whose packets stop decays below the deactivation threshold like one sending silence.

Why these numbers: the end-to-end requirement is that ``speakers_changed`` follows a
change within 1 s when the shell calls :meth:`ActiveSpeakers.update` every
``update_interval_s`` (0.5 s). A tone starting after silence is detected after 0.14-0.3 s
(crossing + minimum duration; 0.16 s at -10 dBov, 0.3 s at -45 dBov), a tone stopping
after 0.26-0.34 s (decay to -60 dBov + hangover), leaving the rest of the second for the
update period and the network. Calling :meth:`update` more often (it is cheap) makes
changes faster; the emitted messages stay at most one per ``update_interval_s``.

Output of :meth:`ActiveSpeakers.update`: the ``speakers`` list of ``speakers_changed``,
active speakers loudest first, then -- once -- those that stopped since the previous
message with ``active: false``. It is emitted only when the set of active speakers changed
or one got louder by at least ``level_step`` (0.1) than last reported (its level ramping
up after the start, mostly). A falling level is not news on its own: it is mostly a
speaker about to stop, and a message about it would hold back the stop by the rate limit.
A steady speaker produces no messages.

Pure: no clock, no I/O. ``now`` is monotonic seconds from the shell.
"""

from __future__ import annotations

import math
from typing import Any

DEFAULT_UPDATE_INTERVAL_S = 0.5
#: dBov at and below which the level is 0 (RFC 6464 silence is 127).
FLOOR_DBOV = 80
#: a packet after a gap (and a participant's first packet) counts as one Opus frame
FRAME_S = 0.02


def level_from_dbov(level_dbov: int) -> float:
    """The 0..1 level of an RFC 6464 level in -dBov (the V bit, if passed, is ignored)."""
    return max(0.0, 1.0 - (level_dbov & 0x7F) / FLOOR_DBOV)


_LEVELS = tuple(level_from_dbov(d) for d in range(128))


class _Speaker:
    __slots__ = ("level", "last_at", "active", "since")

    def __init__(self, now: float) -> None:
        self.level = 0.0  # smoothed level, 0..1, as of last_at
        self.last_at = now  # when the last packet was observed
        self.active = False
        # when the level crossed the threshold that would change ``active`` (the activation
        # threshold while inactive, the deactivation one while active); None: not crossed
        self.since: float | None = None


class ActiveSpeakers:
    """Active speakers of one room (see the module docstring for the model)."""

    __slots__ = ("update_interval_s", "_on", "_off", "_tau", "_hold_s", "_min_active_s",
                 "_hangover_s", "_level_step", "_speakers", "_reported", "_reported_order",
                 "_next_emit_at")

    def __init__(self, update_interval_s: float = DEFAULT_UPDATE_INTERVAL_S, *,
                 activate_dbov: int = 50, deactivate_dbov: int = 60,
                 smoothing_s: float = 0.1, hold_s: float = 0.1, min_active_s: float = 0.1,
                 hangover_s: float = 0.2, level_step: float = 0.1) -> None:
        if not update_interval_s > 0:
            raise ValueError(f"update_interval_s must be positive, not {update_interval_s}")
        if not 0 <= activate_dbov < deactivate_dbov < FLOOR_DBOV:
            raise ValueError(f"need 0 <= activate_dbov < deactivate_dbov < {FLOOR_DBOV}, "
                             f"not {activate_dbov} and {deactivate_dbov}")
        if not (smoothing_s > 0 and hold_s >= FRAME_S and min_active_s >= 0
                and hangover_s >= 0 and level_step > 0):
            raise ValueError("smoothing_s and level_step must be positive, hold_s at least "
                             f"{FRAME_S}, min_active_s and hangover_s not negative")
        self.update_interval_s = update_interval_s
        self._on = level_from_dbov(activate_dbov)
        self._off = level_from_dbov(deactivate_dbov)
        self._tau = smoothing_s
        self._hold_s = hold_s
        self._min_active_s = min_active_s
        self._hangover_s = hangover_s
        self._level_step = level_step
        self._speakers: dict[str, _Speaker] = {}
        self._reported: dict[str, float] = {}  # active speakers last emitted: sid -> level
        self._reported_order: list[str] = []
        self._next_emit_at = -math.inf

    # -- inputs ------------------------------------------------------------------------
    def observe(self, participant_sid: str, level_dbov: int, now: float) -> None:
        """One audio packet's level (0..127 -dBov; the raw extension byte works too)."""
        x = _LEVELS[level_dbov & 0x7F]
        s = self._speakers.get(participant_sid)
        if s is None:
            s = self._speakers[participant_sid] = _Speaker(now)
            dt = FRAME_S
        else:
            dt = now - s.last_at
            if dt > self._hold_s:
                level = s.level
                s.level = decayed = level * math.exp((self._hold_s - dt) / self._tau)
                if s.active and s.since is None and decayed < self._off:
                    s.since = self._crossed_at(s, level)
                dt = FRAME_S
            elif dt < 0.0:  # not monotonic: the packet gets no weight, the clock stays
                dt = 0.0
                now = s.last_at
        level = s.level + dt / (self._tau + dt) * (x - s.level)
        s.level = level
        s.last_at = now
        if s.active:
            if level < self._off:
                if s.since is None:
                    s.since = now
            else:
                s.since = None
        elif level > self._on:
            if s.since is None:
                s.since = now
        else:
            s.since = None

    def remove(self, participant_sid: str) -> None:
        """Forget a participant; if it was reported active, the next update says it stopped."""
        self._speakers.pop(participant_sid, None)

    # -- outputs -----------------------------------------------------------------------
    def update(self, now: float) -> list[dict[str, Any]] | None:
        """The new ``speakers`` list if it changed and may be sent now, else None.

        Call it every ``update_interval_s`` or more often: state changes are evaluated on
        every call, messages are rate-limited to one per ``update_interval_s``.
        """
        hold_s, tau = self._hold_s, self._tau
        reported = self._reported
        ranked: list[tuple[float, str]] = []
        stopped: list[tuple[float, str]] = []
        for sid, s in self._speakers.items():
            level = s.level
            gap = now - s.last_at
            if gap > hold_s:  # no packets lately: decaying toward silence
                decayed = level * math.exp((hold_s - gap) / tau)
                if s.active:
                    if s.since is None and decayed < self._off:
                        s.since = self._crossed_at(s, level)
                elif s.since is not None and decayed <= self._on:
                    s.since = None
                level = decayed
            since = s.since
            if since is not None:
                if s.active:
                    if now - since >= self._hangover_s:
                        s.active = False
                        s.since = None
                elif now - since >= self._min_active_s:
                    s.active = True
                    s.since = None
            if s.active:
                ranked.append((level, sid))
            elif sid in reported:
                stopped.append((level, sid))
        if now < self._next_emit_at:
            return None
        # news: a speaker started or stopped, or got louder by level_step. Not news: a
        # falling level (mostly a speaker about to stop, reported when it does) or an
        # order swap among levels within level_step.
        if not stopped and len(ranked) == len(reported) and all(
                sid in reported and level - reported[sid] < self._level_step
                for level, sid in ranked):
            return None
        ranked.sort(reverse=True)
        order = [sid for _, sid in ranked]
        known = {sid for _, sid in stopped}
        stopped.extend((0.0, sid) for sid in self._reported_order
                       if sid not in known and sid not in self._speakers)  # removed
        stopped.sort(reverse=True)
        speakers = [{"participant_sid": sid, "level": round(level, 2), "active": True}
                    for level, sid in ranked]
        speakers.extend({"participant_sid": sid, "level": round(level, 2), "active": False}
                        for level, sid in stopped)
        self._reported = {sid: level for level, sid in ranked}
        self._reported_order = order
        self._next_emit_at = now + self.update_interval_s
        return speakers

    def snapshot(self) -> list[dict[str, Any]]:
        """The active speakers as last emitted (for a participant that just joined)."""
        return [{"participant_sid": sid, "level": round(self._reported[sid], 2), "active": True}
                for sid in self._reported_order]

    def _crossed_at(self, s: _Speaker, level: float) -> float:
        """When ``level`` (at ``s.last_at``), held then decaying, fell below deactivation."""
        if level <= self._off:
            return s.last_at
        return s.last_at + self._hold_s + self._tau * math.log(level / self._off)
