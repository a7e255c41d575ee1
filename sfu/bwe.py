"""Send-side bandwidth estimation for one subscriber transport, in the manner of GCC.

The SFU stamps every packet it sends to a subscriber with a transport-wide sequence number
(the transport-cc header extension) and tells :meth:`SendSideBwe.on_sent` the number, the
packet's size and the send time. The subscriber answers with transport-cc feedback (RTCP
RTPFB fmt 15) saying which numbers arrived and when, by its own clock;
:meth:`SendSideBwe.on_feedback` turns that into an estimate of the downlink capacity,
:attr:`SendSideBwe.estimate_bps`, for the layer allocator to spend. The model follows Google
Congestion Control (draft-ietf-rmcat-gcc-02) as libwebrtc implements it today (send-side,
trendline filter rather than the draft's Kalman filter); the code is written from the
description below, not taken from libwebrtc.

Delay-based estimate (what a growing queue on the path says)
    * **Inter-arrival groups.** Packets reported received are taken in arrival order and
      grouped into bursts: a packet joins the current group if it was sent within 5 ms of
      the group's first packet, or if it arrived within 5 ms of the group's last packet
      *and* its arrival gap is smaller than its send gap (it was queued behind the group;
      a burst lasts at most 100 ms). Packets sent before the current group's first packet
      are reordered and skipped. For two consecutive groups the delay variation is
      ``d = (arrival gap) - (send gap)`` between their last packets; a gap that jumps by
      more than 3 s (the receiver's clock was reset) restarts the grouping.
    * **Trendline filter.** ``d`` is accumulated (the queueing delay, up to a constant),
      exponentially smoothed (factor 0.9), and the last 20 (arrival time, smoothed delay)
      points are fitted by least squares. The slope is the delay gradient: > 0 when the
      queue grows.
    * **Overuse detector.** ``m = min(groups seen, 60) * slope * 4`` is compared with an
      adaptive threshold ``γ`` (ms; starts at 12.5, kept in 6..600): ``m > γ`` sustained for
      more than 10 ms over at least two groups with a non-falling slope is *overuse*,
      ``m < -γ`` is *underuse*, anything else *normal*. ``γ`` follows ``|m|`` slowly upwards
      (gain 0.0087/ms) and faster downwards (0.039/ms), ignoring spikes more than 15 ms
      above it, so that the detector neither starves against loss-based flows nor fires on
      jitter.
    * **AIMD rate control.** Overuse → *decrease*: the rate becomes 0.85 × the acknowledged
      bitrate (at most once per RTT, clamped to 10..200 ms), and the acknowledged rate is
      folded into a *link capacity* estimate (an average with a deviation). Normal after
      hold → *increase*: multiplicatively, 8 %/s, while the link capacity is unknown (or
      the acknowledged rate left its ±3σ band, which forgets it); additively, about one
      packet per response time (RTT + 100 ms), near it. Underuse → *hold*: the queue is
      draining, wait. An increase never takes the rate above 1.5 × the acknowledged
      bitrate + 10 kbps (unprobed capacity is unknown). While the link capacity is unknown
      an increase also lifts the rate at once to the acknowledged bitrate: what was
      delivered with no sign of queueing is known to fit (this replaces libwebrtc's
      one-off initialisation from the measured throughput and its probing).
    * **Acknowledged bitrate.** Bytes of the packets the subscriber reports received whose
      arrival time (its clock) is in the last 500 ms of arrivals, divided by 500 ms;
      unknown until arrivals span that long, and forgotten when no packet was reported
      received for a second.

Loss-based bound (what loss says, for paths that drop before they queue)
    Statuses are counted over windows of at least 20 packets and 0.5 s (a packet first
    reported lost and later received counts as received). With the window's loss
    fraction ``p``: ``p < 2 %`` raises the bound by 8 %/s and to at least the acknowledged
    bitrate; ``2 % ≤ p ≤ 10 %`` holds it where it is; ``p > 10 %`` lowers it to
    ``min(bound, estimate) × (1 - 0.5 p)``, at most once per 300 ms + RTT. The bound starts
    at ``max_bps``: no loss, no limit. Two departures from libwebrtc's legacy controller:

    * *Hold keeps the bound*, rather than copying the current estimate into it, so that a
      dip of the delay-based estimate during steady 2-10 % loss does not become permanent.
    * *A decrease stops at 0.85 × the acknowledged bitrate.* When the sender follows the
      estimate this never binds (``1 - 0.5 p > 0.85 (1 - p)`` for every ``p``), but when it
      overshoots on its own — the SFU forwards what publishers send, whatever the estimate —
      the loss is its own doing and the path evidently carries what got through: without
      the floor an open-loop overshoot drives the estimate to ``min_bps``.

Final estimate
    ``min(delay-based, loss-based)`` clamped to ``[min_bps, max_bps]``. Before the first
    feedback it is ``start_bps`` (300 kbps by default, libwebrtc's default start: the SFU
    must not assume a fat pipe before it has heard anything). With no transport-cc
    feedback for ``feedback_timeout_s`` (or ever) but a REMB from the subscriber, the
    estimate is ``min(REMB, loss-based)``; loss then comes from receiver reports
    (:meth:`SendSideBwe.on_loss_report`), which are ignored while transport-cc is fresh
    (both count the same losses). A subscriber that stops sending feedback altogether
    keeps its last estimate: deciding what that means is the caller's business
    (:attr:`SendSideBwe.last_feedback_at`).

Cost
    :meth:`SentHistory.on_sent` runs once per forwarded packet: one branch to unwrap the
    16-bit number against the highest sent, four stores into preallocated lists (extended
    seq, send time, size, status), no new objects but the extended int; about 0.3 µs on
    CPython 3.11. Everything else runs per feedback packet (every 50-250 ms): O(statuses
    reported), about 3.5 µs per status (≈ 100 µs per feedback at 2 Mbps).

Input that makes no sense — numbers never sent or older than the history, statuses
reported twice, empty feedback, arrival times that jump — is counted in
:attr:`SendSideBwe.stats` and otherwise ignored; nothing here raises on remote input.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

from sfu.rtp.rtcp import TransportCc

Usage = Literal["overuse", "normal", "underuse"]
RateState = Literal["increase", "hold", "decrease"]
Source = Literal["start", "transport-cc", "remb"]

# Inter-arrival grouping.
GROUP_SPAN_S = 0.005  # packets sent within this of a group's first packet join it
BURST_ARRIVAL_S = 0.005  # ... or arriving within this of its last one, queued behind it
MAX_BURST_S = 0.100  # a burst group spans at most this much arrival time
CLOCK_JUMP_S = 3.0  # a delay variation beyond this is a clock reset, not queueing

# Trendline filter and overuse detector (delays in ms, as the thresholds are).
TRENDLINE_WINDOW = 20  # groups in the linear regression
TRENDLINE_SMOOTHING = 0.9  # weight of the old smoothed delay
TRENDLINE_GAIN = 4.0
TRENDLINE_MAX_GROUPS = 60  # the slope is scaled by min(groups seen, this)
THRESHOLD_START_MS = 12.5
THRESHOLD_MIN_MS = 6.0
THRESHOLD_MAX_MS = 600.0
THRESHOLD_K_UP = 0.0087  # per ms, when |m| is above the threshold
THRESHOLD_K_DOWN = 0.039  # per ms, when |m| is below it
THRESHOLD_MAX_STEP_MS = 100.0
THRESHOLD_SPIKE_MS = 15.0  # |m| this far above the threshold does not adapt it
OVERUSE_TIME_S = 0.010  # m above the threshold this long (and 2+ groups) is overuse

# AIMD rate control.
DECREASE_FACTOR = 0.85  # β: overuse → β × acknowledged bitrate
INCREASE_PER_S = 1.08  # multiplicative increase far from the link capacity
MIN_MULTIPLICATIVE_STEP_BPS = 1_000
MIN_ADDITIVE_BPS_PER_S = 4_000
RESPONSE_EXTRA_S = 0.100  # response time = RTT + this
ACKED_HEADROOM = 1.5  # no increase above 1.5 × acknowledged + 10 kbps
ACKED_HEADROOM_BPS = 10_000
DEFAULT_RTT_S = 0.100  # until feedback gives one
CAPACITY_ALPHA = 0.05  # weight of a new link capacity sample
CAPACITY_DEV_MIN = 0.4  # normalised deviation bounds (kbps² / kbps)
CAPACITY_DEV_MAX = 2.5

# Acknowledged bitrate.
ACKED_WINDOW_S = 0.5
ACKED_STALE_S = 1.0  # no packet reported received for this long: acknowledged rate unknown

# Loss-based bound.
LOSS_WINDOW_PACKETS = 20
LOSS_WINDOW_S = 0.5
LOSS_LOW = 0.02
LOSS_HIGH = 0.10
LOSS_DECREASE_INTERVAL_S = 0.3  # plus RTT
LOSS_INCREASE_STEP_BPS_PER_S = 1_000

# Feedback bookkeeping.
_UNSENT, _SENT, _LOST, _RECEIVED = -1, 0, 1, 2
_REF_TIME_PERIOD_US = (1 << 24) * 64_000  # transport-cc reference time: 24 bits of 64 ms


@dataclass(frozen=True, slots=True, kw_only=True)
class BweConfig:
    """Bounds and start of one transport's estimate.

    ``start_bps``: the estimate until feedback says otherwise (bps, default 300 kbps).
    ``min_bps`` / ``max_bps``: the estimate never leaves this range (default 30 kbps ..
    20 Mbps). ``history_size``: sent packets remembered for feedback (a power of two, 16 ..
    32768; 4096 is 4 s at 1000 packets/s). ``feedback_timeout_s``: transport-cc silence
    after which a REMB takes over. ``max_feedback_age_s``: statuses for packets sent longer
    ago than this are ignored as stale.
    """

    start_bps: int = 300_000
    min_bps: int = 30_000
    max_bps: int = 20_000_000
    history_size: int = 4096
    feedback_timeout_s: float = 2.0
    max_feedback_age_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.min_bps <= self.max_bps:
            raise ValueError(
                f"bwe min_bps {self.min_bps} must be positive and at most max_bps"
                f" {self.max_bps}"
            )
        if not self.min_bps <= self.start_bps <= self.max_bps:
            raise ValueError(
                f"bwe start_bps {self.start_bps} is outside {self.min_bps}..{self.max_bps}"
            )
        size = self.history_size
        if not 16 <= size <= 0x8000 or size & (size - 1):
            raise ValueError(f"bwe history_size {size} is not a power of two in 16..32768")
        if self.feedback_timeout_s <= 0 or self.max_feedback_age_s <= 0:
            raise ValueError("bwe feedback_timeout_s and max_feedback_age_s must be positive")


@dataclass(slots=True)
class BweStats:
    """Counters of what feedback contained; for metrics, never reset."""

    feedback_packets: int = 0  # transport-cc packets handed to on_feedback
    empty_feedback: int = 0  # with no statuses, or none for a packet we know
    unknown_statuses: int = 0  # for a number never sent, or no longer in the history
    duplicate_statuses: int = 0  # the same status reported again
    recovered: int = 0  # reported lost, then reported received
    reordered_packets: int = 0  # arrived before a packet sent earlier: not used for delay
    clock_resets: int = 0  # arrival gaps that jumped by seconds: delay filter restarted


# --- sent packets ------------------------------------------------------------------------


class SentHistory:
    """What was sent, by transport-wide number: a preallocated ring indexed by ``seq & mask``.

    Each slot holds the extended (unwrapped) number, the send time (s), the size (bytes)
    and the feedback status of the last packet that used it. A status for a number whose
    slot holds another number (sent more than ``capacity`` packets ago, or never) is
    unknown.
    """

    __slots__ = ("_mask", "_ext", "_send_time", "_size", "_status", "_highest")

    def __init__(self, capacity: int = 4096) -> None:
        if not 16 <= capacity <= 0x8000 or capacity & (capacity - 1):
            raise ValueError(f"sent history capacity {capacity} is not a power of two"
                             " in 16..32768")
        self._mask = capacity - 1
        self._ext = [-1] * capacity
        self._send_time = [0.0] * capacity
        self._size = [0] * capacity
        self._status = [_UNSENT] * capacity
        self._highest = -1  # highest extended number sent; -1 before the first

    @property
    def capacity(self) -> int:
        return self._mask + 1

    @property
    def highest(self) -> int | None:
        """The highest extended transport-wide number sent, None before the first."""
        return self._highest if self._highest >= 0 else None

    def on_sent(self, seq16: int, size: int, now: float) -> None:
        """Record packet ``seq16`` (16-bit) of ``size`` bytes sent at ``now``. O(1)."""
        highest = self._highest
        if highest >= 0:
            ext = highest + ((seq16 - highest + 0x8000) & 0xFFFF) - 0x8000
            if ext > highest:
                self._highest = ext
        else:
            ext = self._highest = seq16 & 0xFFFF
        i = seq16 & self._mask
        self._ext[i] = ext
        self._send_time[i] = now
        self._size[i] = size
        self._status[i] = _SENT

    def slot(self, seq16: int) -> int:
        """The ring index holding ``seq16`` (unwrapped to the nearest number at or below
        the highest sent), or -1 if that packet is not in the history."""
        highest = self._highest
        if highest < 0:
            return -1
        ext = highest - ((highest - seq16) & 0xFFFF)
        i = ext & self._mask
        return i if self._ext[i] == ext else -1


# --- delay-based -------------------------------------------------------------------------


class InterArrival:
    """Groups packets (taken in arrival order) into send bursts; yields group deltas.

    :meth:`add` returns ``(send_delta_s, arrival_delta_s, arrival_s)`` when a packet closes
    a group and there was a group before it: the gaps between the two groups' last packets
    and the closed group's last arrival time. Send and arrival times may use different
    clocks; only differences matter.
    """

    __slots__ = ("_first_send", "_last_send", "_first_arrival", "_last_arrival",
                 "_prev_send", "_prev_arrival", "_has_group", "_has_prev",
                 "reordered", "resets")

    def __init__(self) -> None:
        self._first_send = self._last_send = 0.0
        self._first_arrival = self._last_arrival = 0.0
        self._prev_send = self._prev_arrival = 0.0
        self._has_group = False
        self._has_prev = False
        self.reordered = 0
        self.resets = 0

    def _start(self, send_s: float, arrival_s: float) -> None:
        self._first_send = self._last_send = send_s
        self._first_arrival = self._last_arrival = arrival_s
        self._has_group = True

    def add(self, send_s: float, arrival_s: float) -> tuple[float, float, float] | None:
        if not self._has_group:
            self._start(send_s, arrival_s)
            return None
        if send_s < self._first_send:
            self.reordered += 1
            return None
        if send_s - self._first_send <= GROUP_SPAN_S or self._in_burst(send_s, arrival_s):
            if send_s > self._last_send:
                self._last_send = send_s
            if arrival_s > self._last_arrival:
                self._last_arrival = arrival_s
            return None
        out = None
        if self._has_prev:
            send_delta = self._last_send - self._prev_send
            arrival_delta = self._last_arrival - self._prev_arrival
            if abs(arrival_delta - send_delta) > CLOCK_JUMP_S:
                self.resets += 1
                self._has_prev = False
                self._start(send_s, arrival_s)
                return None
            if arrival_delta >= 0:
                out = (send_delta, arrival_delta, self._last_arrival)
            else:
                self.reordered += 1
        self._prev_send = self._last_send
        self._prev_arrival = self._last_arrival
        self._has_prev = True
        self._start(send_s, arrival_s)
        return out

    def _in_burst(self, send_s: float, arrival_s: float) -> bool:
        arrival_delta = arrival_s - self._last_arrival
        return (arrival_delta - (send_s - self._last_send) < 0
                and arrival_delta <= BURST_ARRIVAL_S
                and arrival_s - self._first_arrival < MAX_BURST_S)


class TrendlineDetector:
    """Delay variations of consecutive groups → usage (overuse / normal / underuse).

    :meth:`update` takes one group delta (seconds) and the group's arrival time (seconds,
    receiver clock, also the detector's clock) and returns the usage after it.
    ``slope`` is the fitted delay gradient (ms of queueing per ms), ``modified_trend``
    the scaled value compared with ``threshold_ms``.
    """

    __slots__ = ("_points", "_first_arrival_ms", "_accumulated_ms", "_smoothed_ms",
                 "groups", "slope", "_prev_slope", "modified_trend", "threshold_ms",
                 "_threshold_at_s", "_overuse_s", "_overuse_count", "usage")

    def __init__(self, window: int = TRENDLINE_WINDOW) -> None:
        if window < 2:
            raise ValueError(f"trendline window {window} must be at least 2")
        self._points: deque[tuple[float, float]] = deque(maxlen=window)
        self._first_arrival_ms: float | None = None
        self._accumulated_ms = 0.0
        self._smoothed_ms = 0.0
        self.groups = 0
        self.slope = 0.0
        self._prev_slope = 0.0
        self.modified_trend = 0.0
        self.threshold_ms = THRESHOLD_START_MS
        self._threshold_at_s: float | None = None
        self._overuse_s = -1.0  # time m has been above the threshold; -1: it is not
        self._overuse_count = 0
        self.usage: Usage = "normal"

    def update(self, send_delta_s: float, arrival_delta_s: float, arrival_s: float) -> Usage:
        arrival_ms = arrival_s * 1000.0
        if self._first_arrival_ms is None:
            self._first_arrival_ms = arrival_ms
        self.groups = min(self.groups + 1, 1000)
        self._accumulated_ms += (arrival_delta_s - send_delta_s) * 1000.0
        self._smoothed_ms = (TRENDLINE_SMOOTHING * self._smoothed_ms
                             + (1 - TRENDLINE_SMOOTHING) * self._accumulated_ms)
        points = self._points
        points.append((arrival_ms - self._first_arrival_ms, self._smoothed_ms))
        if len(points) == points.maxlen:
            self.slope = _fit_slope(points, self.slope)
        self._detect(send_delta_s, arrival_s)
        return self.usage

    def _detect(self, send_delta_s: float, now_s: float) -> None:
        if self.groups < 2:
            return
        m = min(self.groups, TRENDLINE_MAX_GROUPS) * self.slope * TRENDLINE_GAIN
        self.modified_trend = m
        if m > self.threshold_ms:
            if self._overuse_s < 0:
                self._overuse_s = send_delta_s / 2
            else:
                self._overuse_s += send_delta_s
            self._overuse_count += 1
            if (self._overuse_s > OVERUSE_TIME_S and self._overuse_count > 1
                    and self.slope >= self._prev_slope):
                self._overuse_s = 0.0
                self._overuse_count = 0
                self.usage = "overuse"
        elif m < -self.threshold_ms:
            self._overuse_s = -1.0
            self._overuse_count = 0
            self.usage = "underuse"
        else:
            self._overuse_s = -1.0
            self._overuse_count = 0
            self.usage = "normal"
        self._prev_slope = self.slope
        self._adapt_threshold(m, now_s)

    def _adapt_threshold(self, m: float, now_s: float) -> None:
        last = self._threshold_at_s
        self._threshold_at_s = now_s
        if last is None or abs(m) > self.threshold_ms + THRESHOLD_SPIKE_MS:
            return
        k = THRESHOLD_K_DOWN if abs(m) < self.threshold_ms else THRESHOLD_K_UP
        dt_ms = min(max((now_s - last) * 1000.0, 0.0), THRESHOLD_MAX_STEP_MS)
        threshold = self.threshold_ms + k * (abs(m) - self.threshold_ms) * dt_ms
        self.threshold_ms = min(max(threshold, THRESHOLD_MIN_MS), THRESHOLD_MAX_MS)


def _fit_slope(points: deque[tuple[float, float]], default: float) -> float:
    """Least-squares slope of y over x; ``default`` when all x are equal."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    num = den = 0.0
    for x, y in points:
        dx = x - mean_x
        num += dx * (y - mean_y)
        den += dx * dx
    return num / den if den > 0 else default


