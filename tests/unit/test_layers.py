"""The layer selector on its own: the transition table, temporal rules, settings mapping."""

from __future__ import annotations

import pytest

from sfu.layers import MAX_TEMPORAL, LayerSelector, layer_for_quality, layer_for_size

ALL = 0b111


def selector(*, available: int = ALL, max_spatial: int = 2, alloc: int = 2,
             current: int = -1) -> LayerSelector:
    sel = LayerSelector(3)
    for layer in range(3):
        sel.set_available(layer, bool(available >> layer & 1))
    sel.set_max(max_spatial)
    sel.set_allocation(alloc)
    sel.current_spatial = current
    return sel


# (available, max, allocation, current) -> (desired, switch candidates, keyframe wanted on)
TABLE = [
    # starting: the first keyframe at or below the desired layer starts the stream
    ((ALL, 2, 2, -1), (2, (0, 1, 2), 2)),
    ((ALL, 0, 2, -1), (0, (0,), 0)),
    ((0b011, 2, 2, -1), (1, (0, 1), 1)),  # top layer not arriving
    ((0b100, 0, 2, -1), (2, (2,), 2)),  # only a higher layer: take it rather than nothing
    ((0, 2, 2, -1), (-1, (), -1)),  # nothing arriving yet
    # steady: nothing to do
    ((ALL, 1, 2, 1), (1, (), -1)),
    ((ALL, 2, 2, 2), (2, (), -1)),
    # going up: only the desired layer's keyframe switches
    ((ALL, 2, 2, 0), (2, (2,), 2)),
    ((ALL, 1, 2, 0), (1, (1,), 1)),
    # the allocation caps the max
    ((ALL, 2, 1, 0), (1, (1,), 1)),
    ((ALL, 2, 0, 2), (0, (0, 1), 0)),
    # going down: any layer in between takes over
    ((ALL, 0, 2, 2), (0, (0, 1), 0)),
    ((ALL, 1, 2, 2), (1, (1,), 1)),
    # the current layer stopped arriving: fall back to the best one still there
    ((0b011, 2, 2, 2), (1, (1,), 1)),
    ((0b001, 2, 2, 2), (0, (0, 1), 0)),
    # nothing arrives at all: keep what we have, ask for nothing
    ((0, 2, 2, 1), (-1, (), -1)),
]


@pytest.mark.parametrize(("state", "expected"), TABLE)
def test_transition_table(state: tuple[int, int, int, int],
                          expected: tuple[int, tuple[int, ...], int]) -> None:
    available, max_spatial, alloc, current = state
    sel = selector(available=available, max_spatial=max_spatial, alloc=alloc, current=current)
    assert (sel.desired_spatial, sel.switch_candidates(), sel.keyframe_wanted()) == expected


@pytest.mark.parametrize(("state", "keyframe_on", "switches_to"), [
    ((ALL, 2, 2, 1), 0, 1),  # going up: a lower layer's keyframe changes nothing
    ((ALL, 2, 2, 1), 1, 1),  # a keyframe of the current layer is not a switch
    ((ALL, 2, 2, 1), 2, 2),
    ((ALL, 2, 2, -1), 0, 0),  # starting: the first keyframe at or below wins
    ((ALL, 1, 2, -1), 2, -1),  # ... but never above the desired layer
    ((ALL, 0, 2, 2), 1, 1),  # going down: an in-between layer takes over ...
    ((ALL, 0, 2, 1), 0, 0),  # ... and the desired one later
    ((ALL, 0, 2, 2), 2, 2),
])
def test_switches_only_at_a_candidate_keyframe(state: tuple[int, int, int, int],
                                               keyframe_on: int, switches_to: int) -> None:
    available, max_spatial, alloc, current = state
    sel = selector(available=available, max_spatial=max_spatial, alloc=alloc, current=current)
    switched = sel.on_keyframe(keyframe_on)
    assert switched == (switches_to != current)
    assert sel.current_spatial == switches_to
    assert sel.switches == int(switched)


def test_a_full_request_cycle_keeps_the_current_layer_until_the_keyframe() -> None:
    sel = selector()
    assert sel.on_keyframe(2) and sel.current_spatial == 2
    sel.set_max(0)
    assert sel.keyframe_wanted() == 0
    assert sel.current_spatial == 2  # forwarded until layer 0's keyframe
    assert sel.on_keyframe(0)
    assert sel.keyframe_wanted() == -1
    sel.set_max(2)
    assert not sel.on_keyframe(1)  # going up takes the desired layer only
    assert sel.on_keyframe(2) and sel.current_spatial == 2


def test_pause_and_resume() -> None:
    sel = selector(current=1)
    sel.pause()
    assert sel.current_spatial == -1 and sel.desired_spatial == -1
    assert sel.switch_candidates() == () and sel.keyframe_wanted() == -1
    assert not sel.on_keyframe(2)
    sel.resume()
    assert sel.keyframe_wanted() == 2 and sel.on_keyframe(1)


def test_temporal_goes_down_at_once_and_up_only_at_sync_or_key_frames() -> None:
    sel = selector(current=2)
    assert sel.current_temporal == MAX_TEMPORAL
    assert all(sel.on_frame(tid, False) for tid in (0, 2, 1, 2))
    sel.set_allocation(2, 0)
    assert sel.on_frame(1, False) is False  # lowered at the next frame boundary
    assert sel.current_temporal == 0
    assert sel.on_frame(0, False)
    sel.set_allocation(2, 2)
    assert sel.on_frame(1, False) is False  # not a layer-sync frame: stays down
    assert sel.on_frame(2, True) is True  # a sync frame of TID 2 raises to 2
    assert sel.current_temporal == 2
    sel.set_allocation(2, 1)
    assert sel.on_frame(2, True) is False and sel.current_temporal == 1
    sel.set_allocation(2, 3)
    assert sel.on_frame(0, False, keyframe=True) and sel.current_temporal == 3
    assert sel.on_frame(-1, False)  # no temporal information: always forwarded


def test_a_spatial_switch_resets_the_temporal_layer_to_the_target() -> None:
    sel = selector(current=0)
    sel.set_max(2, 1)
    sel.current_temporal = 0
    assert sel.on_keyframe(2)
    assert sel.current_temporal == 1


def test_settings_map_to_layers() -> None:
    qualities = ["low", "medium", "high"]
    assert [layer_for_quality(q, qualities) for q in qualities] == [0, 1, 2]
    assert layer_for_quality("high", ["low", "medium"]) == 1  # two layers from 640x480
    assert layer_for_quality("low", ["medium", "high"]) == 0
    sizes = [(320, 180), (640, 360), (1280, 720)]
    assert layer_for_size(300, 170, sizes) == 0
    assert layer_for_size(321, 100, sizes) == 1
    assert layer_for_size(1920, 1080, sizes) == 2
    assert layer_for_size(100, 100, []) == 0


def test_bad_inputs_are_clamped_or_refused() -> None:
    with pytest.raises(ValueError, match="at least one layer"):
        LayerSelector(0)
    sel = LayerSelector(2)
    sel.set_max(7, 9)
    assert (sel.max_spatial, sel.max_temporal) == (1, MAX_TEMPORAL)
    sel.set_allocation(-3, -1)
    assert (sel.alloc_spatial, sel.alloc_temporal) == (0, 0)
