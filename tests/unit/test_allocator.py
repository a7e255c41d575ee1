"""The per-subscriber bandwidth allocator: fit tables, hold and probe rules, recorded traces.

The traces under ``traces/allocator_*.json`` are estimate / layer-bitrate sequences recorded
from a GCC-like model (each file says how); they are replayed open-loop: the estimate does
not react to probes, so a probe succeeds when the recorded estimate reaches its target.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import pytest

from sfu.allocator import (
    DEFAULT_PRIORITY,
    PAUSED,
    Allocation,
    Allocator,
    TrackDemand,
)

TRACES = Path(__file__).parent / "traces"
LAYERS = (150_000, 500_000, 1_700_000)  # Chromium-like q / h / f
LOW, MEDIUM, HIGH = 0, 1, 2
HOLD_S = 3.0
PROBE_S = 1.0


def video(sid: str, bitrates: tuple[int, ...] = LAYERS, **kw: Any) -> TrackDemand:
    return TrackDemand(track_sid=sid, kind="video", layer_bitrates_bps=bitrates, **kw)


def audio(sid: str = "TR_mic", bitrate_bps: int = 0, **kw: Any) -> TrackDemand:
    bitrates = (bitrate_bps,) if bitrate_bps else ()
    return TrackDemand(track_sid=sid, kind="audio", source="microphone",
                       layer_bitrates_bps=bitrates, **kw)


def trace(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((TRACES / f"allocator_{name}.json").read_text())
    return data


def changes(history: list[tuple[float, int]]) -> list[tuple[float, int, int]]:
    """(time, from, to) for each change of one track's layer."""
    out = []
    for (_, before), (t, after) in zip(history, history[1:], strict=False):
        if after != before:
            out.append((t, before, after))
    return out


def assert_no_fast_oscillation(history: list[tuple[float, int]], hold_s: float) -> None:
    """Never up → down → up within ``hold_s``: every rise comes ``hold_s`` after the last
    fall."""
    last_down = -1e9
    for t, before, after in changes(history):
        if after < before:
            last_down = t
        else:
            assert t - last_down >= hold_s, f"up at {t} only {t - last_down}s after a down"


# -- the fit ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("estimate", "layer"), [
    (4_000_000, HIGH),
    (1_900_000, HIGH),  # 0.9 × 1.9 M covers 1.7 M
    (1_800_000, MEDIUM),  # 0.9 × 1.8 M does not
    (600_000, MEDIUM),  # the 600 kbps cap: at most medium
    (500_000, LOW),
    (170_000, LOW),
    (160_000, PAUSED),  # 0.9 × 160 k < 150 k
    (0, PAUSED),
    (None, HIGH),  # no estimate (no transport-cc): everything at its max
])
def test_single_track_fit(estimate: int | None, layer: int) -> None:
    got = Allocator().allocate(estimate, [video("TR_v")], 0.0)
    assert got.layers == {"TR_v": layer}
    assert got.paused == (("TR_v",) if layer == PAUSED else ())
    assert got.probe is None or layer < HIGH


# 1.7 M + 2 × 150 k = 2.0 M fits 0.9 × 2.3 M = 2.07 M; one more medium (+350 k) does not
ONE_HIGH_TWO_LOW_BPS = 2_300_000