class AimdRateControl:
    """The delay-based rate: usage signals + acknowledged bitrate → bits per second.

    ``state`` is the rate controller's state (increase / hold / decrease), ``last_action``
    what the last :meth:`update` did to the rate.
    """

    __slots__ = ("bitrate_bps", "min_bps", "max_bps", "state", "last_action", "_updated_at",
                 "_decreased_at", "capacity_kbps", "_capacity_dev")

    def __init__(self, start_bps: float, min_bps: float, max_bps: float) -> None:
        self.bitrate_bps = float(start_bps)
        self.min_bps = float(min_bps)
        self.max_bps = float(max_bps)
        self.state: RateState = "hold"
        self.last_action: RateState = "hold"
        self._updated_at: float | None = None
        self._decreased_at = -math.inf
        self.capacity_kbps: float | None = None  # link capacity from overuse episodes
        self._capacity_dev = CAPACITY_DEV_MIN

    def _capacity_bounds_bps(self) -> tuple[float, float]:
        estimate = self.capacity_kbps or 0.0
        std = math.sqrt(self._capacity_dev * estimate)
        return max(0.0, estimate - 3 * std) * 1000, (estimate + 3 * std) * 1000

    def _capacity_sample(self, acked_bps: float) -> None:
        sample = acked_bps / 1000
        if self.capacity_kbps is None:
            self.capacity_kbps = sample
        else:
            self.capacity_kbps += CAPACITY_ALPHA * (sample - self.capacity_kbps)
        error = self.capacity_kbps - sample
        dev = ((1 - CAPACITY_ALPHA) * self._capacity_dev
               + CAPACITY_ALPHA * error * error / max(self.capacity_kbps, 1.0))
        self._capacity_dev = min(max(dev, CAPACITY_DEV_MIN), CAPACITY_DEV_MAX)

    def _forget_capacity(self) -> None:
        self.capacity_kbps = None
        self._capacity_dev = CAPACITY_DEV_MIN

    def update(self, usage: Usage, acked_bps: float | None, now: float, *,
               rtt_s: float = DEFAULT_RTT_S, packet_bytes: float = 1200.0) -> float:
        dt = 0.0 if self._updated_at is None else min(max(now - self._updated_at, 0.0), 1.0)
        self._updated_at = now
        rate = self.bitrate_bps
        self.last_action = "hold"
        if acked_bps is not None and self.capacity_kbps is not None:
            if acked_bps > self._capacity_bounds_bps()[1]:
                self._forget_capacity()  # the path got faster: search multiplicatively
        if usage == "overuse":
            self.state = "decrease"
            interval = min(max(rtt_s, 0.010), 0.200)
            if now - self._decreased_at >= interval or (
                    acked_bps is not None and acked_bps < 0.5 * rate):
                self._decrease(acked_bps, now)
            return self.bitrate_bps
        if usage == "underuse":
            self.state = "hold"
            return rate
        if self.state != "increase":
            self.state = "increase"
        limit = math.inf
        if acked_bps is not None:
            limit = max(rate, ACKED_HEADROOM * acked_bps + ACKED_HEADROOM_BPS)
        if self.capacity_kbps is None:
            if acked_bps is not None and acked_bps > rate:
                rate = acked_bps  # delivered without queueing: it fits
            step = max(rate * (INCREASE_PER_S ** dt - 1), MIN_MULTIPLICATIVE_STEP_BPS * dt)
        else:
            response_s = rtt_s + RESPONSE_EXTRA_S
            step = max(8 * packet_bytes / response_s, MIN_ADDITIVE_BPS_PER_S) * dt
        new = min(rate + step, limit, self.max_bps)
        if new > self.bitrate_bps:
            self.last_action = "increase"
            self.bitrate_bps = new
        return self.bitrate_bps

    def _decrease(self, acked_bps: float | None, now: float) -> None:
        rate = self.bitrate_bps
        if acked_bps is None:
            target = DECREASE_FACTOR * rate
        else:
            target = DECREASE_FACTOR * acked_bps
            if target > rate and self.capacity_kbps is not None:
                target = DECREASE_FACTOR * self.capacity_kbps * 1000
            if self.capacity_kbps is not None and acked_bps < self._capacity_bounds_bps()[0]:
                self._forget_capacity()  # the path got slower
            self._capacity_sample(acked_bps)
        if target < rate:
            self.bitrate_bps = max(target, self.min_bps)
            self.last_action = "decrease"
        self._decreased_at = now
        self.state = "hold"  # let the queue drain before increasing again


