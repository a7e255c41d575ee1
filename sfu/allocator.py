"""Bandwidth → target layers for one subscriber (the model is LiveKit's StreamAllocator).

The subscriber's downlink estimate is shared out across its subscribed tracks. What comes
out is, per video track, the spatial layer to hand to its :class:`sfu.layers.LayerSelector`
(``set_allocation``) or ``-1``: paused for bandwidth; the tracks newly paused / resumed for
bandwidth (``stream_state`` to the client); and, now and then, a probe to run (RTX padding)
before anything moves up.

Inputs
------
Each call gets the estimate and one :class:`TrackDemand` per subscribed track. A video
track's ``layer_bitrates_bps`` are the measured bitrates of its simulcast layers, lowest
first, smoothed by the caller (a recent peak over ~2 s, so a keyframe or a quiet second
does not move allocations). ``0`` means the layer is *not arriving* (its receiver is not
active), not that it is quiet. Temporal layers are not allocated: a track gets every
temporal layer of its spatial layer.

The allocation is a cap, like ``max_layer``: the selector forwards the highest layer that
arrives at or below it. So a track is charged for the layer it would actually receive, and
a layer costs at least what the layers below it cost. When the budget covers everything a
track can receive, its allocation is its ``max_layer`` (layers that start arriving later are
not held back, but are charged as soon as they are measured).

Rules (every constant is an :class:`Allocator` argument)
---------------------------------------------------------
- **Budget.** Tracks are fitted into ``headroom × estimate`` (0.9). Audio comes off the top:
  ``max(measured, audio_bps)`` (64 kbps, covering Opus and its packet overhead) per audio
  track the subscriber has not disabled, whether or not it is arriving; audio is never
  paused.
- **Order.** Screen shares, then the active speaker, then the others; within each class
  the higher ``track_settings`` priority (0..255, default 100); then the order in which the
  allocator first saw the tracks. Tracks with the same class and priority form a *rank*.
- **Fit.** Every video track, in order, gets its lowest layer if it fits; a track whose
  lowest layer does not fit is paused, and later (cheaper) tracks may still fit. Then the
  ranks are upgraded in order, a higher rank as far as it fits before a lower one is
  upgraded at all (one high + two low, not three medium, when the speaker outranks the
  others), and within a rank round-robin, one layer at a time (three medium, not one high
  + two low, among equals). A track never goes above ``max_layer``.
- **Down at once.** When what is allocated exceeds ``tolerance × estimate`` (1.0), tracks
  are re-fitted into the budget at once, never going up: the lowest-ranked tracks lose
  layers first and pause when even their lowest layer no longer fits.
- **Up slowly.** A track goes up (or resumes) only
  1. at least ``hold_s`` (3 s) after it last went down (for congestion, to make room for a
     higher rank, or by coming back lower than it was), and
  2. when the fit has allowed the higher layer continuously for ``hold_s`` (it moves to the
     lowest layer allowed over that time; lower-ranked tracks the fit now wants lower make
     room in the same step), or when a probe found room for it (below), and
  3. when the new total needs an estimate no higher than one already *proven* (the
     estimate needed for what was carried since the last congestion, or one reached during
     a successful probe). Otherwise a probe runs first: padding at ``probe_bps`` on top of
     the media for ``probe_duration_s`` (1 s), so that media plus padding equal
     ``target_bps``; it succeeds when the estimate at the end of the window has reached
     ``target_bps`` (or when the caller reports success with
     :meth:`Allocator.probe_result`). One probe at a time.
  So a track's layer never goes up → down → up within ``hold_s``, and a brief change of
  active speaker moves nothing.
- **Probing for room.** When some track is held below what it could receive (or paused) and
  nothing else is pending, nothing went down for ``hold_s`` and no probe failed recently,
  the allocator probes for the next step the fit would take with more budget (resume the
  highest-ranked paused track, else one more layer for the lowest-layered track of the
  highest deficient rank). A probe never aims above ``probe_step_ratio × estimate`` (2×, as
  libwebrtc's ALR probes): a step further away is approached by several successful probes.
- **Failed probes** (the estimate fell short, the caller said so, or congestion ended it)
  restart the hold of the tracks they were for; a failed probe for room also backs off
  further probing for room by ``probe_backoff_s`` (5 s), doubling up to
  ``probe_backoff_max_s`` (30 s). A success resets the back-off. (Probes for upgrades the
  estimate already allows are paced by the hold alone, so an estimate that recovers on its
  own is followed within ``hold_s`` + ``probe_duration_s``.)
- **New tracks** are placed at once into what the budget has left, the fit's way; later
  moves follow the rules above. A track with nothing arriving, or that the subscriber
  disabled, is not charged and keeps its allocation; when it comes back it is placed the
  same way, never above that allocation (so coming back is never a way up).
- **No estimate** (``None``: no transport-wide feedback): every track gets ``max_layer``,
  nothing is paused, no probes.

Outputs: ``layers`` holds the allocation of every video track: the shell calls
``selector.set_allocation(layer)`` for ``layer >= 0`` and ``selector.pause()`` for ``-1``
(``set_allocation`` would clamp it to 0). ``paused`` / ``resumed`` list (in rank order) the
video tracks paused for bandwidth, or no longer paused, since the last call, for
``stream_state``. A track the subscriber disabled (``max_layer`` -1) gets ``-1`` and keeps
its last reported state until it is enabled and placed again.

Pure and cheap: no clock, no I/O; well under a millisecond for 50 tracks. Call it on every
new estimate, on track or settings changes, and at least at ``Allocation.wake_at``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

AUDIO = "audio"
VIDEO = "video"
SCREEN_SHARE = "screen_share"
DEFAULT_PRIORITY = 100
#: The default ``max_layer``: no cap (the forwarder's highest layer; clamped to the track's).
ANY_LAYER = 3
#: An allocation of -1: do not forward (paused for bandwidth, or by the subscriber).
PAUSED = -1

_NEVER = -math.inf


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackDemand:
    """One subscribed track, as the allocator sees it at one call."""

    track_sid: str
    kind: str = VIDEO
    #: ``camera``, ``screen_share``, ``microphone``, ...
    source: str = "camera"
    #: ``track_settings`` priority, 0..255: higher wins when bandwidth is short.
    priority: int = DEFAULT_PRIORITY
    is_speaker: bool = False
    #: The highest spatial layer the subscriber wants (``track_settings``); -1: disabled.
    max_layer: int = ANY_LAYER
    #: Measured bitrate per spatial layer, lowest first; 0: the layer is not arriving.
    #: Audio: one entry (or none: not measured).
    layer_bitrates_bps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in (AUDIO, VIDEO):
            raise ValueError(f"track kind must be audio or video, not {self.kind!r}")
        if not 0 <= self.priority <= 255:
            raise ValueError(f"priority must be 0..255, not {self.priority}")
        if any(b < 0 for b in self.layer_bitrates_bps):
            raise ValueError(f"negative layer bitrate in {self.layer_bitrates_bps}")


@dataclass(frozen=True, slots=True)
class Probe:
    """Send RTX padding at ``probe_bps`` on top of the media until ``ends_at`` (or until
    ``Allocation.probing`` turns false); success: the estimate reaches ``target_bps``."""

    probe_bps: int
    target_bps: int
    duration_s: float
    ends_at: float


@dataclass(frozen=True, slots=True)
class Allocation:
    #: Video track sid → spatial layer for ``LayerSelector.set_allocation``; -1: paused.
    layers: dict[str, int]
    #: Newly paused for bandwidth since the last call (``stream_state`` "paused").
    paused: tuple[str, ...]
    #: No longer paused for bandwidth (``stream_state`` "active").
    resumed: tuple[str, ...]
    #: A probe to start now (None: none to start).
    probe: Probe | None
    #: A probe is in flight: keep padding while true.
    probing: bool
    #: What the allocation is expected to send (audio reserve included).
    allocated_bps: int
    #: Some video track is held below what it could receive, or paused, for bandwidth.
    deficient: bool
    #: Call again by then even if nothing changes (None: not needed).
    wake_at: float | None


class _Ladder:
    """The layers a track can be allocated: the ones arriving at or below its cap (or the
    lowest arriving one above it), each with its cost and the allocation that selects it."""

    __slots__ = ("effective", "targets", "costs_bps")

    def __init__(self, effective: list[int], cap: int, bitrates: tuple[int, ...]) -> None:
        self.effective = effective
        self.targets = effective[:-1] + [cap]
        costs: list[int] = []
        for layer in effective:
            costs.append(max(bitrates[layer], costs[-1] if costs else 0))
        self.costs_bps = costs

    @property
    def top(self) -> int:
        return len(self.effective) - 1

    def rung_of(self, target: int) -> int:
        """The rung an allocation of ``target`` selects (-1: paused)."""
        if target < 0:
            return PAUSED
        return max(sum(1 for layer in self.effective if layer <= target) - 1, 0)

    def cost(self, rung: int) -> int:
        return self.costs_bps[rung] if rung >= 0 else 0


class _State:
    """What the allocator remembers of one track between calls."""

    __slots__ = ("seq", "target", "idle", "paused", "down_at", "up_since", "up_rung")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.target: int | None = None  # None: never placed; -1: paused for bandwidth
        self.idle = False  # nothing arriving, or disabled: to be placed again
        self.paused = False  # as last reported to the client
        self.down_at = _NEVER
        self.up_since: float | None = None  # the fit allows more since then
        self.up_rung = 0  # the lowest rung it allowed since then


class _Entry:
    """A video track with something arriving, during one call."""

    __slots__ = ("sid", "state", "ladder", "group", "key", "rung")

    def __init__(self, demand: TrackDemand, state: _State, ladder: _Ladder) -> None:
        self.sid = demand.track_sid
        self.state = state
        self.ladder = ladder
        cls = 2 if demand.source == SCREEN_SHARE else 1 if demand.is_speaker else 0
        self.group = (cls, demand.priority)
        self.key = (-cls, -demand.priority, state.seq)
        self.rung = PAUSED

    def cost(self, rung: int | None = None) -> int:
        return self.ladder.cost(self.rung if rung is None else rung)


class _PendingProbe:
    __slots__ = ("probe", "plan", "complete", "exploring", "verdict")

    def __init__(self, probe: Probe, plan: dict[str, int], complete: bool,
                 exploring: bool) -> None:
        self.probe = probe
        self.plan = plan  # sid → target to commit on success
        self.complete = complete  # success makes room for the plan (else: a step towards it)
        self.exploring = exploring  # for room the estimate does not show (else: it does)
        self.verdict: bool | None = None


def _fit(entries: list[_Entry], budget_bps: int, caps: list[int]) -> list[int]:
    """The fit (see the module doc) of ``entries`` (sorted by rank) into ``budget_bps``,
    never above ``caps`` (rungs)."""
    rungs = [PAUSED] * len(entries)
    left = budget_bps
    for i, e in enumerate(entries):
        cost = e.ladder.costs_bps[0]
        if caps[i] >= 0 and cost <= left:
            rungs[i] = 0
            left -= cost
    start = 0
    while start < len(entries):
        end = start
        while end < len(entries) and entries[end].group == entries[start].group:
            end += 1
        moved = True
        while moved:
            moved = False
            for i in range(start, end):
                rung = rungs[i]
                if 0 <= rung < caps[i]:
                    costs = entries[i].ladder.costs_bps
                    delta = costs[rung + 1] - costs[rung]
                    if delta <= left:
                        rungs[i] = rung + 1
                        left -= delta
                        moved = True
        start = end
    return rungs


class Allocator:
    """The bandwidth allocator of one subscriber (see the module doc for the rules)."""

    def __init__(self, *, hold_s: float = 3.0, headroom: float = 0.9, tolerance: float = 1.0,
                 audio_bps: int = 64_000, probe_duration_s: float = 1.0,
                 probe_step_ratio: float = 2.0, probe_backoff_s: float = 5.0,
                 probe_backoff_max_s: float = 30.0) -> None:
        if hold_s < 0:
            raise ValueError(f"hold_s must be >= 0, not {hold_s}")
        if not 0 < headroom <= tolerance:
            raise ValueError(f"need 0 < headroom <= tolerance, not {headroom}, {tolerance}")
        if audio_bps < 0:
            raise ValueError(f"audio_bps must be >= 0, not {audio_bps}")
        if probe_duration_s <= 0:
            raise ValueError(f"probe_duration_s must be > 0, not {probe_duration_s}")
        if probe_step_ratio <= 1:
            raise ValueError(f"probe_step_ratio must be > 1, not {probe_step_ratio}")
        if not 0 < probe_backoff_s <= probe_backoff_max_s:
            raise ValueError("need 0 < probe_backoff_s <= probe_backoff_max_s, not "
                             f"{probe_backoff_s}, {probe_backoff_max_s}")
        self.hold_s = hold_s
        self.headroom = headroom
        self.tolerance = tolerance
        self.audio_bps = audio_bps
        self.probe_duration_s = probe_duration_s
        self.probe_step_ratio = probe_step_ratio
        self.probe_backoff_s = probe_backoff_s
        self.probe_backoff_max_s = probe_backoff_max_s
        self._states: dict[str, _State] = {}
        self._seq = 0
        self._probe: _PendingProbe | None = None
        self._backoff_s = probe_backoff_s
        self._backoff_until = _NEVER
        self._congested_at = _NEVER
        #: The highest estimate known to be carried (by media, or during a probe).
        self._proven_bps = 0

    @property
    def probing(self) -> bool:
        return self._probe is not None

    def probe_result(self, success: bool, now: float) -> None:
        """The caller's verdict on the probe in flight (e.g. its estimator's probe-cluster
        result); it is acted on at the next :meth:`allocate`. Ignored when none is."""
        if self._probe is not None:
            self._probe.verdict = success

    # -- the allocation --------------------------------------------------------------------
    def allocate(self, estimate_bps: int | None, tracks: Sequence[TrackDemand],
                 now: float) -> Allocation:
        audio_bps = 0
        entries: list[_Entry] = []
        layers: dict[str, int] = {}
        seen: set[str] = set()
        for demand in tracks:
            sid = demand.track_sid
            seen.add(sid)
            state = self._states.get(sid)
            if state is None:
                state = self._states[sid] = _State(self._seq)
                self._seq += 1
            if demand.kind == AUDIO:
                if demand.max_layer >= 0:
                    measured = demand.layer_bitrates_bps[0] if demand.layer_bitrates_bps else 0
                    audio_bps += max(measured, self.audio_bps)
                continue
            ladder = _ladder(demand)
            if ladder is None:  # disabled by the subscriber, or nothing arriving
                state.idle = True
                state.up_since = None
                cap = min(demand.max_layer, max(len(demand.layer_bitrates_bps) - 1, 0))
                if demand.max_layer < 0 or state.paused:
                    layers[sid] = PAUSED
                else:
                    layers[sid] = cap if state.target is None else min(state.target, cap)
                continue
            entry = _Entry(demand, state, ladder)
            if state.target is not None:
                state.target = min(state.target, ladder.targets[-1])
                entry.rung = ladder.rung_of(state.target)
            entries.append(entry)
        for sid in [s for s in self._states if s not in seen]:
            del self._states[sid]
        entries.sort(key=lambda e: e.key)

        new_probe: Probe | None = None
        if estimate_bps is None:
            self._probe = None
            for e in entries:
                self._set(e, e.ladder.top)
                e.state.target = e.ladder.targets[-1]
        else:
            new_probe = self._decide(max(estimate_bps, 0), audio_bps, entries, now)

        paused: list[str] = []
        resumed: list[str] = []
        allocated_bps = audio_bps
        deficient = False
        for e in entries:
            layers[e.sid] = e.state.target if e.state.target is not None else PAUSED
            allocated_bps += e.cost()
            deficient = deficient or e.rung < e.ladder.top
            is_paused = e.rung == PAUSED
            if is_paused != e.state.paused:
                e.state.paused = is_paused
                (paused if is_paused else resumed).append(e.sid)
        if estimate_bps is not None:
            self._proven_bps = max(self._proven_bps, math.ceil(allocated_bps / self.headroom))
        return Allocation(layers=layers, paused=tuple(paused), resumed=tuple(resumed),
                          probe=new_probe, probing=self._probe is not None,
                          allocated_bps=allocated_bps, deficient=deficient,
                          wake_at=self._wake_at(entries, deficient, now))

    def _decide(self, estimate_bps: int, audio_bps: int, entries: list[_Entry],
                now: float) -> Probe | None:
        budget = int(self.headroom * estimate_bps) - audio_bps
        placed = [e for e in entries if e.state.target is not None and not e.state.idle]
        fresh = [e for e in entries if e.state.target is None or e.state.idle]

        # 1. the probe in flight
        commit: dict[str, int] | None = None
        pending = self._probe
        if pending is not None and (pending.verdict is not None
                                    or now >= pending.probe.ends_at):
            success = (pending.verdict if pending.verdict is not None
                       else estimate_bps >= pending.probe.target_bps)
            self._end_probe(success, now)
            if success:
                self._proven_bps = max(self._proven_bps, pending.probe.target_bps)
                if pending.complete:
                    commit = pending.plan

        # 2. congestion: down at once, never up
        if audio_bps + sum(e.cost() for e in placed) > self.tolerance * estimate_bps:
            rungs = _fit(placed, budget, [e.rung for e in placed])
            for e, rung in zip(placed, rungs, strict=True):
                if rung < e.rung:
                    self._set(e, rung)
                    e.state.down_at = now
            self._congested_at = now
            self._proven_bps = estimate_bps
            if self._probe is not None:
                self._end_probe(False, now)
            commit = None

        # 3. new tracks, and tracks back: into what is left, never above where they were
        if fresh:
            left = budget - sum(e.cost() for e in placed)
            caps = [e.ladder.top if e.state.target is None else e.rung for e in fresh]
            for e, cap, rung in zip(fresh, caps, _fit(fresh, left, caps), strict=True):
                if e.state.target is not None and rung < cap:
                    e.state.down_at = now  # back lower than it was
                self._set(e, rung)

        # 4. what the fit would allow now
        wanted = _fit(entries, budget, [e.ladder.top for e in entries])
        for e, rung in zip(entries, wanted, strict=True):
            state = e.state
            if rung > e.rung:
                if state.up_since is None:
                    state.up_since = now
                    state.up_rung = rung
                else:
                    state.up_rung = min(state.up_rung, rung)
            else:
                state.up_since = None

        # 5. moving up
        if commit is not None:
            self._commit(entries, wanted, self._ups(entries, commit), budget, now)
            return None
        if self._probe is not None:
            return None
        matured = {e: e.state.up_rung for e in entries
                   if e.state.up_since is not None and self._may_rise(e, now)
                   and now - e.state.up_since >= self.hold_s}
        if matured:
            after = self._plan(entries, wanted, matured, budget)
            goal_bps = math.ceil((audio_bps + sum(e.cost(r) for e, r in after.items()))
                                 / self.headroom)
            if goal_bps <= self._proven_bps:
                self._commit(entries, wanted, matured, budget, now)
                return None
            plan = {e.sid: e.ladder.targets[r] for e, r in matured.items()}
            return self._start_probe(plan, goal_bps, estimate_bps, audio_bps, entries, now,
                                     exploring=False)
        if (any(e.state.up_since is not None for e in entries)
                or now - self._congested_at < self.hold_s or now < self._backoff_until):
            return None
        step = self._next_step(entries, now)
        if step is None:
            return None
        e, rung = step
        total = audio_bps + sum(x.cost() for x in entries) + e.cost(rung) - e.cost()
        goal_bps = math.ceil(total / self.headroom)
        return self._start_probe({e.sid: e.ladder.targets[rung]}, goal_bps, estimate_bps,
                                 audio_bps, entries, now, exploring=True)

    # -- helpers ---------------------------------------------------------------------------
    def _set(self, e: _Entry, rung: int) -> None:
        """Allocate ``rung`` (the same rung keeps its allocation: a track held at a layer
        does not take ``max_layer`` because the layers above it stopped arriving)."""
        state = e.state
        if rung != e.rung or state.target is None:
            state.target = e.ladder.targets[rung] if rung >= 0 else PAUSED
        e.rung = rung
        state.idle = False
        state.up_since = None

    def _may_rise(self, e: _Entry, now: float) -> bool:
        return now - e.state.down_at >= self.hold_s

    def _ups(self, entries: list[_Entry], plan: dict[str, int]) -> dict[_Entry, int]:
        """A committed plan (sid → target) as rungs, for the tracks it still raises."""
        ups: dict[_Entry, int] = {}
        for e in entries:
            target = plan.get(e.sid)
            if target is not None:
                rung = e.ladder.rung_of(min(target, e.ladder.targets[-1]))
                if rung > e.rung:
                    ups[e] = rung
        return ups

    def _plan(self, entries: list[_Entry], wanted: list[int], ups: dict[_Entry, int],
              budget: int) -> dict[_Entry, int]:
        """Every track's rung after ``ups``: tracks the fit wants lower make room as needed
        (lowest rank first), and ups that still do not fit are dropped (lowest rank first)."""
        rungs = {e: max(e.rung, ups.get(e, PAUSED)) for e in entries}

        def over() -> bool:
            return sum(e.cost(r) for e, r in rungs.items()) > budget

        for e, want in reversed(list(zip(entries, wanted, strict=True))):
            if not over():
                break
            if want < rungs[e] and e not in ups:
                rungs[e] = want
        for e in reversed(entries):
            if not over():
                break
            if e in ups:
                rungs[e] = e.rung
        return rungs

    def _commit(self, entries: list[_Entry], wanted: list[int], ups: dict[_Entry, int],
                budget: int, now: float) -> None:
        for e, rung in self._plan(entries, wanted, ups, budget).items():
            if rung < e.rung:
                e.state.down_at = now
            if rung != e.rung:
                self._set(e, rung)

    def _next_step(self, entries: list[_Entry], now: float) -> tuple[_Entry, int] | None:
        """The next move the fit would make with more budget, among tracks that may rise."""
        eligible = [e for e in entries if e.rung < e.ladder.top and self._may_rise(e, now)]
        for e in eligible:  # sorted by rank: resume the highest-ranked paused track first
            if e.rung == PAUSED:
                return e, 0
        if not eligible:
            return None
        group = eligible[0].group
        e = min((x for x in eligible if x.group == group), key=lambda x: (x.rung, x.key))
        return e, e.rung + 1

    def _start_probe(self, plan: dict[str, int], goal_bps: int, estimate_bps: int,
                     audio_bps: int, entries: list[_Entry], now: float, *,
                     exploring: bool) -> Probe:
        media_bps = audio_bps + sum(e.cost() for e in entries)
        target_bps = min(goal_bps, int(self.probe_step_ratio * max(estimate_bps, media_bps)))
        probe = Probe(probe_bps=max(target_bps - media_bps, 0), target_bps=target_bps,
                      duration_s=self.probe_duration_s, ends_at=now + self.probe_duration_s)
        self._probe = _PendingProbe(probe, plan, complete=target_bps >= goal_bps,
                                    exploring=exploring)
        return probe

    def _end_probe(self, success: bool, now: float) -> None:
        """A success resets the back-off. A failure restarts the hold of the tracks it was
        for, and backs off exploring."""
        pending = self._probe
        self._probe = None
        if pending is None:
            return
        if success:
            self._backoff_s = self.probe_backoff_s
            self._backoff_until = _NEVER
            return
        for sid in pending.plan:
            state = self._states.get(sid)
            if state is not None:
                state.up_since = None
        if pending.exploring:
            self._backoff_until = now + self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, self.probe_backoff_max_s)

    def _wake_at(self, entries: list[_Entry], deficient: bool, now: float) -> float | None:
        times: list[float] = []
        if self._probe is not None:
            times.append(self._probe.probe.ends_at)
        for e in entries:
            if e.state.up_since is not None:
                times.append(max(e.state.up_since, e.state.down_at) + self.hold_s)
            elif e.rung < e.ladder.top:
                times.append(e.state.down_at + self.hold_s)
        if deficient:
            times.append(self._congested_at + self.hold_s)
            times.append(self._backoff_until)
        later = [t for t in times if t > now]
        return min(later) if later else None


def _ladder(demand: TrackDemand) -> _Ladder | None:
    """``demand``'s ladder; None when disabled by the subscriber or nothing arrives."""
    bitrates = demand.layer_bitrates_bps
    if demand.max_layer < 0 or not bitrates:
        return None
    arriving = [i for i, b in enumerate(bitrates) if b > 0]
    if not arriving:
        return None
    cap = min(demand.max_layer, len(bitrates) - 1)
    effective = [i for i in arriving if i <= cap] or arriving[:1]
    return _Ladder(effective, cap, bitrates)