@pytest.mark.parametrize(("demands", "expected"), [
    # the active speaker outranks the others
    ([video("TR_a"), video("TR_b", is_speaker=True), video("TR_c")],
     {"TR_a": LOW, "TR_b": HIGH, "TR_c": LOW}),
    # a screen share outranks the active speaker
    ([video("TR_a", is_speaker=True), video("TR_b"), video("TR_c", source="screen_share")],
     {"TR_a": LOW, "TR_b": LOW, "TR_c": HIGH}),
    # then track_settings priority
    ([video("TR_a"), video("TR_b"), video("TR_c", priority=200)],
     {"TR_a": LOW, "TR_b": LOW, "TR_c": HIGH}),
    # among equals, layers go round-robin: three medium (1.5 M), not one high
    ([video("TR_a"), video("TR_b"), video("TR_c")],
     {"TR_a": MEDIUM, "TR_b": MEDIUM, "TR_c": MEDIUM}),
    # the subscriber's max_layer caps the speaker; the budget goes to the next rank
    ([video("TR_a", is_speaker=True, max_layer=LOW), video("TR_b", priority=150),
      video("TR_c")],
     {"TR_a": LOW, "TR_b": HIGH, "TR_c": LOW}),
])
def test_three_tracks_follow_priorities(demands: list[TrackDemand],
                                        expected: dict[str, int]) -> None:
    got = Allocator().allocate(ONE_HIGH_TWO_LOW_BPS, demands, 0.0)
    assert got.layers == expected
    assert got.paused == ()


def test_a_track_that_does_not_fit_lets_cheaper_ones_in() -> None:
    share = video("TR_s", (600_000, 1_200_000), source="screen_share")
    got = Allocator().allocate(400_000, [share, video("TR_a")], 0.0)
    assert got.layers == {"TR_s": PAUSED, "TR_a": LOW}
    assert got.paused == ("TR_s",)


def test_max_layer_is_never_exceeded() -> None:
    alloc = Allocator()
    tracks = [video("TR_a", max_layer=LOW), video("TR_b", max_layer=MEDIUM), video("TR_c")]
    got = alloc.allocate(10_000_000, tracks, 0.0)
    assert got.layers == {"TR_a": LOW, "TR_b": MEDIUM, "TR_c": HIGH}
    assert not got.deficient and got.probe is None
    # lowering max_layer takes effect at once; raising it is an upgrade (hold, then probe)
    got = alloc.allocate(10_000_000, [video("TR_a", max_layer=HIGH), tracks[1],
                                      video("TR_c", max_layer=LOW)], 1.0)
    assert got.layers == {"TR_a": LOW, "TR_b": MEDIUM, "TR_c": LOW}
    got = alloc.allocate(10_000_000, [video("TR_a", max_layer=HIGH), tracks[1],
                                      video("TR_c", max_layer=LOW)], 1.0 + HOLD_S)
    assert got.layers["TR_a"] == HIGH  # estimate 10 M was carried: no probe needed


def test_allocation_is_a_cap_over_the_layers_arriving() -> None:
    alloc = Allocator()
    # the top layer is not arriving yet: the track is not held back, only charged 500 k
    got = alloc.allocate(1_000_000, [video("TR_v", (150_000, 500_000, 0))], 0.0)
    assert got.layers == {"TR_v": HIGH} and got.allocated_bps == 500_000
    assert not got.deficient
    # it arrives and does not fit: down at once
    got = alloc.allocate(1_000_000, [video("TR_v")], 0.5)
    assert got.layers == {"TR_v": MEDIUM} and got.allocated_bps == 500_000
    # only a layer above max_layer arrives: the selector forwards it, so it is charged
    got = Allocator().allocate(10_000_000, [video("TR_v", (0, 0, 1_700_000), max_layer=LOW)],
                               0.0)
    assert got.layers == {"TR_v": LOW} and got.allocated_bps == 1_700_000
    # a higher layer never counts as cheaper than a lower one
    got = Allocator().allocate(500_000, [video("TR_v", (300_000, 200_000, 1_700_000))], 0.0)
    assert got.layers == {"TR_v": MEDIUM} and got.allocated_bps == 300_000