# --- acknowledged bitrate and loss -------------------------------------------------------


class AckedBitrate:
    """Bytes reported received over the last ``window_s`` of arrival time (receiver clock)."""

    __slots__ = ("window_s", "_arrivals", "_bytes", "_first_s", "_latest_s", "_reported_at")

    def __init__(self, window_s: float = ACKED_WINDOW_S) -> None:
        self.window_s = window_s
        self._arrivals: deque[tuple[float, int]] = deque()
        self._bytes = 0
        self._first_s: float | None = None
        self._latest_s = -math.inf
        self._reported_at = -math.inf  # sender time of the last feedback with an arrival

    def add(self, arrival_s: float, size: int) -> None:
        if self._first_s is None or arrival_s - self._latest_s > 10 * self.window_s:
            self._arrivals.clear()
            self._bytes = 0
            self._first_s = arrival_s
            self._latest_s = arrival_s
        elif arrival_s <= self._latest_s - self.window_s:
            return  # older than the window: reported late
        self._arrivals.append((arrival_s, size))
        self._bytes += size
        if arrival_s > self._latest_s:
            self._latest_s = arrival_s
            cutoff = arrival_s - self.window_s
            arrivals = self._arrivals
            while arrivals and arrivals[0][0] <= cutoff:
                self._bytes -= arrivals.popleft()[1]

    def mark_reported(self, now: float) -> None:
        self._reported_at = now

    def bitrate_bps(self, now: float) -> float | None:
        """The acknowledged bitrate, or None (not enough arrivals yet, or none lately)."""
        if self._first_s is None or self._latest_s - self._first_s < self.window_s:
            return None
        if now - self._reported_at > ACKED_STALE_S:
            return None
        return self._bytes * 8 / self.window_s


