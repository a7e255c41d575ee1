"""Connection quality of a participant: a MOS from packet loss, jitter and RTT.

**Formula** (the simplified ITU-T G.107 E-model PingPlotter popularised, which LiveKit and
Twilio use in variants, with a heavier loss term)::

    latency_ms = rtt_ms / 2 + 2 * jitter_ms + 10
    Id = latency_ms / 40               if latency_ms < 160
         (latency_ms - 120) / 10       otherwise
    Ie = 4.5 * loss_percent
    R  = clamp(93.2 - Id - Ie, 0, 100)
    MOS = 1 + 0.035 R + 7e-6 R (R - 60) (100 - R)        (1.0 .. 4.5)

The usual simplification charges 2.5 R points per percent of loss, which is calibrated on
voice codecs with packet loss concealment; here a lost packet also costs video (a broken
frame, a keyframe request), so loss weighs 4.5 points per percent (G.107's own
``Ie,eff = 95 P / (P + Bpl)`` has a slope of 95 / Bpl, 3.8 for G.711 with PLC and 5.0 for
G.729A, at low random loss).

**Classes** of the smoothed MOS: ``excellent`` from 4.1, ``good`` from 3.5, ``poor`` below
(in G.107's user-satisfaction table R 82 is "satisfied", R 68 "many users
dissatisfied"). With a 30 ms effective latency that is under about 2.3 % loss excellent,
under about 5.4 % good::

    loss   0 %   1 %   2 %   3 %   5 %   10 %
    MOS   4.39  4.29  4.15  3.98  3.59  2.44
          exc.  exc.  exc.  good  good  poor

``lost``: no packets from the participant for ``lost_after_s`` (3 s); ``score`` is 1 then.

**Smoothing and hysteresis** (reports come about once a second):

- The R of the last three reports goes through a median, so one bad report (a burst, a
  stale RTT) is ignored, and the median through an exponential average with a 1.5 s time
  constant (about half the way per one-second report).
- A class boundary is crossed upward only at 0.05 MOS above it and downward only at 0.05
  below, so a MOS hovering at a boundary does not flap.
- A new scorer starts ``excellent`` as if two clean reports preceded (like LiveKit), so a
  bad first report is not enough either; so does one coming back from ``lost`` (the first
  report after an outage usually counts the outage's loss).

Steady 10 % loss on a clean connection: ``good`` after the second report, ``poor`` after
the third. When it stops: ``good`` after two reports, ``excellent`` after four.

**Aggregation** (:func:`participant_stats`): a participant's figure is the *worse* (lower
R) of its publisher uplink and its subscriber downlink. Either one failing is what the
participant experiences as "my connection" (others can't hear them, or they can't hear
others), and an average would hide a dead direction behind a healthy one. Streams of one
direction combine as packet-weighted loss, the highest jitter and the highest RTT; a
direction without an RTT (an uplink without RTCP XR) borrows the other direction's, since
both run over the same path.

Pure: no clock, no I/O. ``now`` is monotonic seconds from the shell.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace

EXCELLENT = "excellent"
GOOD = "good"
POOR = "poor"
LOST = "lost"
#: the classes a MOS maps to, worst first
_CLASSES = (POOR, GOOD, EXCELLENT)
EXCELLENT_MOS = 4.1
GOOD_MOS = 3.5
HYSTERESIS_MOS = 0.05
#: R points per percent of packet loss
LOSS_WEIGHT = 4.5
SMOOTHING_S = 1.5
LOST_AFTER_S = 3.0
#: the interval assumed before the first report
_REPORT_INTERVAL_S = 1.0
_MEDIAN_OF = 3


def _clamp(value: float, lo: float, hi: float) -> float:
    if not value > lo:  # also NaN
        return lo
    return hi if value > hi else value


def effective_latency_ms(jitter_s: float, rtt_s: float | None) -> float:
    """One-way delay as the E-model sees it: half the RTT, twice the jitter, 10 ms codec."""
    rtt_ms = _clamp(rtt_s or 0.0, 0.0, 60.0) * 1000.0
    return rtt_ms / 2.0 + 2.0 * _clamp(jitter_s, 0.0, 60.0) * 1000.0 + 10.0


def r_factor(loss_fraction: float, jitter_s: float, rtt_s: float | None, *,
             loss_weight: float = LOSS_WEIGHT) -> float:
    """The transmission rating R (0..100); out-of-range or NaN inputs are clamped."""
    latency_ms = effective_latency_ms(jitter_s, rtt_s)
    delay = latency_ms / 40.0 if latency_ms < 160.0 else (latency_ms - 120.0) / 10.0
    loss = loss_weight * _clamp(loss_fraction, 0.0, 1.0) * 100.0
    return _clamp(93.2 - delay - loss, 0.0, 100.0)


def mos_from_r(r: float) -> float:
    """G.107's R to MOS (1.0..4.5)."""
    if r <= 0.0:
        return 1.0
    if r >= 100.0:
        return 4.5
    return 1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)