def test_audio_comes_off_the_top_and_is_never_paused() -> None:
    alloc = Allocator()
    # 0.9 × 620 k = 558 k: medium alone would fit, not with 64 k reserved for the microphone
    got = alloc.allocate(620_000, [audio(bitrate_bps=30_000), video("TR_v")], 0.0)
    assert got.layers == {"TR_v": LOW} and got.allocated_bps == 64_000 + 150_000
    # a measured bitrate above the reserve counts as measured
    got = Allocator().allocate(650_000, [audio(bitrate_bps=128_000), video("TR_v")], 0.0)
    assert got.layers == {"TR_v": LOW} and got.allocated_bps == 128_000 + 150_000
    # audio alone exceeds the estimate: video pauses, audio still flows
    got = Allocator().allocate(50_000, [audio(), video("TR_v")], 0.0)
    assert got.layers == {"TR_v": PAUSED} and got.allocated_bps == 64_000
    # audio the subscriber disabled costs nothing
    got = Allocator().allocate(620_000, [audio(max_layer=-1), video("TR_v")], 0.0)
    assert got.layers == {"TR_v": MEDIUM} and got.allocated_bps == 500_000


# -- down at once, up after hold and probe ---------------------------------------------------
def test_600k_cap_then_lifted_goes_high_after_hold_and_probe() -> None:
    alloc = Allocator(hold_s=HOLD_S, probe_duration_s=PROBE_S)
    v = [video("TR_v")]
    assert alloc.allocate(4_000_000, v, 0.0).layers == {"TR_v": HIGH}
    got = alloc.allocate(600_000, v, 1.0)  # congestion: down at once
    assert got.layers == {"TR_v": MEDIUM}
    assert got.wake_at == 1.0 + HOLD_S
    t = 1.5
    while t < 4.0:  # the cap lifts at 1.5 s; the estimate allows high from then on
        got = alloc.allocate(4_000_000, v, t)
        assert got.layers == {"TR_v": MEDIUM} and got.probe is None
        t += 0.5
    got = alloc.allocate(4_000_000, v, 4.5)  # held for 3 s: probe for 1.7 M / 0.9 first
    assert got.layers == {"TR_v": MEDIUM} and got.probing
    assert got.probe is not None
    assert got.probe.target_bps == 1_888_889
    assert got.probe.probe_bps == 1_888_889 - 500_000
    assert got.probe.ends_at == 4.5 + PROBE_S == got.wake_at
    assert alloc.allocate(4_000_000, v, 5.0).layers == {"TR_v": MEDIUM}
    got = alloc.allocate(4_000_000, v, 5.5)  # the estimate reached the target: commit
    assert got.layers == {"TR_v": HIGH} and not got.probing and not got.deficient


def test_upgrade_needs_the_estimate_continuously_for_hold() -> None:
    alloc = Allocator(hold_s=HOLD_S)
    v = [video("TR_v")]
    alloc.allocate(4_000_000, v, 0.0)
    alloc.allocate(600_000, v, 1.0)
    # the estimate allows high at 1.5 s, not at 3.0 s (a dip), then again from 3.5 s
    for t, estimate in ((1.5, 4e6), (2.0, 4e6), (2.5, 4e6), (3.0, 1.5e6), (3.5, 4e6),
                        (4.0, 4e6), (5.0, 4e6), (6.0, 4e6)):
        got = alloc.allocate(int(estimate), v, t)
        assert got.probe is None and got.layers == {"TR_v": MEDIUM}, t
    got = alloc.allocate(4_000_000, v, 6.5)
    assert got.probe is not None


def test_upgrade_takes_the_lowest_layer_allowed_over_the_hold() -> None:
    alloc = Allocator(hold_s=HOLD_S)
    v = [video("TR_v")]
    alloc.allocate(4_000_000, v, 0.0)
    alloc.allocate(300_000, v, 1.0)  # low
    for t, estimate in ((1.5, 4_000_000), (2.5, 700_000), (3.5, 4_000_000), (4.0, 4_000_000)):
        alloc.allocate(estimate, v, t)
    got = alloc.allocate(4_000_000, v, 4.5)
    assert got.probe is not None and got.probe.target_bps == 555_556  # medium, not high
    alloc.allocate(4_000_000, v, 5.0)
    assert alloc.allocate(4_000_000, v, 5.5).layers == {"TR_v": MEDIUM}