class LossBasedControl:
    """The loss-based bound: loss fraction per window → bits per second (see module doc)."""

    __slots__ = ("bound_bps", "max_bps", "last_action", "_updated_at", "_decreased_at")

    def __init__(self, max_bps: float) -> None:
        self.bound_bps = float(max_bps)
        self.max_bps = float(max_bps)
        self.last_action: RateState = "increase"
        self._updated_at: float | None = None
        self._decreased_at = -math.inf

    def update(self, loss: float, now: float, estimate_bps: float,
               acked_bps: float | None, rtt_s: float = DEFAULT_RTT_S) -> float:
        dt = 0.0 if self._updated_at is None else min(max(now - self._updated_at, 0.0), 1.0)
        self._updated_at = now
        if loss < LOSS_LOW:
            bound = self.bound_bps * INCREASE_PER_S ** dt + LOSS_INCREASE_STEP_BPS_PER_S * dt
            if acked_bps is not None:
                bound = max(bound, acked_bps)
            self.bound_bps = min(bound, self.max_bps)
            self.last_action = "increase"
        elif loss <= LOSS_HIGH or now - self._decreased_at < LOSS_DECREASE_INTERVAL_S + rtt_s:
            self.last_action = "hold"  # the bound stays where it is
        else:
            base = min(self.bound_bps, estimate_bps)
            bound = base * (1 - 0.5 * loss)
            if acked_bps is not None:
                bound = max(bound, min(base, DECREASE_FACTOR * acked_bps))
            self.bound_bps = bound
            self._decreased_at = now
            self.last_action = "decrease" if bound < base else "hold"
        return self.bound_bps


