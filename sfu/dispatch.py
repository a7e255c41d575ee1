"""What a signaling connection may do, and what each client message does to the room state.

Pure: :meth:`Dispatcher.handle` takes a validated client message, the connection's context and
``now``, and returns messages to deliver. Permissions are checked here, on every action, from
the connection's token grants and its participant's (possibly updated) permission.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sfu.rooms import Out, Participant, Permission, RoomError, RoomService
from signaling import errors as E
from signaling.auth import Claims


class MediaHandler(Protocol):
    """The media shell's entry point for offer / answer / trickle messages."""

    def handle(self, p: Participant, msg: dict[str, Any], now: float) -> list[Out]: ...

    def participant_media(self, session_id: str) -> dict[str, Any] | None: ...


@dataclass(slots=True)
class Connection:
    """One WebSocket's identity: its token's claims, and its participant's session if joined."""

    key: str  # routing key: the participant's session id, or a control connection id
    claims: Claims
    participant: Participant | None = None

    @property
    def token_room(self) -> str:
        return self.claims.grant.room


def permission_from_claims(claims: Claims) -> Permission:
    g = claims.grant
    return Permission(
        can_subscribe=g.can_subscribe,
        can_publish=g.can_publish,
        can_publish_data=g.can_publish_data,
        can_publish_sources=tuple(g.can_publish_sources),
        can_update_metadata=g.can_update_own_metadata,
        hidden=g.hidden,
    )


def _denied(what: str) -> RoomError:
    return RoomError(E.PERMISSION_DENIED, f"token does not grant {what}")


