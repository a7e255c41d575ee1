"""Rooms, participants and tracks: pure state, shared by signaling and the REST API.

Every mutating call takes ``now`` (monotonic-free unix seconds are fine: only differences are
used) and returns a list of :class:`Out` — messages to deliver to sessions, optionally closing
them. Nothing here does I/O; the signaling shell routes the returned messages.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from signaling import errors as E
from signaling.errors import CLOSE_LEFT, ProtocolError

ROOM_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}\Z")
ROOM_TYPES = ("conference", "webinar")


class RoomError(ProtocolError):
    """A room operation was refused (the code says why)."""


@dataclass(frozen=True, slots=True)
class Out:
    """A message for one session; ``close`` is a WebSocket close code to use after sending."""

    session_id: str
    msg: dict[str, Any]
    close: int | None = None


#: The room events the store records and sends as webhooks, in the order they happen.
EVENT_TYPES = ("room_started", "room_finished", "participant_joined", "participant_left",
               "track_published", "track_unpublished", "recording_started",
               "recording_finished")


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomEvent:
    """Something that happened to a room, for the store and webhooks.

    ``at`` is when it happened (unix s); for ``participant_left`` the session ended at
    ``ended_at`` (when its connection dropped, for a session whose resume window expired).
    """

    type: str
    id: str
    at: float
    room_sid: str
    room: str
    participant: dict[str, Any] | None = None  # sid, identity, name, hidden
    session_id: str | None = None
    track: dict[str, Any] | None = None  # sid, kind, source, name
    reason: str | None = None
    ended_at: float | None = None
    recording: dict[str, Any] | None = None


@dataclass(slots=True, kw_only=True)
class Permission:
    can_subscribe: bool = True
    can_publish: bool = True
    can_publish_data: bool = True
    can_publish_sources: tuple[str, ...] = ()
    can_update_metadata: bool = False
    hidden: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {
            "can_subscribe": self.can_subscribe,
            "can_publish": self.can_publish,
            "can_publish_data": self.can_publish_data,
            "can_publish_sources": list(self.can_publish_sources),
            "can_update_metadata": self.can_update_metadata,
            "hidden": self.hidden,
        }

    def allows_source(self, source: str) -> bool:
        return not self.can_publish_sources or source in self.can_publish_sources


@dataclass(slots=True, kw_only=True)
class Track:
    sid: str
    cid: str
    kind: str
    source: str
    name: str = ""
    muted: bool = False
    mid: str | None = None
    width: int = 0
    height: int = 0
    layers: list[dict[str, Any]] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sid": self.sid, "cid": self.cid, "kind": self.kind, "source": self.source,
            "name": self.name, "muted": self.muted, "mid": self.mid,
            "simulcast": len(self.layers) > 1, "layers": list(self.layers),
        }
        if self.kind == "video":
            out["width"] = self.width
            out["height"] = self.height
        return out


@dataclass(slots=True, kw_only=True)
class Participant:
    sid: str
    identity: str
    name: str
    metadata: str
    permission: Permission
    joined_at: float
    session_id: str
    room: str
    state: str = "joined"
    connected: bool = True
    disconnected_at: float | None = None
    tracks: dict[str, Track] = field(default_factory=dict)
    #: track sids this participant turned off with a ``subscription`` message
    unsubscribed: set[str] = field(default_factory=set)

    @property
    def hidden(self) -> bool:
        return self.permission.hidden

    def to_wire(self, *, admin: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sid": self.sid, "identity": self.identity, "name": self.name,
            "metadata": self.metadata, "state": self.state, "joined_at": self.joined_at,
            "permission": self.permission.to_wire(),
            "tracks": [t.to_wire() for t in self.tracks.values()],
        }
        if admin:
            out["is_hidden"] = self.hidden
        return out


@dataclass(slots=True, kw_only=True)
class Room:
    sid: str
    name: str
    created_at: float
    empty_timeout_s: float
    max_participants: int
    metadata: str = ""
    #: ``conference`` (everyone may publish) or ``webinar`` (only moderators publish media;
    #: applied to the tokens the REST API mints for the room)
    type: str = "conference"
    #: participants wait to be admitted (the meeting page's lobby; stored and reported)
    waiting_room: bool = False
    #: record the room when the recorder is available (stored and reported)
    auto_record: bool = False
    #: when the meeting is scheduled to start (unix s), if scheduled
    start_time: float | None = None
    #: when the first participant joined (unix s): the room is live from then on
    started_at: float | None = None
    participants: dict[str, Participant] = field(default_factory=dict)  # by identity
    empty_since: float | None = None

    def visible(self) -> list[Participant]:
        return [p for p in self.participants.values() if not p.hidden]

    def live_for_s(self, now: float) -> float | None:
        """How long the room has been live (since its first join); None before that."""
        return None if self.started_at is None else max(0.0, now - self.started_at)

    def to_wire(self) -> dict[str, Any]:
        return {
            "sid": self.sid, "name": self.name, "created_at": self.created_at,
            "empty_timeout_s": self.empty_timeout_s, "max_participants": self.max_participants,
            "metadata": self.metadata, "num_participants": len(self.visible()),
        }


class RoomService:
    """All rooms of this node. Pure: callers pass ``now`` and route the returned messages."""

    def __init__(self, *, auto_create: bool, max_participants: int, empty_timeout_s: float,
                 resume_window_s: float, rng: random.Random,
                 on_event: Callable[[RoomEvent], None] | None = None) -> None:
        self.auto_create = auto_create
        #: receives every :class:`RoomEvent`, synchronously, in order (the store's journal)
        self.on_event = on_event
        self.default_max_participants = max_participants
        self.default_empty_timeout_s = empty_timeout_s
        self.resume_window_s = resume_window_s
        self._rng = rng
        self.rooms: dict[str, Room] = {}
        self.by_session: dict[str, Participant] = {}
        #: rooms whose participants, tracks or permissions changed since the media shell
        #: last looked (it empties the set)
        self.dirty_rooms: set[str] = set()

    # -- ids ---------------------------------------------------------------------------------
    def _id(self, prefix: str, n: int = 12) -> str:
        alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        return prefix + "".join(self._rng.choice(alphabet) for _ in range(n))

    def new_session_id(self) -> str:
        return self._id("SE_", 22)

    def _event(self, kind: str, room: Room, now: float, p: Participant | None = None, *,
               track: Track | None = None, reason: str | None = None,
               ended_at: float | None = None) -> None:
        if self.on_event is None:
            return
        self.on_event(RoomEvent(
            type=kind, id=self._id("EV_", 22), at=now, room_sid=room.sid, room=room.name,
            participant=None if p is None else {"sid": p.sid, "identity": p.identity,
                                                "name": p.name, "hidden": p.hidden},
            session_id=None if p is None else p.session_id,
            track=None if track is None else {"sid": track.sid, "kind": track.kind,
                                              "source": track.source, "name": track.name},
            reason=reason, ended_at=ended_at))

    # -- rooms -------------------------------------------------------------------------------
    def create_room(self, name: str | None, now: float, *, empty_timeout_s: float | None = None,
                    max_participants: int | None = None, metadata: str = "",
                    room_type: str = "conference", waiting_room: bool = False,
                    auto_record: bool = False, start_time: float | None = None,
                    exist_ok: bool = False) -> Room:
        """A new room; ``name=None`` picks a fresh generated name.

        A room nobody has joined closes ``empty_timeout_s`` after it was created, or after its
        ``start_time`` when that is later (a meeting scheduled for tomorrow stays until then).
        """
        if name is None:
            name = self._id("room-", 12)
            while name in self.rooms:  # pragma: no cover - 57**12 names
                name = self._id("room-", 12)
        if not ROOM_NAME_RE.match(name):
            raise RoomError(E.INVALID_MESSAGE, "room name must match [A-Za-z0-9_.-]{1,128}")
        if room_type not in ROOM_TYPES:
            raise RoomError(E.INVALID_MESSAGE, f"room type must be one of {', '.join(ROOM_TYPES)}")
        existing = self.rooms.get(name)
        if existing is not None:
            if exist_ok:
                return existing
            raise RoomError(E.ROOM_EXISTS, f"room {name!r} already exists")
        room = Room(
            sid=self._id("RM_"), name=name, created_at=now,
            empty_timeout_s=(self.default_empty_timeout_s if empty_timeout_s is None
                             else empty_timeout_s),
            max_participants=(self.default_max_participants if max_participants is None
                              else max_participants),
            metadata=metadata, type=room_type, waiting_room=waiting_room,
            auto_record=auto_record, start_time=start_time,
            empty_since=now if start_time is None else max(now, start_time),
        )
        self.rooms[name] = room
        self._event("room_started", room, now)
        return room

    def get_room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            raise RoomError(E.ROOM_NOT_FOUND, f"room {name!r} not found")
        return room

    def list_rooms(self, names: Iterable[str] | None = None) -> list[Room]:
        if names is None:
            return list(self.rooms.values())
        wanted = set(names)
        return [r for r in self.rooms.values() if r.name in wanted]

    def delete_room(self, name: str, now: float) -> list[Out]:
        room = self.get_room(name)
        out: list[Out] = []
        for p in list(room.participants.values()):
            out += self._drop(room, p, "room_deleted", now, notify_self=True, announce=False)
        del self.rooms[name]
        self._event("room_finished", room, now, reason="deleted")
        return out

    def update_room_metadata(self, name: str, metadata: str) -> list[Out]:
        room = self.get_room(name)
        room.metadata = metadata
        msg = {"type": "room_update", "room": room.to_wire()}
        return [Out(p.session_id, msg) for p in room.participants.values() if p.connected]

    # -- participants ------------------------------------------------------------------------
    def join(self, room_name: str, *, identity: str, name: str, metadata: str,
             permission: Permission, now: float) -> tuple[Participant, list[Out]]:
        room = self.rooms.get(room_name)
        if room is None:
            if not self.auto_create:
                raise RoomError(E.ROOM_NOT_FOUND, f"room {room_name!r} not found")
            room = self.create_room(room_name, now)
        out: list[Out] = []
        old = room.participants.get(identity)
        if old is None and not permission.hidden and room.max_participants:
            if len(room.visible()) >= room.max_participants:
                raise RoomError(E.ROOM_FULL,
                                f"room {room_name!r} is full ({room.max_participants} participants)")
        if old is not None:
            out += self._drop(room, old, "duplicate_identity", now, notify_self=True)
        p = Participant(
            sid=self._id("PA_"), identity=identity, name=name, metadata=metadata,
            permission=permission, joined_at=now, session_id=self.new_session_id(),
            room=room.name,
        )
        room.participants[identity] = p
        room.empty_since = None
        if room.started_at is None:
            room.started_at = now
        self.dirty_rooms.add(room.name)
        self.by_session[p.session_id] = p
        self._event("participant_joined", room, now, p)
        if not p.hidden:
            msg = {"type": "participant_joined", "participant": p.to_wire()}
            out += [Out(o.session_id, msg) for o in room.participants.values()
                    if o is not p and o.connected]
        return p, out

    def join_message(self, p: Participant, *, resumed: bool) -> dict[str, Any]:
        room = self.rooms[p.room]
        return {
            "type": "join",
            "room": room.to_wire(),
            "participant": p.to_wire(),
            "other_participants": [o.to_wire() for o in room.visible() if o is not p],
            "session_id": p.session_id,
            "resume_window_s": self.resume_window_s,
            "resumed": resumed,
        }

    def participant(self, session_id: str) -> Participant:
        p = self.by_session.get(session_id)
        if p is None:
            raise RoomError(E.NOT_JOINED, "session has no participant")
        return p

    def find(self, room_name: str, identity: str) -> Participant:
        p = self.get_room(room_name).participants.get(identity)
        if p is None:
            raise RoomError(E.NOT_FOUND, f"participant {identity!r} not in room {room_name!r}")
        return p

    def leave(self, session_id: str, reason: str, now: float) -> list[Out]:
        p = self.by_session.get(session_id)
        if p is None:
            return []
        room = self.rooms[p.room]
        out = self._drop(room, p, reason, now, notify_self=False)
        self._note_empty(room, now)
        return out

    def remove(self, room_name: str, identity: str, now: float) -> list[Out]:
        room = self.get_room(room_name)
        p = self.find(room_name, identity)
        out = self._drop(room, p, "participant_removed", now, notify_self=True)
        self._note_empty(room, now)
        return out

    def disconnect(self, session_id: str, now: float) -> None:
        """The WebSocket dropped without ``leave``: keep the participant for the resume window."""
        p = self.by_session.get(session_id)
        if p is not None and p.connected:
            p.connected = False
            p.disconnected_at = now

    def resume(self, session_id: str, *, identity: str, room_name: str) -> Participant:
        p = self.by_session.get(session_id)
        if p is None or p.identity != identity or p.room != room_name:
            raise RoomError(E.RESUME_FAILED, "unknown or expired session")
        p.connected = True
        p.disconnected_at = None
        return p

    def update_participant(self, p: Participant, *, name: str | None = None,
                           metadata: str | None = None,
                           permission: dict[str, Any] | None = None) -> list[Out]:
        if name is not None:
            p.name = name
        if metadata is not None:
            p.metadata = metadata
        was_hidden = p.hidden
        self.dirty_rooms.add(p.room)
        if permission:
            for key, value in permission.items():
                setattr(p.permission, key,
                        tuple(value) if key == "can_publish_sources" else value)
        return self._announce_update(p, was_hidden=was_hidden)

    def add_track(self, p: Participant, *, cid: str, kind: str, source: str, name: str = "",
                  mid: str | None = None, width: int = 0, height: int = 0, muted: bool = False,
                  layers: list[dict[str, Any]] | None = None,
                  now: float) -> tuple[Track, list[Out]]:
        if not p.permission.can_publish:
            raise RoomError(E.PERMISSION_DENIED, "token does not grant canPublish")
        if not p.permission.allows_source(source):
            raise RoomError(E.PERMISSION_DENIED, f"publishing source {source!r} is not allowed")
        for t in p.tracks.values():
            if t.cid == cid:
                raise RoomError(E.INVALID_MESSAGE, f"track cid {cid!r} already added")
        track = Track(sid=self._id("TR_"), cid=cid, kind=kind, source=source, name=name,
                      mid=mid, width=width, height=height, muted=muted,
                      layers=list(layers or []))
        p.tracks[track.sid] = track
        room = self.rooms[p.room]
        self.dirty_rooms.add(room.name)
        self._event("track_published", room, now, p, track=track)
        msg = {"type": "track_published", "participant_sid": p.sid, "track": track.to_wire()}
        out = [Out(p.session_id, {**msg, "cid": cid})]
        if not p.hidden:
            out += [Out(o.session_id, msg) for o in room.participants.values()
                    if o is not p and o.connected]
        return track, out

    def set_subscribed(self, p: Participant, track_sids: list[str], subscribe: bool) -> None:
        if subscribe:
            p.unsubscribed.difference_update(track_sids)
        else:
            p.unsubscribed.update(track_sids)
        self.dirty_rooms.add(p.room)

    def set_track_muted(self, p: Participant, track_sid: str, muted: bool) -> list[Out]:
        track = p.tracks.get(track_sid)
        if track is None:
            raise RoomError(E.NOT_FOUND, f"track {track_sid!r} not found")
        if track.muted == muted:
            return []
        track.muted = muted
        self.dirty_rooms.add(p.room)  # the media side stops / resumes forwarding it
        return self._announce_update(p, was_hidden=p.hidden)

    def send_data(self, room_name: str, *, payload: str, kind: str = "reliable",
                  topic: str | None = None,
                  destination_identities: Iterable[str] | None = None) -> list[Out]:
        """A ``data`` message from the server (an admin) to the room's connected participants,
        or only to ``destination_identities`` when given and not empty."""
        room = self.get_room(room_name)
        wanted = set(destination_identities or ())
        body: dict[str, Any] = {"type": "data", "payload": payload, "kind": kind,
                                "from_identity": None}
        if topic is not None:
            body["topic"] = topic
        return [Out(p.session_id, body) for p in room.participants.values()
                if p.connected and (not wanted or p.identity in wanted)]

    # -- time ------------------------------------------------------------------------------
    def handle_timeout(self, now: float) -> list[Out]:
        out: list[Out] = []
        for room in list(self.rooms.values()):
            for p in list(room.participants.values()):
                if (not p.connected and p.disconnected_at is not None
                        and now - p.disconnected_at >= self.resume_window_s):
                    out += self._drop(room, p, "resume_window_expired", now,
                                      notify_self=False, ended_at=p.disconnected_at)
                    self._note_empty(room, now)
            if (not room.participants and room.empty_since is not None
                    and now - room.empty_since >= room.empty_timeout_s):
                del self.rooms[room.name]
                self._event("room_finished", room, now, reason="empty_timeout")
        return out

    def next_timeout(self) -> float | None:
        times: list[float] = []
        for room in self.rooms.values():
            if not room.participants and room.empty_since is not None:
                times.append(room.empty_since + room.empty_timeout_s)
            for p in room.participants.values():
                if p.disconnected_at is not None:
                    times.append(p.disconnected_at + self.resume_window_s)
        return min(times) if times else None

    def close_all(self, reason: str, now: float) -> list[Out]:
        """Finish every room (the daemon is stopping): each participant leaves with
        ``reason``, then its room finishes."""
        out: list[Out] = []
        for room in list(self.rooms.values()):
            for p in list(room.participants.values()):
                out += self._drop(room, p, reason, now, notify_self=True, announce=False)
            del self.rooms[room.name]
            self._event("room_finished", room, now, reason=reason)
        return out

    def participant_count(self) -> int:
        return len(self.by_session)

    # -- internals ---------------------------------------------------------------------------
    def _note_empty(self, room: Room, now: float) -> None:
        if not room.participants and room.empty_since is None:
            room.empty_since = now

    def _drop(self, room: Room, p: Participant, reason: str, now: float, *, notify_self: bool,
              announce: bool = True, ended_at: float | None = None) -> list[Out]:
        out: list[Out] = []
        self.dirty_rooms.add(room.name)
        if room.participants.get(p.identity) is p:
            del room.participants[p.identity]
        if self.by_session.pop(p.session_id, None) is not None:
            for track in p.tracks.values():
                self._event("track_unpublished", room, now, p, track=track, reason=reason)
            self._event("participant_left", room, now, p, reason=reason,
                        ended_at=now if ended_at is None else min(ended_at, now))
        if notify_self and p.connected:
            out.append(Out(p.session_id, {"type": "leave", "reason": reason,
                                          "can_reconnect": False}, close=CLOSE_LEFT))
        if announce and not p.hidden:
            msg = {"type": "participant_left", "participant_sid": p.sid,
                   "identity": p.identity, "reason": reason}
            out += [Out(o.session_id, msg) for o in room.participants.values() if o.connected]
        return out

    def _announce_update(self, p: Participant, *, was_hidden: bool) -> list[Out]:
        room = self.rooms[p.room]
        others = [o for o in room.participants.values() if o is not p and o.connected]
        out = [Out(p.session_id, {"type": "participant_updated", "participant": p.to_wire()})]
        if was_hidden and not p.hidden:
            msg = {"type": "participant_joined", "participant": p.to_wire()}
        elif p.hidden and not was_hidden:
            msg = {"type": "participant_left", "participant_sid": p.sid,
                   "identity": p.identity, "reason": "hidden"}
        elif p.hidden:
            return out
        else:
            msg = {"type": "participant_updated", "participant": p.to_wire()}
        return out + [Out(o.session_id, msg) for o in others]