# --- the estimator -----------------------------------------------------------------------


class SendSideBwe:
    """Downlink estimate for one subscriber transport; pure, every input carries ``now``.

    Feed it :meth:`on_sent` for every packet sent with a transport-wide number,
    :meth:`on_feedback` for every transport-cc packet the subscriber sends,
    :meth:`on_remb` / :meth:`on_loss_report` for REMB and receiver-report loss; read
    :attr:`estimate_bps`. ``history`` may be used directly on the hot path
    (``bwe.history.on_sent``) to save a call.
    """

    __slots__ = ("config", "history", "stats", "_inter_arrival", "_detector", "_aimd",
                 "_acked", "_loss", "_estimate_bps", "_state", "_source", "_rtt_s",
                 "_packet_bytes", "_ref_last", "_ref_offset_us", "last_feedback_at",
                 "_remb_bps", "_remb_at", "_win_lost", "_win_received", "_win_start",
                 "_loss_fraction", "_acked_bps")

    def __init__(self, config: BweConfig | None = None) -> None:
        cfg = config or BweConfig()
        self.config = cfg
        self.history = SentHistory(cfg.history_size)
        self.stats = BweStats()
        self._inter_arrival = InterArrival()
        self._detector = TrendlineDetector()
        self._aimd = AimdRateControl(cfg.start_bps, cfg.min_bps, cfg.max_bps)
        self._acked = AckedBitrate()
        self._loss = LossBasedControl(cfg.max_bps)
        self._estimate_bps = cfg.start_bps
        self._state: RateState = "hold"
        self._source: Source = "start"
        self._rtt_s: float | None = None
        self._packet_bytes = 1200.0
        self._ref_last: int | None = None
        self._ref_offset_us = 0
        self.last_feedback_at: float | None = None
        self._remb_bps: int | None = None
        self._remb_at = -math.inf
        self._win_lost = 0
        self._win_received = 0
        self._win_start: float | None = None
        self._loss_fraction = 0.0
        self._acked_bps: float | None = None

    # --- reading ---

    @property
    def estimate_bps(self) -> int:
        """The current target for everything sent on this transport, in bits per second."""
        return self._estimate_bps

    @property
    def state(self) -> RateState:
        """What the component setting the estimate last did: increase, hold or decrease."""
        return self._state

    @property
    def usage(self) -> Usage:
        """The delay detector's verdict on the path: overuse, normal or underuse."""
        return self._detector.usage

    @property
    def source(self) -> Source:
        """Where the estimate comes from: the start value, transport-cc or REMB."""
        return self._source

    @property
    def loss_fraction(self) -> float:
        """Loss in the last completed window (transport-cc, or the last receiver report)."""
        return self._loss_fraction

    @property
    def rtt_s(self) -> float | None:
        """Smoothed feedback round trip: send time of the newest packet a feedback
        acknowledges to that feedback's arrival (includes the receiver's feedback delay)."""
        return self._rtt_s

    @property
    def has_feedback(self) -> bool:
        """Whether a transport-cc feedback about a packet we sent has been seen."""
        return self.last_feedback_at is not None

    @property
    def acked_bps(self) -> float | None:
        """The acknowledged bitrate as of the last feedback, None while unknown."""
        return self._acked_bps

    @property
    def delay_based_bps(self) -> float:
        return self._aimd.bitrate_bps

    @property
    def loss_based_bps(self) -> float:
        return self._loss.bound_bps

    @property
    def link_capacity_bps(self) -> float | None:
        """The delay-based controller's link capacity estimate, None while unknown."""
        kbps = self._aimd.capacity_kbps
        return None if kbps is None else kbps * 1000

    # --- input ---

    def on_sent(self, seq16: int, size: int, now: float) -> None:
        """A packet with transport-wide number ``seq16`` and ``size`` bytes left at ``now``."""
        self.history.on_sent(seq16, size, now)

    def on_feedback(self, fb: TransportCc, now: float) -> None:
        """One transport-cc feedback packet, received at ``now``."""
        stats = self.stats
        stats.feedback_packets += 1
        history = self.history
        send_times, sizes, status = history._send_time, history._size, history._status
        offset_us = self._arrival_offset_us(fb.reference_time)
        oldest = now - self.config.max_feedback_age_s
        received: list[tuple[float, float, int]] = []  # (arrival s, send s, size), new only
        lost = got = 0
        newest_send = -math.inf
        size_sum = 0
        for seq16, arrival_us in fb.packets:
            i = history.slot(seq16)
            if i < 0 or send_times[i] < oldest:
                stats.unknown_statuses += 1
                continue
            st = status[i]
            if arrival_us is None:
                if st == _SENT:
                    status[i] = _LOST
                    lost += 1
                else:
                    stats.duplicate_statuses += 1
                continue
            if st == _RECEIVED:
                stats.duplicate_statuses += 1
                continue
            status[i] = _RECEIVED
            got += 1
            send_s = send_times[i]
            size = sizes[i]
            arrival_s = (arrival_us + offset_us) * 1e-6
            self._acked.add(arrival_s, size)
            size_sum += size
            if send_s > newest_send:
                newest_send = send_s
            if st == _LOST:
                stats.recovered += 1
                lost -= 1  # counted lost in this or an earlier window
                continue  # too late to say anything about queueing
            received.append((arrival_s, send_s, size))
        if not got and not lost:
            stats.empty_feedback += 1
            return
        self.last_feedback_at = now
        if got:
            self._acked.mark_reported(now)
            self._packet_bytes += 0.1 * (size_sum / got - self._packet_bytes)
            sample = max(now - newest_send, 0.0)
            self._rtt_s = sample if self._rtt_s is None else self._rtt_s + 0.125 * (
                sample - self._rtt_s)
        self._acked_bps = acked = self._acked.bitrate_bps(now)

        # Delay-based: groups → detector → AIMD, once per feedback.
        overuse_seen = False
        received.sort()
        inter_arrival = self._inter_arrival
        detector = self._detector
        for arrival_s, send_s, _ in received:
            delta = inter_arrival.add(send_s, arrival_s)
            if delta is not None and detector.update(*delta) == "overuse":
                overuse_seen = True
        stats.reordered_packets = inter_arrival.reordered
        stats.clock_resets = inter_arrival.resets
        signal: Usage = "overuse" if overuse_seen else detector.usage
        rtt = self._rtt_s if self._rtt_s is not None else DEFAULT_RTT_S
        self._aimd.update(signal, acked, now, rtt_s=rtt, packet_bytes=self._packet_bytes)

        # Loss-based: per window of statuses.
        if self._win_start is None:
            self._win_start = now
        self._win_lost += lost
        self._win_received += got
        expected = self._win_lost + self._win_received
        if expected >= LOSS_WINDOW_PACKETS and now - self._win_start >= LOSS_WINDOW_S:
            lost_n = max(self._win_lost, 0)
            self._loss_fraction = lost_n / max(lost_n + self._win_received, 1)
            self._loss.update(self._loss_fraction, now, self._estimate_bps, acked, rtt)
            self._win_lost = self._win_received = 0
            self._win_start = now
        self._refresh(now)

    def on_probe_result(self, delivered_bps: float, now: float) -> None:
        """A probe got ``delivered_bps`` through (acknowledged by feedback) without the
        delay detector seeing overuse: the path carries at least that much, so the
        estimate starts from there (libwebrtc sets its delay-based estimate from probe
        results the same way) instead of creeping up additively."""
        if self.usage == "overuse" or delivered_bps <= 0:
            return
        aimd = self._aimd
        rate = min(float(delivered_bps), aimd.max_bps)
        if rate > aimd.bitrate_bps:
            aimd.bitrate_bps = rate
            aimd._forget_capacity()  # a faster path than the one learned
            aimd.last_action = "increase"
        loss = self._loss
        if loss.bound_bps < rate:
            loss.bound_bps = rate
        self._refresh(now)

    def on_remb(self, bitrate_bps: int, now: float) -> None:
        """The subscriber's REMB; used when transport-cc feedback is absent or stale."""
        self._remb_bps = max(int(bitrate_bps), 0)
        self._remb_at = now
        self._refresh(now)

    def on_loss_report(self, fraction_lost: float, now: float) -> None:
        """Loss from a receiver report (0..1, e.g. ``fraction_lost / 256``), aggregated
        over the transport's streams by the caller. Ignored while transport-cc is fresh."""
        if self._twcc_fresh(now):
            return
        loss = min(max(float(fraction_lost), 0.0), 1.0)
        if math.isnan(loss):
            return
        self._loss_fraction = loss
        rtt = self._rtt_s if self._rtt_s is not None else DEFAULT_RTT_S
        self._loss.update(loss, now, self._estimate_bps, None, rtt)
        self._refresh(now)

    # --- internals ---

    def _twcc_fresh(self, now: float) -> bool:
        at = self.last_feedback_at
        return at is not None and now - at <= self.config.feedback_timeout_s

    def _arrival_offset_us(self, reference_time: int) -> int:
        """Offset unwrapping the 24-bit reference time (64 ms units, wraps every 12.4 days)."""
        last = self._ref_last
        if last is not None:
            delta = (reference_time - last) & 0xFFFFFF
            if delta >= 0x800000:
                delta -= 0x1000000
            if reference_time - last != delta:  # wrapped one way or the other
                self._ref_offset_us += (1 if delta > 0 else -1) * _REF_TIME_PERIOD_US
        self._ref_last = reference_time
        return self._ref_offset_us

    def _refresh(self, now: float) -> None:
        cfg = self.config
        loss_bound = self._loss.bound_bps
        previous = self._estimate_bps
        if self._twcc_fresh(now) or (self._remb_bps is None and self.has_feedback):
            self._source = "transport-cc"
            delay = self._aimd.bitrate_bps
            if loss_bound < delay:
                target = loss_bound
                self._state = self._loss.last_action
            else:
                target = delay
                self._state = self._aimd.last_action
        elif self._remb_bps is not None:
            self._source = "remb"
            target = min(float(self._remb_bps), loss_bound)
        else:
            target = min(self._aimd.bitrate_bps, loss_bound)
        self._estimate_bps = int(min(max(target, cfg.min_bps), cfg.max_bps))
        if self._source != "transport-cc":
            change = self._estimate_bps - previous
            self._state = "increase" if change > 0 else "decrease" if change < 0 else "hold"