class Dispatcher:
    def __init__(self, rooms: RoomService, media: MediaHandler | None = None) -> None:
        self.rooms = rooms
        self.media = media

    def handle(self, conn: Connection, msg: dict[str, Any], now: float) -> list[Out]:
        kind = msg["type"]
        handler = getattr(self, "_on_" + kind, None)
        if handler is None:  # pragma: no cover - the schema set and handlers are kept in step
            raise RoomError(E.UNKNOWN_TYPE, f"unknown message type {kind!r}")
        out: list[Out] = handler(conn, msg, now)
        return out

    # -- helpers -----------------------------------------------------------------------------
    def _reply(self, conn: Connection, msg: dict[str, Any], body: dict[str, Any]) -> Out:
        if "id" in msg:
            body = {**body, "id": msg["id"]}
        return Out(conn.key, body)

    def _ack(self, conn: Connection, msg: dict[str, Any]) -> Out:
        return self._reply(conn, msg, {"type": "ack", "request": msg["type"]})

    def _me(self, conn: Connection) -> Participant:
        if conn.participant is None:
            raise RoomError(E.NOT_JOINED, f"{conn.claims.identity!r} has not joined a room")
        return conn.participant

    def _admin_room(self, conn: Connection, msg: dict[str, Any], grant: str) -> str:
        g = conn.claims.grant
        allowed = {"room_admin": g.room_admin, "room_create": g.room_create,
                   "room_list": g.room_list}[grant]
        if not allowed:
            camel = {"room_admin": "roomAdmin", "room_create": "roomCreate",
                     "room_list": "roomList"}[grant]
            raise _denied(camel)
        room = msg.get("room") or g.room
        if not room:
            raise RoomError(E.INVALID_MESSAGE, f"{msg['type']}.room: required for this token")
        if g.room and room != g.room:
            raise RoomError(E.PERMISSION_DENIED,
                            f"token is limited to room {g.room!r}, not {room!r}")
        return str(room)

    # -- participant messages ----------------------------------------------------------------
    def _on_ping(self, conn: Connection, msg: dict[str, Any], now: float) -> list[Out]:
        body: dict[str, Any] = {"type": "pong", "server_time_ms": round(now * 1000)}
        if "timestamp_ms" in msg:
            body["timestamp_ms"] = msg["timestamp_ms"]
        return [self._reply(conn, msg, body)]

    def _on_leave(self, conn: Connection, msg: dict[str, Any], now: float) -> list[Out]:
        p = self._me(conn)
        out = self.rooms.leave(p.session_id, "client_request", now)
        conn.participant = None
        return [Out(conn.key, {"type": "leave", "reason": "client_request",
                               "can_reconnect": False}, close=E.CLOSE_NORMAL), *out]

    def _on_update_metadata(self, conn: Connection, msg: dict[str, Any],
                            now: float) -> list[Out]:
        p = self._me(conn)
        if not p.permission.can_update_metadata:
            raise _denied("canUpdateOwnMetadata")
        return [self._ack(conn, msg),
                *self.rooms.update_participant(p, name=msg.get("name"),
                                               metadata=msg.get("metadata"))]

    def _on_add_track(self, conn: Connection, msg: dict[str, Any], now: float) -> list[Out]:
        p = self._me(conn)
        _, out = self.rooms.add_track(
            p, cid=msg["cid"], kind=msg["kind"], source=msg["source"],
            name=msg.get("name", ""), mid=msg.get("mid"), width=msg.get("width", 0),
            height=msg.get("height", 0), muted=msg.get("muted", False),
            layers=msg.get("simulcast_layers"), now=now)
        if "id" in msg:
            out[0] = Out(out[0].session_id, {**out[0].msg, "id": msg["id"]})
        return out

    def _on_mute(self, conn: Connection, msg: dict[str, Any], now: float) -> list[Out]:
        p = self._me(conn)
        return [self._ack(conn, msg), *self.rooms.set_track_muted(p, msg["track_sid"],
                                                                  msg["muted"])]

    def _on_subscription(self, conn: Connection, msg: dict[str, Any], now: float) -> list[Out]:
        p = self._me(conn)
        if not p.permission.can_subscribe:
            raise _denied("canSubscribe")
        self.rooms.set_subscribed(p, msg["track_sids"], msg["subscribe"])
        return [self._ack(conn, msg)]

    def _on_track_settings(self, conn: Connection, msg: dict[str, Any],
                           now: float) -> list[Out]:
        p = self._me(conn)
        if not p.permission.can_subscribe:
            raise _denied("canSubscribe")
        if self.media is None:
            raise RoomError(E.NOT_IMPLEMENTED, "this server runs without media")
        return [self._ack(conn, msg), *self.media.handle(p, msg, now)]

    def _media(self, conn: Connection, msg: dict[str, Any], now: float) -> list[Out]:
        p = self._me(conn)
        if msg["type"] == "offer" and msg["target"] != "publisher":
            raise RoomError(E.INVALID_MESSAGE,
                            "offer.target: clients offer on the publisher transport only")
        if msg["type"] == "answer" and msg["target"] != "subscriber":
            raise RoomError(E.INVALID_MESSAGE,
                            "answer.target: clients answer on the subscriber transport only")
        if self.media is None:
            raise RoomError(E.NOT_IMPLEMENTED, "this server runs without media")
        return self.media.handle(p, msg, now)

    _on_offer = _on_answer = _on_trickle = _media

    # -- admin messages ----------------------------------------------------------------------
    def _on_list_participants(self, conn: Connection, msg: dict[str, Any],
                              now: float) -> list[Out]:
        room = self._admin_room(conn, msg, "room_admin")
        r = self.rooms.get_room(room)
        participants = []
        for p in r.participants.values():
            wire = p.to_wire(admin=True)
            media = self.media.participant_media(p.session_id) if self.media else None
            if media is not None:
                wire["media"] = media
            participants.append(wire)
        return [self._reply(conn, msg, {
            "type": "participants_list", "room": room, "participants": participants})]

    def _on_remove_participant(self, conn: Connection, msg: dict[str, Any],
                               now: float) -> list[Out]:
        room = self._admin_room(conn, msg, "room_admin")
        return [self._ack(conn, msg), *self.rooms.remove(room, msg["identity"], now)]

    def _on_mute_published_track(self, conn: Connection, msg: dict[str, Any],
                                 now: float) -> list[Out]:
        room = self._admin_room(conn, msg, "room_admin")
        p = self.rooms.find(room, msg["identity"])
        return [self._ack(conn, msg),
                *self.rooms.set_track_muted(p, msg["track_sid"], msg["muted"])]

    def _on_update_participant(self, conn: Connection, msg: dict[str, Any],
                               now: float) -> list[Out]:
        room = self._admin_room(conn, msg, "room_admin")
        p = self.rooms.find(room, msg["identity"])
        return [self._ack(conn, msg), *self.rooms.update_participant(
            p, name=msg.get("name"), metadata=msg.get("metadata"),
            permission=msg.get("permission"))]

    def _on_send_data(self, conn: Connection, msg: dict[str, Any], now: float) -> list[Out]:
        room = self._admin_room(conn, msg, "room_admin")
        return [self._ack(conn, msg), *self.rooms.send_data(
            room, payload=msg["payload"], kind=msg.get("kind", "reliable"),
            topic=msg.get("topic"), destination_identities=msg.get("destination_identities"))]

    def _on_create_room(self, conn: Connection, msg: dict[str, Any], now: float) -> list[Out]:
        g = conn.claims.grant
        if not g.room_create:
            raise _denied("roomCreate")
        if g.room and msg["name"] != g.room:
            raise RoomError(E.PERMISSION_DENIED, f"token is limited to room {g.room!r}")
        room = self.rooms.create_room(
            msg["name"], now, empty_timeout_s=msg.get("empty_timeout_s"),
            max_participants=msg.get("max_participants"), metadata=msg.get("metadata", ""))
        return [self._reply(conn, msg, {"type": "room_created", "room": room.to_wire()})]

    def _on_list_rooms(self, conn: Connection, msg: dict[str, Any], now: float) -> list[Out]:
        if not conn.claims.grant.room_list:
            raise _denied("roomList")
        rooms = self.rooms.list_rooms(msg.get("names"))
        return [self._reply(conn, msg, {"type": "rooms_list",
                                        "rooms": [r.to_wire() for r in rooms]})]

    def _on_delete_room(self, conn: Connection, msg: dict[str, Any], now: float) -> list[Out]:
        g = conn.claims.grant
        if not g.room_create:
            raise _denied("roomCreate")
        if g.room and msg["room"] != g.room:
            raise RoomError(E.PERMISSION_DENIED, f"token is limited to room {g.room!r}")
        return [self._ack(conn, msg), *self.rooms.delete_room(msg["room"], now)]