def test_failed_probes_back_off_and_nothing_moves() -> None:
    alloc = Allocator(hold_s=HOLD_S, probe_duration_s=PROBE_S, probe_backoff_s=5.0,
                      probe_backoff_max_s=20.0)
    v = [video("TR_v")]
    probes = []
    t = 0.0
    while t <= 60.0:  # the link stays at 600 k: explore for high, fail, back off
        got = alloc.allocate(600_000, v, t)
        assert got.layers == {"TR_v": MEDIUM} and got.deficient
        if got.probe is not None:
            probes.append((t, got.probe.target_bps))
        t += 0.5
    # deficient from the start: explore at once; a probe never aims above 2 × the estimate
    assert probes[0] == (0.0, 1_200_000)
    starts = [p[0] for p in probes]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert gaps == [6.0, 11.0, 21.0, 21.0]  # 1 s window + 5, 10, 20, 20 (max) s back-off


def test_exploring_probes_step_up_when_the_link_has_room() -> None:
    alloc = Allocator(hold_s=HOLD_S, probe_duration_s=PROBE_S)
    v = [video("TR_v")]
    got = alloc.allocate(600_000, v, 0.0)
    assert got.probe is not None and got.probe.target_bps == 1_200_000  # partial step
    # the estimator follows the probe up (the link has room), but not to 1.89 M at once
    got = alloc.allocate(1_250_000, v, 1.0)
    assert got.layers == {"TR_v": MEDIUM}
    assert got.probe is not None and got.probe.target_bps == 1_888_889  # now all the way
    got = alloc.allocate(1_900_000, v, 2.0)
    assert got.layers == {"TR_v": HIGH}


def test_probe_result_from_the_caller() -> None:
    alloc = Allocator(hold_s=HOLD_S, probe_duration_s=PROBE_S)
    v = [video("TR_v")]
    alloc.allocate(4_000_000, v, 0.0)
    alloc.allocate(600_000, v, 1.0)
    for t in (1.5, 2.5, 3.5):
        alloc.allocate(4_000_000, v, t)
    assert alloc.allocate(4_000_000, v, 4.5).probe is not None
    alloc.probe_result(True, 4.7)  # the estimator's probe cluster says yes before the end
    assert alloc.allocate(4_000_000, v, 4.8).layers == {"TR_v": HIGH}

    alloc = Allocator(hold_s=HOLD_S, probe_duration_s=PROBE_S, probe_backoff_s=5.0)
    alloc.allocate(4_000_000, v, 0.0)
    alloc.allocate(600_000, v, 1.0)
    for t in (1.5, 2.5, 3.5):
        alloc.allocate(4_000_000, v, t)
    assert alloc.allocate(4_000_000, v, 4.5).probe is not None
    alloc.probe_result(False, 4.7)  # no, although the estimate looks fine: hold again
    got = alloc.allocate(4_000_000, v, 4.8)
    assert got.layers == {"TR_v": MEDIUM} and not got.probing
    assert got.wake_at == 4.8 + HOLD_S
    assert alloc.allocate(4_000_000, v, 7.0).probe is None
    assert alloc.allocate(4_000_000, v, 7.8).probe is not None


def test_congestion_during_a_probe_ends_it() -> None:
    alloc = Allocator(hold_s=HOLD_S, probe_duration_s=PROBE_S)
    v = [video("TR_v")]
    got = alloc.allocate(600_000, v, 0.0)
    assert got.probing
    got = alloc.allocate(400_000, v, 0.5)  # the probe overran the link
    assert got.layers == {"TR_v": LOW} and not got.probing


