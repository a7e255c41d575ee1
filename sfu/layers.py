"""Which simulcast layer one subscriber receives of one video track (LiveKit's model).

Three inputs decide, and one rule makes switches freeze-free:

- the **max** layer: what the subscriber asked for in ``track_settings`` (a quality, or the
  size it renders at);
- the **allocation**: what fits its downlink (set by the allocator; unlimited until it
  exists);
- the **available** layers: what the publisher is sending right now.

The *desired* spatial layer is the highest available layer at or below both limits (or,
when none is available there, the lowest available one above). The *current* layer is what
is forwarded. A spatial switch happens only at a keyframe of a switch candidate: until
then the current layer keeps flowing, and the shell asks the publisher for a keyframe on
the desired layer. Before anything was forwarded, any available layer up to the desired
one may start the stream (the first keyframe wins), and moving down, any layer between the
desired and the current one may take over.

Temporal layers (VP8 TID): the forwarded temporal layer drops at once to a lower target
(at a frame boundary) and rises only at a keyframe or a layer-sync (Y) frame.

Pure: no clock, no I/O; the shell calls it at frame boundaries, never per packet when
nothing changes.
"""

from __future__ import annotations

#: VP8 carries at most 4 temporal layers (TID 0..3).
MAX_TEMPORAL = 3
QUALITIES = ("low", "medium", "high")


class LayerSelector:
    """Spatial and temporal layer state of one down-track.

    ``layers`` is the number of spatial layers the track has (1 without simulcast).
    ``current_spatial`` is -1 until a keyframe started the stream (and again while paused).
    """

    __slots__ = ("layers", "max_spatial", "max_temporal", "alloc_spatial", "alloc_temporal",
                 "available", "current_spatial", "current_temporal", "paused", "switches")

    def __init__(self, layers: int = 1) -> None:
        if layers < 1:
            raise ValueError(f"a track has at least one layer, not {layers}")
        self.layers = layers
        self.max_spatial = layers - 1
        self.max_temporal = MAX_TEMPORAL
        self.alloc_spatial = layers - 1
        self.alloc_temporal = MAX_TEMPORAL
        self.available = 0  # bit i set: spatial layer i is arriving
        self.current_spatial = -1
        self.current_temporal = MAX_TEMPORAL
        self.paused = False
        self.switches = 0

    # -- inputs ------------------------------------------------------------------------
    def set_max(self, spatial: int, temporal: int = MAX_TEMPORAL) -> None:
        self.max_spatial = min(max(spatial, 0), self.layers - 1)
        self.max_temporal = min(max(temporal, 0), MAX_TEMPORAL)

    def set_allocation(self, spatial: int, temporal: int = MAX_TEMPORAL) -> None:
        self.alloc_spatial = min(max(spatial, 0), self.layers - 1)
        self.alloc_temporal = min(max(temporal, 0), MAX_TEMPORAL)

    def set_available(self, layer: int, available: bool) -> None:
        if available:
            self.available |= 1 << layer
        else:
            self.available &= ~(1 << layer)

    def pause(self) -> None:
        """Stop forwarding; resuming starts again at a keyframe."""
        self.paused = True
        self.current_spatial = -1

    def resume(self) -> None:
        self.paused = False

    # -- decisions ---------------------------------------------------------------------
    @property
    def desired_spatial(self) -> int:
        """The layer to aim for: -1 when paused or nothing is available."""
        available = self.available
        if self.paused or not available:
            return -1
        limit = min(self.max_spatial, self.alloc_spatial)
        for layer in range(limit, -1, -1):
            if available >> layer & 1:
                return layer
        for layer in range(limit + 1, self.layers):
            if available >> layer & 1:
                return layer
        return -1

    @property
    def target_temporal(self) -> int:
        return min(self.max_temporal, self.alloc_temporal)

    def switch_candidates(self) -> tuple[int, ...]:
        """Layers whose next keyframe should make this down-track switch to them."""
        desired = self.desired_spatial
        current = self.current_spatial
        if desired < 0 or desired == current:
            return ()
        if current < 0:  # starting: the first keyframe at or below the desired layer
            return tuple(i for i in range(desired + 1) if self.available >> i & 1)
        if desired < current:  # going down: any layer in between will do
            return tuple(range(desired, current))
        return (desired,)  # going up: only the desired layer

    def keyframe_wanted(self) -> int:
        """The layer to request a keyframe on (-1: none needed)."""
        desired = self.desired_spatial
        return desired if desired >= 0 and desired != self.current_spatial else -1

    def on_keyframe(self, layer: int) -> bool:
        """A keyframe starts on ``layer``: True if the down-track switches to it now."""
        if layer == self.current_spatial or layer not in self.switch_candidates():
            return False
        self.current_spatial = layer
        self.current_temporal = self.target_temporal  # every temporal layer decodes now
        self.switches += 1
        return True

    def on_frame(self, tid: int, layer_sync: bool, keyframe: bool = False) -> bool:
        """A frame of the current layer starts with temporal id ``tid`` (-1: none):
        True if it is forwarded (all its packets share the answer)."""
        if tid < 0:
            return True
        target = self.target_temporal
        current = self.current_temporal
        if current > target or keyframe:
            current = self.current_temporal = target
        elif tid > current and tid <= target and layer_sync:
            current = self.current_temporal = tid
        return tid <= current


def layer_for_quality(quality: str, qualities: list[str]) -> int:
    """The highest layer whose quality is at most ``quality`` (layers listed low → high)."""
    want = QUALITIES.index(quality)
    best = 0
    for i, q in enumerate(qualities):
        if q in QUALITIES and QUALITIES.index(q) <= want:
            best = i
    return best


def layer_for_size(width: int, height: int, sizes: list[tuple[int, int]]) -> int:
    """The smallest layer at least ``width`` × ``height`` (the top one if none is)."""
    for i, (w, h) in enumerate(sizes):
        if w >= width and h >= height:
            return i
    return max(len(sizes) - 1, 0)
