"""The API's routes: one table that the handlers, the request validators and the OpenAPI
document are all built from (its types are in :mod:`sfu.api.table`), and the room handlers.

Room handlers are pure: :class:`ApiCore` methods take a :class:`Call` (verified claims,
validated path and query parameters and body, ``now``) and return a :class:`Result` — the
status and body to answer and the room service's messages (:class:`~sfu.rooms.Out`) for the
shell to deliver — or raise :class:`~sfu.api.errors.ApiError` / :class:`~sfu.rooms.RoomError`.
Every room operation goes through :class:`~sfu.rooms.RoomService`, exactly as signaling's
admin messages do. The store-backed routes (usage records, failed webhooks) are served by
:class:`~sfu.api.usage.UsageApi`.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, Final

from sfu.api import errors as AE
from sfu.api.auth import check_room, require
from sfu.api.errors import ApiError
from sfu.api.roles import grant_for
from sfu.api.schemas import TOKEN_TTL_DEFAULT_S, ref
from sfu.api.table import Call, Param, Result, Route
from sfu.api.usage import UsageApi
from sfu.rooms import Participant, Room, RoomService
from signaling.auth import mint_token

__all__ = ["ROUTES", "ApiCore", "Call", "Param", "Result", "Route", "join_url", "room_to_api"]

# -- the handlers ----------------------------------------------------------------------------


def room_to_api(room: Room, now: float) -> dict[str, Any]:
    return {
        "sid": room.sid, "name": room.name, "type": room.type, "created_at": room.created_at,
        "start_time": room.start_time, "started_at": room.started_at,
        "live_for_s": room.live_for_s(now), "empty_timeout_s": room.empty_timeout_s,
        "max_participants": room.max_participants, "waiting_room": room.waiting_room,
        "auto_record": room.auto_record, "metadata": room.metadata,
        "num_participants": len(room.visible()),
    }


def join_url(base_url: str, room: str, token: str) -> str:
    """The meeting page for ``room`` with ``token``: ``BASE/call/?roomId=…&token=…``."""
    query = urllib.parse.urlencode({"roomId": room, "token": token})
    return f"{base_url.rstrip('/')}/call/?{query}"


class ApiCore:
    """The API's operations over the room service (pure: ``now`` comes with each call).

    ``minting_keys`` are the HS256 API keys (key → secret) join tokens can be signed with;
    ``participant_media`` gives a participant's media figures by session id, when the server
    runs media; ``join_base_url`` is where the meeting page lives.
    """

    def __init__(self, rooms: RoomService, *, minting_keys: Mapping[str, str],
                 join_base_url: str,
                 participant_media: Callable[[str], dict[str, Any] | None] | None = None,
                 openapi: Callable[[], dict[str, Any]] | None = None) -> None:
        self.rooms = rooms
        self.minting_keys = dict(minting_keys)
        self.join_base_url = join_base_url
        self.participant_media = participant_media
        self._openapi = openapi

    # -- helpers -------------------------------------------------------------------------
    def _room(self, call: Call) -> Room:
        name = call.path["room"]
        check_room(call.who, name)
        return self.rooms.get_room(name)

    def _participant(self, call: Call) -> Participant:
        room = self._room(call)
        return self.rooms.find(room.name, call.path["identity"])

    def _participant_wire(self, p: Participant) -> dict[str, Any]:
        wire = p.to_wire(admin=True)
        media = self.participant_media(p.session_id) if self.participant_media else None
        if media is not None:
            wire["media"] = media
        return wire

    # -- document ------------------------------------------------------------------------
    def openapi(self, call: Call) -> Result:
        return Result(200, self._openapi() if self._openapi else {})

    # -- rooms ---------------------------------------------------------------------------
    def create_room(self, call: Call) -> Result:
        body = call.body or {}
        bound = call.who.grant.room
        name = body.get("name")
        if bound:
            name = bound if name is None else name
            check_room(call.who, name)
        if body.get("auto_record"):
            require(call.who, "room_record", "auto_record")
        max_participants = body.get("max_participants")
        room = self.rooms.create_room(
            name, call.now, empty_timeout_s=body.get("empty_timeout_s"),
            max_participants=None if max_participants is None else int(max_participants),
            metadata=body.get("metadata", ""), room_type=body.get("type", "conference"),
            waiting_room=body.get("waiting_room", False),
            auto_record=body.get("auto_record", False), start_time=body.get("start_time"))
        return Result(201, room_to_api(room, call.now),
                      headers={"Location": f"/api/rooms/{room.name}"})

    def list_rooms(self, call: Call) -> Result:
        bound = call.who.grant.room
        rooms = self.rooms.list_rooms([bound] if bound else None)
        return Result(200, {"rooms": [room_to_api(r, call.now) for r in rooms]})

    def get_room(self, call: Call) -> Result:
        return Result(200, room_to_api(self._room(call), call.now))

    def update_room(self, call: Call) -> Result:
        room = self._room(call)
        body = call.body or {}
        outs = self.rooms.update_room_metadata(room.name, body["metadata"])
        return Result(200, room_to_api(room, call.now), outs)

    def delete_room(self, call: Call) -> Result:
        room = self._room(call)
        return Result(204, None, self.rooms.delete_room(room.name, call.now))

    # -- participants --------------------------------------------------------------------
    def list_participants(self, call: Call) -> Result:
        room = self._room(call)
        return Result(200, {"room": room.name, "participants": [
            self._participant_wire(p) for p in room.participants.values()]})

    def participant_count(self, call: Call) -> Result:
        room = self._room(call)
        return Result(200, {"room": room.name, "count": len(room.visible()),
                            "total": len(room.participants)})

    def get_participant(self, call: Call) -> Result:
        return Result(200, self._participant_wire(self._participant(call)))

    def participant_exists(self, call: Call) -> Result:
        room = self._room(call)
        identity = call.path["identity"]
        return Result(200, {"room": room.name, "identity": identity,
                            "exists": identity in room.participants})

    def remove_participant(self, call: Call) -> Result:
        p = self._participant(call)
        return Result(204, None, self.rooms.remove(p.room, p.identity, call.now))

    def update_participant(self, call: Call) -> Result:
        p = self._participant(call)
        body = call.body or {}
        outs = self.rooms.update_participant(p, name=body.get("name"),
                                             metadata=body.get("metadata"),
                                             permission=body.get("permission"))
        return Result(200, self._participant_wire(p), outs)

    def mute_track(self, call: Call) -> Result:
        p = self._participant(call)
        body = call.body or {}
        sid = call.path["track_sid"]
        outs = self.rooms.set_track_muted(p, sid, body["muted"])
        return Result(200, p.tracks[sid].to_wire(), outs)

    def send_data(self, call: Call) -> Result:
        room = self._room(call)
        body = call.body or {}
        outs = self.rooms.send_data(room.name, payload=body["payload"],
                                    kind=body.get("kind", "reliable"), topic=body.get("topic"),
                                    destination_identities=body.get("destination_identities"))
        return Result(200, {"recipients": len(outs)}, outs)

    # -- tokens --------------------------------------------------------------------------
    def create_token(self, call: Call) -> Result:
        body = call.body or {}
        room_name: str = body["room"]
        check_room(call.who, room_name)
        room = self.rooms.get_room(room_name)
        if not self.minting_keys:
            raise ApiError(501, AE.NOT_IMPLEMENTED,
                           "this server has no HS256 API key (auth.hmac_keys) to sign tokens")
        key = call.who.issuer if call.who.issuer in self.minting_keys else \
            next(iter(self.minting_keys))
        role: str = body.get("role", "participant")
        ttl_s = float(body.get("ttl_s", TOKEN_TTL_DEFAULT_S))
        grant = grant_for(role, room.name, room.type)
        token = mint_token(key, self.minting_keys[key], identity=body["identity"], now=call.now,
                           ttl_s=ttl_s, grant=grant, name=body.get("name", ""),
                           metadata=body.get("metadata", ""))
        return Result(201, {
            "token": token, "room": room.name, "identity": body["identity"], "role": role,
            "expires_at": math.floor(call.now + ttl_s),
            "join_url": join_url(self.join_base_url, room.name, token),
            "grant": {"room": grant.room, "room_join": grant.room_join,
                      "can_publish": grant.can_publish, "can_subscribe": grant.can_subscribe,
                      "can_publish_data": grant.can_publish_data,
                      "can_update_own_metadata": grant.can_update_own_metadata,
                      "room_admin": grant.room_admin, "room_record": grant.room_record,
                      "hidden": grant.hidden},
        })


# -- the table -------------------------------------------------------------------------------

_ROOM = "/api/rooms/{room}"
_WINDOW_DESCRIPTION = (
    "Sessions overlapping the window `[from, to)`: joined before `to` and not left by `from` "
    "(one that left exactly at `from`, or joined exactly at `to`, is outside); an open "
    "session counts up to now. `from` after `to` is 422.")
_ROOM_ID: Final = Param(
    name="room_id", schema=ref("room_name"), required=False,
    description="Only this room: its name (every room of that name, over time) or its sid "
                "(that one room). Required, and equal to the token's room, for a token that "
                "names a room.")
_FROM: Final = Param(name="from", schema=ref("time"), required=False,
                     description="The window's start (inclusive); absent: unbounded.")
_TO: Final = Param(name="to", schema=ref("time"), required=False,
                   description="The window's end (exclusive); absent: unbounded.")
_LIMIT: Final = Param(name="limit", schema=ref("page_limit"), required=False,
                      description="The most items in this page (1..10000, default 1000).")
_CURSOR: Final = Param(name="cursor", schema=ref("cursor"), required=False,
                       description="The previous page's `next_cursor`; absent: the first "
                                   "page.")
_WEBHOOK_ROOM: Final = Param(
    name="room_id", schema=ref("room_name"), required=False,
    description="Only this room's deliveries (its name). Required, and equal to the token's "
                "room, for a token that names a room.")
_PARTICIPANT = _ROOM + "/participants/{identity}"
_BY_NAME: Final = {"room": "$response.body#/name"}

ROUTES: Final[tuple[Route, ...]] = (
    Route(method="GET", path="/api/openapi.json", operation_id="getOpenApi", tag="meta",
          summary="This OpenAPI 3.1 document",
          description="Public: needs no token.", handler=ApiCore.openapi,
          response="OpenApiDocument"),
    # rooms
    Route(method="POST", path="/api/rooms", operation_id="createRoom", tag="rooms",
          summary="Create a room",
          description="Creates a room, named `name` or with a generated name. Needs "
                      "`roomCreate` (for that room, when the token names one; such a token "
                      "creates its own room when `name` is absent); `auto_record: true` also "
                      "needs `roomRecord`. 409 `room_exists` when the name is taken.",
          handler=ApiCore.create_room, grants=("room_create",), body="CreateRoom",
          body_required=False, status=201, response="Room", errors=(409,), location=True,
          links={"getRoom": ("getRoom", _BY_NAME), "updateRoom": ("updateRoom", _BY_NAME),
                 "deleteRoom": ("deleteRoom", _BY_NAME),
                 "listParticipants": ("listParticipants", _BY_NAME),
                 "countParticipants": ("countParticipants", _BY_NAME),
                 "sendData": ("sendData", _BY_NAME)}),
    Route(method="GET", path="/api/rooms", operation_id="listRooms", tag="rooms",
          summary="List rooms",
          description="Needs `roomList`; a token that names a room sees only that room.",
          handler=ApiCore.list_rooms, grants=("room_list",), response="RoomList"),
    Route(method="GET", path=_ROOM, operation_id="getRoom", tag="rooms",
          summary="Get a room, with when it started and how long it has been live",
          description="Needs `roomList` or `roomAdmin`.",
          handler=ApiCore.get_room, grants=("room_list", "room_admin"), response="Room"),
    Route(method="PATCH", path=_ROOM, operation_id="updateRoom", tag="rooms",
          summary="Update a room's metadata",
          description="The room's participants get `room_update`. Needs `roomAdmin`.",
          handler=ApiCore.update_room, grants=("room_admin",), body="UpdateRoom",
          response="Room"),
    Route(method="DELETE", path=_ROOM, operation_id="deleteRoom", tag="rooms",
          summary="Delete a room and disconnect everyone in it",
          description="Every participant gets `leave` with reason `room_deleted`. Needs "
                      "`roomCreate`.",
          handler=ApiCore.delete_room, grants=("room_create",), status=204),
    # participants
    Route(method="GET", path=_ROOM + "/participants", operation_id="listParticipants",
          tag="participants", summary="List a room's participants",
          description="Hidden ones included (`is_hidden`); with media figures when the "
                      "participant has transports. Needs `roomAdmin`.",
          handler=ApiCore.list_participants, grants=("room_admin",),
          response="ParticipantList"),
    Route(method="GET", path=_ROOM + "/participant_count", operation_id="countParticipants",
          tag="participants", summary="Count a room's participants",
          description="Needs `roomAdmin`.",
          handler=ApiCore.participant_count, grants=("room_admin",),
          response="ParticipantCount"),
    Route(method="GET", path=_PARTICIPANT, operation_id="getParticipant", tag="participants",
          summary="Get a participant", description="Needs `roomAdmin`.",
          handler=ApiCore.get_participant, grants=("room_admin",),
          response="ParticipantInfo"),
    Route(method="GET", path=_PARTICIPANT + "/exists", operation_id="participantExists",
          tag="participants", summary="Whether a participant is in a room",
          description="`exists: false` (not 404) when the room is there but the identity is "
                      "not. Needs `roomAdmin`.",
          handler=ApiCore.participant_exists, grants=("room_admin",),
          response="ParticipantExists"),
    Route(method="DELETE", path=_PARTICIPANT, operation_id="removeParticipant",
          tag="participants", summary="Remove a participant",
          description="Its client gets `leave` with reason `participant_removed`, the others "
                      "`participant_left`. Needs `roomAdmin`.",
          handler=ApiCore.remove_participant, grants=("room_admin",), status=204),
    Route(method="PATCH", path=_PARTICIPANT, operation_id="updateParticipant",
          tag="participants", summary="Update a participant's name, metadata or permission",
          description="Only the fields given change. The participant and the room get "
                      "`participant_updated`. Needs `roomAdmin`.",
          handler=ApiCore.update_participant, grants=("room_admin",),
          body="UpdateParticipant", response="ParticipantInfo"),
    Route(method="PATCH", path=_PARTICIPANT + "/tracks/{track_sid}", operation_id="muteTrack",
          tag="participants", summary="Mute or unmute a participant's published track",
          description="While muted the server forwards none of the track's media. The room "
                      "gets `participant_updated`. Needs `roomAdmin`.",
          handler=ApiCore.mute_track, grants=("room_admin",), body="MuteTrack",
          response="TrackInfo"),
    Route(method="POST", path=_ROOM + "/data", operation_id="sendData", tag="participants",
          summary="Send a data message to a room's participants",
          description="Delivered as a `data` message (from no participant) over signaling. "
                      "Needs `roomAdmin`.",
          handler=ApiCore.send_data, grants=("room_admin",), body="SendData",
          response="SendDataResult"),
    # tokens
    Route(method="POST", path="/api/tokens", operation_id="createToken", tag="tokens",
          summary="Mint a join token and its meeting link",
          description="An HS256 token for `identity` in `room` with the grants of `role`, "
                      "and the meeting page's URL for it. The room must exist. Needs "
                      "`roomAdmin` (for that room, when the token names one). 501 when the "
                      "server has no HS256 API key to sign with.",
          handler=ApiCore.create_token, grants=("room_admin",), body="CreateToken",
          status=201, response="Token", errors=(404, 501)),
    # usage records
    Route(method="GET", path="/api/usage/sessions", operation_id="listSessions", tag="usage",
          summary="List participant sessions' usage records (call-detail records)",
          description=_WINDOW_DESCRIPTION + " In join order, a page at a time: pass "
                      "`next_cursor` as `cursor` for the next. Needs `roomAdmin`.",
          store_handler=UsageApi.list_sessions, grants=("room_admin",),
          query=(_ROOM_ID, _FROM, _TO, _LIMIT, _CURSOR), response="SessionPage"),
    Route(method="GET", path="/api/usage/summary", operation_id="getUsageSummary",
          tag="usage", summary="Sum up the sessions in a time window",
          description=_WINDOW_DESCRIPTION + " `participant_seconds` counts only the time "
                      "inside the window. Needs `roomAdmin`.",
          store_handler=UsageApi.summary, grants=("room_admin",),
          query=(_ROOM_ID, _FROM, _TO), response="UsageSummary"),
    Route(method="GET", path="/api/usage/sessions.jsonl", operation_id="exportSessions",
          tag="usage", summary="Export every session in a time window as JSON Lines",
          description=_WINDOW_DESCRIPTION + " One `SessionRecord` per line, in join order, "
                      "streamed as it is read. Needs `roomAdmin`.",
          store_handler=UsageApi.export_sessions, grants=("room_admin",),
          query=(_ROOM_ID, _FROM, _TO), response="SessionRecord",
          media_type="application/jsonl"),
    # webhooks
    Route(method="GET", path="/api/webhooks/failed", operation_id="listFailedWebhooks",
          tag="webhooks", summary="List the webhook deliveries the server gave up on",
          description="Deliveries still undelivered `webhooks.max_age_s` after their event, "
                      "oldest first, a page at a time. Needs `roomAdmin`.",
          store_handler=UsageApi.list_failed, grants=("room_admin",),
          query=(_WEBHOOK_ROOM, _LIMIT, _CURSOR), response="FailedDeliveryPage"),
    Route(method="POST", path="/api/webhooks/failed/replay",
          operation_id="replayFailedWebhooks", tag="webhooks",
          summary="Send failed webhook deliveries again",
          description="Queues them again (`ids`, every one of `room_id`, or all), due now, "
                      "with a fresh `webhooks.max_age_s`; they are sent in order per room "
                      "and endpoint with the same `webhook-id`. Needs `roomAdmin`.",
          store_handler=UsageApi.replay_failed, grants=("room_admin",), body="ReplayFailed",
          response="ReplayResult"),
)