def test_speaker_switch_moves_high_without_a_probe_after_hold() -> None:
    alloc = Allocator(hold_s=HOLD_S)
    a_speaks = [video("TR_a", is_speaker=True), video("TR_b"), video("TR_c")]
    b_speaks = [video("TR_a"), video("TR_b", is_speaker=True), video("TR_c")]
    got = alloc.allocate(ONE_HIGH_TWO_LOW_BPS, a_speaks, 0.0)
    assert got.layers == {"TR_a": HIGH, "TR_b": LOW, "TR_c": LOW}
    for t in (1.0, 2.0, 3.0):  # nothing moves before the hold: a brief interjection is ignored
        got = alloc.allocate(ONE_HIGH_TWO_LOW_BPS, b_speaks, t)
        assert got.layers == {"TR_a": HIGH, "TR_b": LOW, "TR_c": LOW}
    got = alloc.allocate(ONE_HIGH_TWO_LOW_BPS, b_speaks, 4.0)
    # the same total as before, so no probe: A makes room, B goes high, together
    assert got.probe is None
    assert got.layers == {"TR_a": LOW, "TR_b": HIGH, "TR_c": LOW}


def test_pause_lowest_priority_first_then_resume_highest_first() -> None:
    alloc = Allocator(hold_s=HOLD_S, probe_duration_s=PROBE_S)
    tracks = [video("TR_a", priority=50), video("TR_b", is_speaker=True),
              video("TR_c", priority=200), audio()]
    got = alloc.allocate(1_000_000, tracks, 0.0)
    assert got.layers == {"TR_a": LOW, "TR_b": MEDIUM, "TR_c": LOW}  # B > C > A
    paused = []
    for t, estimate in ((1.0, 500_000), (2.0, 400_000), (3.0, 300_000), (4.0, 250_000)):
        got = alloc.allocate(estimate, tracks, t)
        paused.extend(got.paused)
        assert got.resumed == ()
    # 0.9 × 500 k - 64 k (audio) fits two lows, 0.9 × 300 k - 64 k one; 400 k and 250 k
    # still carry what was allocated before, so nothing changes then
    assert paused == ["TR_a", "TR_c"]
    assert got.layers == {"TR_a": PAUSED, "TR_b": LOW, "TR_c": PAUSED}
    # the link recovers: both resume (one report), once held for 3 s and probed
    resumed = []
    t = 5.0
    while t < 12.0:
        got = alloc.allocate(1_000_000, tracks, t)
        resumed.extend((t, sid) for sid in got.resumed)
        assert got.paused == ()
        t += 0.5
    assert resumed == [(9.0, "TR_c"), (9.0, "TR_a")]  # 5 s + 3 s hold + 1 s probe
    assert got.layers == {"TR_a": LOW, "TR_b": MEDIUM, "TR_c": LOW}


def test_stream_state_reports_and_the_subscribers_own_pause() -> None:
    alloc = Allocator(hold_s=HOLD_S, probe_duration_s=PROBE_S)
    v = video("TR_v")
    got = alloc.allocate(100_000, [v], 0.0)
    assert got.paused == ("TR_v",) and got.layers == {"TR_v": PAUSED}
    assert alloc.allocate(100_000, [v], 0.5).paused == ()  # reported once
    # the subscriber disables it: -1, no report
    got = alloc.allocate(100_000, [video("TR_v", max_layer=-1)], 1.0)
    assert got.layers == {"TR_v": PAUSED} and got.paused == got.resumed == ()
    # enabled again at a higher estimate: back where it was, then up the usual way
    resumed_at = []
    t = 1.5
    while t <= 6.0:
        got = alloc.allocate(1_000_000, [v], t)
        if got.resumed:
            resumed_at.append(t)
        t += 0.5
    assert resumed_at == [1.5 + HOLD_S + PROBE_S] and got.layers == {"TR_v": MEDIUM}
    # nothing arriving: not charged, keeps its allocation; a new track takes the room
    got = alloc.allocate(1_000_000, [video("TR_v", (0, 0, 0)), video("TR_w")], 6.5)
    assert got.layers == {"TR_v": MEDIUM, "TR_w": MEDIUM} and got.allocated_bps == 500_000
    # back: into what is left (0.9 M - 0.5 M), never above where it was
    got = alloc.allocate(1_000_000, [v, video("TR_w")], 7.0)
    assert got.layers == {"TR_v": LOW, "TR_w": MEDIUM} and got.paused == got.resumed == ()
    # an unsubscribed track is forgotten without a report
    got = alloc.allocate(1_000_000, [video("TR_w")], 7.5)
    assert got.layers == {"TR_w": MEDIUM} and got.paused == got.resumed == ()