def mos(loss_fraction: float, jitter_s: float, rtt_s: float | None) -> float:
    return mos_from_r(r_factor(loss_fraction, jitter_s, rtt_s))


def quality_for(mos_value: float) -> str:
    """The class of a MOS without hysteresis (``excellent``, ``good`` or ``poor``)."""
    if mos_value >= EXCELLENT_MOS:
        return EXCELLENT
    return GOOD if mos_value >= GOOD_MOS else POOR


_R_IDEAL = r_factor(0.0, 0.0, 0.0)


class QualityScorer:
    """Score and class of one participant, fed one report per period (about 1 s)."""

    __slots__ = ("_tau", "_lost_after_s", "_loss_weight", "_bounds", "_hysteresis",
                 "_window", "_r", "_at", "_heard_at", "score", "quality", "score_sum",
                 "samples")

    def __init__(self, *, smoothing_s: float = SMOOTHING_S, lost_after_s: float = LOST_AFTER_S,
                 loss_weight: float = LOSS_WEIGHT, excellent_mos: float = EXCELLENT_MOS,
                 good_mos: float = GOOD_MOS, hysteresis_mos: float = HYSTERESIS_MOS) -> None:
        if not (smoothing_s > 0 and lost_after_s > 0 and loss_weight >= 0
                and 1.0 < good_mos < excellent_mos <= 4.5 and hysteresis_mos >= 0):
            raise ValueError("need positive smoothing_s and lost_after_s, loss_weight >= 0, "
                             "1 < good_mos < excellent_mos <= 4.5 and hysteresis_mos >= 0")
        self._tau = smoothing_s
        self._lost_after_s = lost_after_s
        self._loss_weight = loss_weight
        self._bounds = (good_mos, excellent_mos)  # lowest MOS of _CLASSES[1:]
        self._hysteresis = hysteresis_mos
        self._window: deque[float] = deque(maxlen=_MEDIAN_OF)  # R of the last reports
        self._r = _R_IDEAL  # smoothed R
        self._at: float | None = None  # time of the last report with packets
        self._heard_at: float | None = None  # the same, or of the first report
        self.score = 0.0
        self.quality = EXCELLENT
        #: every score :meth:`update` gave, summed, and how many (a session's average)
        self.score_sum = 0.0
        self.samples = 0
        self._start()

    def _start(self) -> None:
        # a prior of two clean reports: one bad first report does not flip the class
        self._window.clear()
        self._window.extend((_R_IDEAL, _R_IDEAL))
        self._r = _R_IDEAL
        self._at = None
        self.score = round(mos_from_r(_R_IDEAL), 2)
        self.quality = EXCELLENT

    def update(self, loss_fraction: float, jitter_s: float, rtt_s: float | None,
               now: float, receiving: bool = True) -> tuple[float, str]:
        """Feed one period's stats; returns ``(score, quality)``.

        ``receiving=False``: no packets arrived from the participant in the period (the
        other figures are then ignored). Pass True for a muted participant: silence that
        was asked for is not a lost connection.
        """
        score, quality = self._update(loss_fraction, jitter_s, rtt_s, now, receiving)
        self.score_sum += score
        self.samples += 1
        return score, quality

    def _update(self, loss_fraction: float, jitter_s: float, rtt_s: float | None,
                now: float, receiving: bool) -> tuple[float, str]:
        if not receiving:
            if self._heard_at is None:
                self._heard_at = now
            if self.quality != LOST and now - self._heard_at >= self._lost_after_s:
                self.quality = LOST
                self.score = 1.0
            return self.score, self.quality
        self._heard_at = now
        if self.quality == LOST:
            self._start()
        window = self._window
        window.append(r_factor(loss_fraction, jitter_s, rtt_s, loss_weight=self._loss_weight))
        median = sorted(window)[len(window) // 2]  # 3 reports: _start seeds two
        dt = _REPORT_INTERVAL_S if self._at is None else max(now - self._at, 0.0)
        r = self._r + (1.0 - math.exp(-dt / self._tau)) * (median - self._r)
        self._r = r
        self._at = now
        mos_value = mos_from_r(r)
        self.score = round(mos_value, 2)
        self.quality = self._classify(mos_value)
        return self.score, self.quality

    def _classify(self, mos_value: float) -> str:
        level = _CLASSES.index(self.quality)
        bounds, h = self._bounds, self._hysteresis
        while level < len(bounds) and mos_value >= bounds[level] + h:
            level += 1
        while level > 0 and mos_value < bounds[level - 1] - h:
            level -= 1
        return _CLASSES[level]


@dataclass(frozen=True, slots=True)
class LinkStats:
    """One stream's (or one direction's) figures for a period.

    ``loss_fraction`` 0..1 (an RTCP report block's fraction lost / 256, or our own
    receive stats), ``jitter_s`` interarrival jitter in seconds (RTP units / clock rate),
    ``rtt_s`` None when unknown, ``packets`` expected in the period (0 when unknown).
    """

    loss_fraction: float
    jitter_s: float
    rtt_s: float | None = None
    packets: int = 0


def combine_streams(streams: Iterable[LinkStats]) -> LinkStats | None:
    """One direction's streams as one: packet-weighted loss, highest jitter and RTT."""
    items = list(streams)
    if not items:
        return None
    total = sum(max(s.packets, 0) for s in items)
    if total > 0:
        loss = sum(_clamp(s.loss_fraction, 0.0, 1.0) * max(s.packets, 0) for s in items) / total
    else:
        loss = sum(_clamp(s.loss_fraction, 0.0, 1.0) for s in items) / len(items)
    rtts = [s.rtt_s for s in items if s.rtt_s is not None]
    return LinkStats(loss_fraction=loss, jitter_s=max(s.jitter_s for s in items),
                     rtt_s=max(rtts) if rtts else None, packets=total)


def participant_stats(uplink: Iterable[LinkStats],
                      downlink: Iterable[LinkStats]) -> LinkStats | None:
    """The worse (lower R) of a participant's uplink and downlink; None without streams.

    A direction without an RTT borrows the other's. Ties go to the uplink.
    """
    up = combine_streams(uplink)
    down = combine_streams(downlink)
    if up is None or down is None:
        return down if up is None else up
    if up.rtt_s is None:
        up = replace(up, rtt_s=down.rtt_s)
    elif down.rtt_s is None:
        down = replace(down, rtt_s=up.rtt_s)
    r_up = r_factor(up.loss_fraction, up.jitter_s, up.rtt_s)
    r_down = r_factor(down.loss_fraction, down.jitter_s, down.rtt_s)
    return up if r_up <= r_down else down
