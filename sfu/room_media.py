"""One room's media state behind a message interface.

``RoomMedia.command(cmd, now)`` takes plain, msgpack-encodable commands and returns plain
events, so that a later step can run each room in a worker process with the same seam. The
media shell round-trips every command and event through msgpack at this boundary today, so
anything that could not cross a process boundary fails in every test that touches media.

Commands (``op``):

- ``join`` / ``update``: ``{"op", "session", "participant": {sid, identity, hidden,
  permission: {can_publish, can_subscribe, can_publish_data}, tracks: [{sid, kind, mid,
  source, muted, layers}],
  unsubscribed: [track sid]}}`` — a participant's current state, as the room service has it;
- ``leave``: ``{"op", "session"}``;
- ``signal``: ``{"op", "session", "msg"}`` — an ``offer`` / ``answer`` / ``trickle`` message
  of the signaling protocol;
- ``track_settings``: ``{"op", "session", "msg"}`` — a subscriber's ``track_settings``
  message (layer, pause).

Events: ``{"op": "send", "session", "msg"}`` — a signaling message for a participant.

:meth:`RoomMedia.tick` (from the node's timer) returns the same events: ``speakers_changed``
from the audio levels publishers send (sampled at each tick, never per packet) and
``connection_quality`` from receiver-report figures of both directions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sfu import metrics
from sfu.quality import LinkStats, QualityScorer, participant_stats
from sfu.rooms import RoomError
from sfu.speaker import ActiveSpeakers
from signaling import errors as E

if TYPE_CHECKING:
    from sfu.media import MediaNode, Peer


@dataclass(slots=True)
class MediaPermission:
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True


@dataclass(slots=True)
class MediaTrack:
    sid: str
    kind: str
    mid: str | None
    #: add_track's simulcast_layers: [{rid, quality, width, height}]
    layers: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    muted: bool = False


@dataclass(slots=True)
class MediaParticipant:
    """What the media side knows of a participant (a mirror of the room service's)."""

    session_id: str
    room: str
    sid: str
    identity: str
    hidden: bool
    permission: MediaPermission
    tracks: dict[str, MediaTrack] = field(default_factory=dict)
    unsubscribed: set[str] = field(default_factory=set)

    @classmethod
    def from_wire(cls, session_id: str, room: str, d: dict[str, Any]) -> MediaParticipant:
        perm = d["permission"]
        return cls(
            session_id=session_id, room=room, sid=d["sid"], identity=d["identity"],
            hidden=bool(d["hidden"]),
            permission=MediaPermission(can_publish=bool(perm["can_publish"]),
                                       can_subscribe=bool(perm["can_subscribe"]),
                                       can_publish_data=bool(perm["can_publish_data"])),
            tracks={t["sid"]: MediaTrack(t["sid"], t["kind"], t["mid"], list(t.get("layers", [])),
                                         t.get("source", ""), bool(t.get("muted", False)))
                    for t in d["tracks"]},
            unsubscribed=set(d["unsubscribed"]))

    def to_wire(self) -> dict[str, Any]:
        """The ``participant`` of a join/update command (what :meth:`from_wire` reads)."""
        perm = self.permission
        return {"sid": self.sid, "identity": self.identity, "hidden": self.hidden,
                "permission": {"can_publish": perm.can_publish,
                               "can_subscribe": perm.can_subscribe,
                               "can_publish_data": perm.can_publish_data},
                "tracks": [{"sid": t.sid, "kind": t.kind, "mid": t.mid, "source": t.source,
                            "muted": t.muted, "layers": [dict(layer) for layer in t.layers]}
                           for t in self.tracks.values()],
                "unsubscribed": sorted(self.unsubscribed)}


class RoomMedia:
    """All media of one room: its participants' peers and who receives which track."""

    def __init__(self, node: MediaNode, name: str) -> None:
        self.node = node
        self.name = name
        self.members: dict[str, MediaParticipant] = {}  # by session id
        self.peers: dict[str, Peer] = {}
        self.dirty = False
        room_cfg = node.cfg.room
        self.speakers = ActiveSpeakers(room_cfg.speaker_update_interval_ms / 1000)
        self._audio_packets: dict[str, int] = {}  # audio track sid -> packets at last tick
        self.quality_interval_s = room_cfg.connection_quality_interval_s
        self._scorers: dict[str, QualityScorer] = {}  # by session
        self._sent_quality: dict[str, str] = {}  # by session: the class last announced
        self._rtp_in: dict[str, int] = {}  # by session: publisher packets at last scoring
        self._next_quality = 0.0
        self._quality_rounds = 0

    def command(self, cmd: dict[str, Any], now: float) -> list[dict[str, Any]]:
        op = cmd["op"]
        session = cmd["session"]
        if op in ("join", "update"):
            member = MediaParticipant.from_wire(session, self.name, cmd["participant"])
            self.members[session] = member
            peer = self.peers.get(session)
            if peer is None:
                peer = self.node.new_peer(self, member)
                self.peers[session] = peer
            else:
                peer.participant = member
            for track in member.tracks.values():
                published = self.node.published.get(track.sid)
                if published is not None:
                    published.set_muted(track.muted, now)
            self.dirty = True
            return self.resubscribe()
        if op == "leave":
            gone = self.members.pop(session, None)
            if gone is not None:
                self.speakers.remove(gone.sid)
            self._scorers.pop(session, None)
            self._sent_quality.pop(session, None)
            self._rtp_in.pop(session, None)
            peer = self.peers.pop(session, None)
            if peer is not None:
                self.node.drop_peer(peer)
            self.dirty = True
            return self.resubscribe()
        if op == "signal":
            peer = self.peers.get(session)
            if peer is None:
                raise RoomError(E.NOT_JOINED, "no media session for this participant")
            events = self.node.signal(peer, cmd["msg"], now)
            return events + self.resubscribe()
        if op == "track_settings":
            peer = self.peers.get(session)
            if peer is None:
                raise RoomError(E.NOT_JOINED, "no media session for this participant")
            peer.apply_track_settings(cmd["msg"], now)
            return []
        raise ValueError(f"unknown room media command {op!r}")

    # -- timers ------------------------------------------------------------------------
    def tick(self, now: float) -> list[dict[str, Any]]:
        """Active speakers (every tick) and connection quality (every
        ``connection_quality_interval_s``)."""
        events: list[dict[str, Any]] = []
        node = self.node
        speakers = self.speakers
        for member in self.members.values():
            if member.hidden:
                continue
            for track in member.tracks.values():
                if track.kind != "audio":
                    continue
                published = node.published.get(track.sid)
                if published is None:
                    continue
                packets = published.layers[0].packets
                if packets != self._audio_packets.get(track.sid):  # something new arrived
                    self._audio_packets[track.sid] = packets
                    speakers.observe(member.sid, published.last_audio_level, now)
        changed = speakers.update(now)
        if changed is not None:
            metrics.speaker_updates.inc()
            events += self._to_all({"type": "speakers_changed", "speakers": changed})
        if now >= self._next_quality:
            self._next_quality = now + self.quality_interval_s
            events += self._connection_quality(now)
        return events

    def scorer(self, session: str) -> QualityScorer | None:
        return self._scorers.get(session)

    def _to_all(self, msg: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"op": "send", "session": s, "msg": msg} for s in self.members]

    def _connection_quality(self, now: float) -> list[dict[str, Any]]:
        """Score every participant from both directions' last receiver reports; announce
        the classes that changed (all of them every 5th round)."""
        self._quality_rounds += 1
        full = self._quality_rounds % 5 == 0
        updates = []
        stale = now - 3 * self.quality_interval_s
        for session, member in self.members.items():
            peer = self.peers.get(session)
            if peer is None or member.hidden:
                continue
            uplink: list[LinkStats] = []
            receiving = True
            core = peer.feedback.core if peer.feedback is not None else None
            if core is not None and core.bound:
                for ssrc, block in core.last_reports.items():
                    stream = core.streams.get(ssrc)
                    clock = stream.clock_rate if stream is not None else 90000
                    uplink.append(LinkStats(block.fraction_lost / 256, block.jitter / clock,
                                            packets=core.last_expected.get(ssrc, 0)))
                receiving = core.packets != self._rtp_in.get(session)
                self._rtp_in[session] = core.packets
            downlink = [LinkStats(dt.loss, dt.jitter_s, dt.rtt_s, packets=dt.reported_packets)
                        for dt in peer.downtracks.values() if dt.reported_at >= stale]
            stats = participant_stats(uplink, downlink)
            if stats is None and receiving:
                continue  # no media either way yet
            scorer = self._scorers.get(session)
            if scorer is None:
                scorer = self._scorers[session] = QualityScorer()
            if stats is None:
                score, quality = scorer.update(0.0, 0.0, None, now, receiving=False)
            else:
                score, quality = scorer.update(stats.loss_fraction, stats.jitter_s,
                                               stats.rtt_s, now, receiving=receiving)
            metrics.connection_quality.observe(score)
            if full or self._sent_quality.get(session) != quality:
                self._sent_quality[session] = quality
                updates.append({"participant_sid": member.sid, "quality": quality,
                                "score": score})
        if not updates:
            return []
        return self._to_all({"type": "connection_quality", "updates": updates})

    def resubscribe(self) -> list[dict[str, Any]]:
        """Bring every subscriber transport in line with the room's published tracks."""
        if not self.dirty:
            return []
        self.dirty = False
        node = self.node
        published = [(o, t) for o in self.members.values() if not o.hidden
                     for t in o.tracks.values() if t.sid in node.track_codecs]
        events: list[dict[str, Any]] = []
        for session, member in self.members.items():
            peer = self.peers.get(session)
            if peer is None:
                continue
            if node.update_subscriptions(peer, member, published) or peer.sub_state is None:
                sdp = peer.wanted_offer()
                if sdp is not None:
                    events += node.offer_events(peer, sdp)
        return events