def test_new_tracks_take_what_is_left() -> None:
    alloc = Allocator(hold_s=HOLD_S)
    got = alloc.allocate(2_100_000, [video("TR_a")], 0.0)
    assert got.layers == {"TR_a": HIGH}
    # a higher-ranked track arrives: it gets what is left now (0.9 × 2.1 M - 1.7 M), and
    # its share after the hold; the total stays what was carried, so no probe
    tracks = [video("TR_a"), video("TR_s", source="screen_share")]
    got = alloc.allocate(2_100_000, tracks, 1.0)
    assert got.layers == {"TR_a": HIGH, "TR_s": LOW}
    assert got.wake_at == 1.0 + HOLD_S
    got = alloc.allocate(2_100_000, tracks, 3.5)
    assert got.layers == {"TR_a": HIGH, "TR_s": LOW}
    got = alloc.allocate(2_100_000, tracks, 4.0)
    assert got.layers == {"TR_a": LOW, "TR_s": HIGH} and got.probe is None


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="priority must be 0..255, not 256"):
        video("TR_v", priority=256)
    with pytest.raises(ValueError, match="track kind must be audio or video, not 'data'"):
        TrackDemand(track_sid="TR_d", kind="data")
    with pytest.raises(ValueError, match="headroom <= tolerance"):
        Allocator(headroom=1.1)
    with pytest.raises(ValueError, match="hold_s must be >= 0"):
        Allocator(hold_s=-1)
    assert video("TR_v").priority == DEFAULT_PRIORITY


# -- recorded traces --------------------------------------------------------------------------
def replay(alloc: Allocator, samples: list[list[Any]],
           demands: Any) -> list[tuple[float, Allocation]]:
    out = []
    for sample in samples:
        t, estimate = sample[0], sample[1]
        out.append((t, alloc.allocate(estimate, demands(sample), t)))
    return out


def test_trace_single_track_ramp_dip_recover() -> None:
    data = trace("single")
    alloc = Allocator(hold_s=HOLD_S, probe_duration_s=PROBE_S)
    steps = replay(alloc, data["samples"],
                   lambda s: [video("TR_v", tuple(s[2])), audio()])
    history = [(t, a.layers["TR_v"]) for t, a in steps]
    by_time = dict(history)
    assert by_time[15.0] == HIGH  # the ramp reached high
    dip = [layer for t, layer in history if 20.5 <= t < 40.0]
    assert max(dip) <= MEDIUM and PAUSED not in dip  # the 600 kbps cap: at most medium
    assert by_time[70.0] == HIGH  # recovered
    first_high_after = min(t for t, layer in history if t >= 40 and layer == HIGH)
    assert first_high_after >= 40.0 + HOLD_S + PROBE_S
    assert_no_fast_oscillation(history, HOLD_S)
    # allocated never exceeds the estimate (audio reserve included) after each call
    for (t, a), sample in zip(steps, data["samples"], strict=True):
        assert a.allocated_bps <= sample[1], t


def test_trace_noisy_estimate_does_not_oscillate() -> None:
    data = trace("noisy")
    alloc = Allocator(hold_s=HOLD_S, probe_duration_s=PROBE_S)
    steps = replay(alloc, data["samples"], lambda s: [video("TR_v", tuple(s[2]))])
    history = [(t, a.layers["TR_v"]) for t, a in steps]
    assert_no_fast_oscillation(history, HOLD_S)
    # what a memoryless fit would do with the same samples: the trace is really noisy
    naive = [(s[0], Allocator().allocate(s[1], [video("TR_v", tuple(s[2]))], s[0])
              .layers["TR_v"]) for s in data["samples"]]
    duration_s = data["samples"][-1][0]
    assert len(changes(naive)) >= 40
    assert len(changes(history)) <= duration_s / (2 * HOLD_S)
    assert {layer for _, layer in history} <= {MEDIUM, HIGH}


def test_trace_three_tracks_priorities_pause_and_resume() -> None:
    data = trace("three_tracks")

    def demands(sample: list[Any]) -> list[TrackDemand]:
        bitrates, speaker = sample[2], sample[3]
        return [audio()] + [video(sid, tuple(b), is_speaker=sid == speaker)
                            for sid, b in bitrates.items()]

    alloc = Allocator(hold_s=HOLD_S, probe_duration_s=PROBE_S)
    steps = replay(alloc, data["samples"], demands)
    at = dict(steps)
    # the cap fits one high + two low: the speaker gets high
    for t in (5.0, 19.5):
        assert at[t].layers == {"TR_a": HIGH, "TR_b": LOW, "TR_c": LOW}, t
    # below the lowest layers' sum: the others pause at once, the speaker keeps low
    assert at[20.0].layers == {"TR_a": LOW, "TR_b": PAUSED, "TR_c": PAUSED}
    assert set(at[20.0].paused) == {"TR_b", "TR_c"}
    for t in (25.0, 39.5):
        assert at[t].layers == {"TR_a": LOW, "TR_b": PAUSED, "TR_c": PAUSED}, t
    resumed = {sid: t for t, a in steps for sid in a.resumed}
    assert set(resumed) == {"TR_b", "TR_c"}
    assert all(40.0 + HOLD_S <= t < 55.0 for t in resumed.values())
    assert at[59.5].layers == {"TR_a": HIGH, "TR_b": LOW, "TR_c": LOW}
    # TR_b speaks from 60 s: it takes high after the hold, TR_a makes room
    assert at[62.5].layers["TR_a"] == HIGH
    assert at[80.0].layers == {"TR_a": LOW, "TR_b": HIGH, "TR_c": LOW}
    for sid in ("TR_a", "TR_b", "TR_c"):
        assert_no_fast_oscillation([(t, a.layers[sid]) for t, a in steps], HOLD_S)
    total_pauses = sum(len(a.paused) for _, a in steps)
    assert total_pauses == 2


@pytest.mark.parametrize("seed", range(20))
def test_invariants_under_random_inputs(seed: int) -> None:
    """Random subscribers, estimates, settings, layer availability and probe verdicts: the
    allocation fits the estimate, respects max_layer, reports pauses consistently and never
    rises within the hold of a fall."""
    rng = random.Random(seed)
    alloc = Allocator(hold_s=HOLD_S, probe_duration_s=PROBE_S)
    sids = [f"TR_{i}" for i in range(rng.randint(1, 5))]
    kinds = {sid: rng.choice(("camera", "camera", "screen_share")) for sid in sids}
    priority = {sid: rng.choice((50, DEFAULT_PRIORITY, 200)) for sid in sids}
    max_layer = dict.fromkeys(sids, HIGH)
    arriving = dict.fromkeys(sids, 0b111)
    mics = [audio(f"TR_mic{i}") for i in range(rng.randint(0, 2))]
    estimate = rng.uniform(100_000, 4_000_000)
    reported: set[str] = set()
    history: dict[str, list[tuple[float, int]]] = {sid: [] for sid in sids}
    speaker = sids[0]
    for step in range(240):
        now = step * 0.5
        estimate = min(max(estimate * rng.choice((0.7, 0.95, 1.0, 1.05, 1.3)), 50_000),
                       6_000_000)
        if rng.random() < 0.05:
            speaker = rng.choice(sids)
        if rng.random() < 0.05:
            sid = rng.choice(sids)
            max_layer[sid] = rng.choice((-1, LOW, MEDIUM, HIGH, HIGH))
        if rng.random() < 0.05:
            sid = rng.choice(sids)
            arriving[sid] = rng.choice((0, 0b001, 0b011, 0b111, 0b111, 0b111))
        if alloc.probing and rng.random() < 0.2:
            alloc.probe_result(rng.random() < 0.5, now)
        tracks = list(mics)
        for sid in sids:
            bitrates = tuple(int(b * rng.uniform(0.9, 1.1)) if arriving[sid] >> i & 1 else 0
                             for i, b in enumerate(LAYERS))
            tracks.append(video(sid, bitrates, source=kinds[sid], priority=priority[sid],
                                is_speaker=sid == speaker, max_layer=max_layer[sid]))
        got = alloc.allocate(int(estimate), tracks, now)
        assert got.allocated_bps <= max(int(estimate), 64_000 * len(mics))
        assert not set(got.paused) & reported and set(got.resumed) <= reported
        reported = (reported | set(got.paused)) - set(got.resumed)
        for sid in sids:
            layer = got.layers[sid]
            assert layer <= max_layer[sid]
            if max_layer[sid] >= 0 and arriving[sid]:
                assert (layer == PAUSED) == (sid in reported)
                history[sid].append((now, layer))
    for sid in sids:
        assert_no_fast_oscillation(history[sid], HOLD_S)


def test_replay_of_a_recorded_run_keeps_priorities_and_never_flaps() -> None:
    """Inputs recorded from a real run (``SFU_ALLOCATOR_TRACE`` while
    tests/integration/test_congestion.py's priorities test ran: three simulcast cameras,
    one at priority 200, a subscriber behind a shaping relay whose cap went from roomy to
    one-high-two-low to below the lowest layers and back)."""
    path = Path(__file__).parent / "traces" / "allocator_recorded_priorities.jsonl.gz"
    rows = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    assert len(rows) > 100 and any(r["estimate_bps"] for r in rows)
    alloc = Allocator()
    history: dict[str, list[tuple[float, int]]] = {}
    preferred_ok = 0
    for row in rows:
        demands = [TrackDemand(**{**t, "layer_bitrates_bps": tuple(t["layer_bitrates_bps"])})
                   for t in row["tracks"]]
        result = alloc.allocate(row["estimate_bps"], demands, row["t"])
        if result.probe is not None:
            alloc.probe_result(True, row["t"] + result.probe.duration_s / 2)
        videos = [d for d in demands if d.kind == "video"]
        top = [d for d in videos if d.priority == 200]
        rest = [d for d in videos if d.priority != 200]
        for d in videos:
            history.setdefault(d.track_sid, []).append((row["t"], result.layers[d.track_sid]))
        if top and rest:
            high = result.layers[top[0].track_sid]
            # the priority track never gets less than a lower-priority one ...
            assert all(high >= result.layers[d.track_sid] for d in rest), row["t"]
            # ... and is never paused while one of them is not
            if high < 0:
                assert all(result.layers[d.track_sid] < 0 for d in rest), row["t"]
            preferred_ok += 1
    assert preferred_ok > 50
    for sid, seq in history.items():
        changes = [(t, layer) for (t, layer), (_, before) in
                   zip(seq[1:], seq, strict=False) if layer != before]
        # no up -> down -> up of one track within the hold time
        for (t1, a), (t2, b), (t3, c) in zip(changes, changes[1:], changes[2:], strict=False):
            if b < a and c > b:
                assert t3 - t2 >= alloc.hold_s - 0.3, (sid, t1, t2, t3)
