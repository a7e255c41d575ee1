"""The REST API's JSON Schemas (OpenAPI 3.1 schemas are JSON Schema draft 2020-12).

Objects the API shares with signaling — ``ParticipantInfo``, ``TrackInfo``, ``Permission``,
``PermissionUpdate`` and the string types (``room_name``, ``identity``, ``metadata``,
``payload``, …) — are taken from the signaling contract (``signaling/schemas/common.json``),
so one definition serves both. The API's own objects are defined here. Together they are the
OpenAPI document's ``components.schemas``; the request validators use the very same dicts.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from sfu.api import errors as AE
from sfu.api.roles import ROLES
from sfu.rooms import ROOM_TYPES
from signaling.messages import load_schema

PREFIX: Final = "#/components/schemas/"
_COMMON_PREFIX: Final = "common.json#/$defs/"

# Bounds of the API's own fields.
MAX_PARTICIPANTS: Final = 100000
EMPTY_TIMEOUT_MIN_S: Final = 10.0
EMPTY_TIMEOUT_MAX_S: Final = 86400.0
MAX_UNIX_S: Final = 253402300799  # 9999-12-31T23:59:59Z
TOKEN_TTL_MIN_S: Final = 60.0
TOKEN_TTL_MAX_S: Final = 7 * 86400.0
TOKEN_TTL_DEFAULT_S: Final = 6 * 3600.0
PAGE_LIMIT_MAX: Final = 10000
PAGE_LIMIT_DEFAULT: Final = 1000
MAX_ROW_ID: Final = 2**63 - 1  # SQLite's largest integer (cursors, delivery ids)


def ref(name: str) -> dict[str, str]:
    return {"$ref": PREFIX + name}


def _rewrite_refs(node: Any) -> Any:
    """``common.json#/$defs/X`` → ``#/components/schemas/X``, everywhere in ``node``."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_COMMON_PREFIX):
                out[key] = PREFIX + value.removeprefix(_COMMON_PREFIX)
            else:
                out[key] = _rewrite_refs(value)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


_UNIX_S = {"type": "number", "minimum": 0}
_SECONDS = {"type": "number", "minimum": 0}
_COUNT = {"type": "integer", "minimum": 0}
_CURSOR_DESCRIPTION = "Pass it as `cursor` to get the next page; null on the last page."

_OWN: Final[dict[str, dict[str, Any]]] = {
    "OpenApiDocument": {
        "description": "An OpenAPI 3.1 document.",
        "type": "object",
        "properties": {"openapi": {"type": "string", "pattern": "^3\\.1\\."},
                       "info": {"type": "object"}, "paths": {"type": "object"}},
        "required": ["openapi", "info", "paths"],
    },
    "Error": {
        "description": "Every error answer: a stable `code` and a human-readable `message`.",
        "type": "object",
        "properties": {"error": {
            "type": "object",
            "properties": {"code": {"enum": list(AE.CODES)},
                           "message": {"type": "string", "maxLength": 2048}},
            "required": ["code", "message"], "additionalProperties": False}},
        "required": ["error"], "additionalProperties": False,
    },
    "room_type": {
        "description": "`conference`: everyone may publish. `webinar`: only moderators publish "
                       "media (applied to the join tokens minted for the room).",
        "enum": list(ROOM_TYPES),
    },
    "role": {
        "description": "What a join token allows (see docs/api.md, \"Roles\").",
        "enum": list(ROLES),
    },
    "Room": {
        "description": "A room, with its schedule and live facts.",
        "type": "object",
        "properties": {
            "sid": ref("sid"),
            "name": ref("room_name"),
            "type": ref("room_type"),
            "created_at": {**_UNIX_S, "description": "When the room was created (unix s)."},
            "start_time": {**_nullable(_UNIX_S),
                           "description": "When the meeting is scheduled to start (unix s)."},
            "started_at": {**_nullable(_UNIX_S),
                           "description": "When the first participant joined (unix s): "
                                          "the room is live from then on; null before."},
            "live_for_s": {**_nullable(_UNIX_S),
                           "description": "Seconds since `started_at`; null before."},
            "empty_timeout_s": {"type": "number", "minimum": 0},
            "max_participants": {"type": "integer", "minimum": 0,
                                 "description": "0 means unlimited."},
            "waiting_room": {"type": "boolean"},
            "auto_record": {"type": "boolean"},
            "metadata": ref("metadata"),
            "num_participants": {"type": "integer", "minimum": 0,
                                 "description": "Visible participants in the room now."},
        },
        "required": ["sid", "name", "type", "created_at", "start_time", "started_at",
                     "live_for_s", "empty_timeout_s", "max_participants", "waiting_room",
                     "auto_record", "metadata", "num_participants"],
        "additionalProperties": False,
    },
    "RoomList": {
        "type": "object",
        "properties": {"rooms": {"type": "array", "items": ref("Room")}},
        "required": ["rooms"], "additionalProperties": False,
    },
    "CreateRoom": {
        "description": "Every field is optional: without `name` a fresh name is generated; "
                       "unset limits come from the server's `room` configuration.",
        "type": "object",
        "properties": {
            "name": ref("room_name"),
            "type": {**ref("room_type"), "default": "conference"},
            "max_participants": {"type": "integer", "minimum": 0, "maximum": MAX_PARTICIPANTS,
                                 "description": "0 means unlimited."},
            "empty_timeout_s": {
                "type": "number", "minimum": EMPTY_TIMEOUT_MIN_S,
                "maximum": EMPTY_TIMEOUT_MAX_S,
                "description": "Close the room after it has been empty this long. A room "
                               "nobody joins closes this long after its creation, or after "
                               "`start_time` when that is later."},
            "waiting_room": {"type": "boolean", "default": False},
            "auto_record": {"type": "boolean", "default": False,
                            "description": "`true` needs the `roomRecord` grant."},
            "metadata": ref("metadata"),
            "start_time": {"type": "number", "minimum": 0, "maximum": MAX_UNIX_S,
                           "description": "Scheduled start, unix seconds."},
        },
        "additionalProperties": False,
    },
    "UpdateRoom": {
        "type": "object",
        "properties": {"metadata": ref("metadata")},
        "required": ["metadata"], "additionalProperties": False,
    },
    "ParticipantList": {
        "type": "object",
        "properties": {"room": ref("room_name"),
                       "participants": {"type": "array", "items": ref("ParticipantInfo")}},
        "required": ["room", "participants"], "additionalProperties": False,
    },
    "ParticipantCount": {
        "type": "object",
        "properties": {
            "room": ref("room_name"),
            "count": {"type": "integer", "minimum": 0,
                      "description": "Visible participants (what `max_participants` limits)."},
            "total": {"type": "integer", "minimum": 0,
                      "description": "All participants, hidden ones included."}},
        "required": ["room", "count", "total"], "additionalProperties": False,
    },
    "ParticipantExists": {
        "type": "object",
        "properties": {"room": ref("room_name"), "identity": ref("identity"),
                       "exists": {"type": "boolean"}},
        "required": ["room", "identity", "exists"], "additionalProperties": False,
    },
    "UpdateParticipant": {
        "description": "Only the fields given change; in `permission` only the keys given.",
        "type": "object",
        "properties": {"name": ref("name"), "metadata": ref("metadata"),
                       "permission": ref("PermissionUpdate")},
        "minProperties": 1, "additionalProperties": False,
    },
    "MuteTrack": {
        "type": "object",
        "properties": {"muted": {"type": "boolean"}},
        "required": ["muted"], "additionalProperties": False,
    },
    "SendData": {
        "type": "object",
        "properties": {
            "payload": ref("payload"),
            "kind": {**ref("data_kind"), "default": "reliable"},
            "topic": ref("topic"),
            "destination_identities": {
                "type": "array", "items": ref("identity"), "maxItems": 1024,
                "description": "Only these participants; absent or empty: everyone."},
        },
        "required": ["payload"], "additionalProperties": False,
    },
    "SendDataResult": {
        "type": "object",
        "properties": {"recipients": {"type": "integer", "minimum": 0,
                                      "description": "Connected participants it was sent to."}},
        "required": ["recipients"], "additionalProperties": False,
    },
    "CreateToken": {
        "type": "object",
        "properties": {
            "room": ref("room_name"),
            "identity": ref("identity"),
            "role": {**ref("role"), "default": "participant"},
            "name": ref("name"),
            "metadata": ref("metadata"),
            "ttl_s": {"type": "number", "minimum": TOKEN_TTL_MIN_S,
                      "maximum": TOKEN_TTL_MAX_S, "default": TOKEN_TTL_DEFAULT_S,
                      "description": "Lifetime of the token (seconds). A session outlives "
                                     "it: connected clients get refreshed tokens."},
        },
        "required": ["room", "identity"], "additionalProperties": False,
    },
    "TokenGrant": {
        "description": "The grant the minted token carries (the JWT's `video` claim, "
                       "in snake_case).",
        "type": "object",
        "properties": {name: {"type": "boolean"} for name in (
            "room_join", "can_publish", "can_subscribe", "can_publish_data",
            "can_update_own_metadata", "room_admin", "room_record", "hidden")} | {
            "room": ref("room_name")},
        "required": ["room", "room_join", "can_publish", "can_subscribe", "can_publish_data",
                     "can_update_own_metadata", "room_admin", "room_record", "hidden"],
        "additionalProperties": False,
    },
    "Token": {
        "type": "object",
        "properties": {
            "token": {"type": "string", "minLength": 1},
            "room": ref("room_name"),
            "identity": ref("identity"),
            "role": ref("role"),
            "expires_at": {**_UNIX_S, "description": "The token's `exp` (unix s)."},
            "join_url": {"type": "string", "minLength": 1,
                         "description": "The meeting page for this room and token."},
            "grant": ref("TokenGrant"),
        },
        "required": ["token", "room", "identity", "role", "expires_at", "join_url", "grant"],
        "additionalProperties": False,
    },
    # -- usage records and the webhook outbox ------------------------------------------
    "time": {
        "description": "A time: unix seconds, or an RFC 3339 date-time "
                       "(`2026-11-23T18:00:00Z`, `2026-11-23T19:00:00.5+01:00`).",
        "anyOf": [{"type": "number", "minimum": 0, "maximum": MAX_UNIX_S},
                  {"type": "string", "format": "date-time"}],
    },
    "cursor": {
        "description": "Where the next page starts: the `next_cursor` of the previous page.",
        "type": "integer", "minimum": 0, "maximum": MAX_ROW_ID,
    },
    "page_limit": {
        "description": "The most items in one page.",
        "type": "integer", "minimum": 1, "maximum": PAGE_LIMIT_MAX,
        "default": PAGE_LIMIT_DEFAULT,
    },
    "SessionRecord": {
        "description": "A participant session's usage record (call-detail record): from "
                       "joining a room to leaving it. An open session has `left_at`, "
                       "`duration_s` and `leave_reason` null and running totals.",
        "type": "object",
        "properties": {
            "session_id": {"type": "string", "description": "This session's id."},
            "room": {"type": "string", "description": "The room's name."},
            "room_sid": {"type": "string", "description": "The room's sid: one room, where "
                                                          "names may be reused over time."},
            "participant_sid": {"type": "string"},
            "identity": {"type": "string"},
            "name": {"type": "string"},
            "hidden": {"type": "boolean"},
            "joined_at": {**_UNIX_S, "description": "When it joined (unix s)."},
            "left_at": {**_nullable(_UNIX_S), "description": "When it left (unix s)."},
            "duration_s": {**_nullable(_SECONDS), "description": "`left_at - joined_at`."},
            "leave_reason": {"type": ["string", "null"],
                             "description": "Why it left: `client_request`, "
                                            "`participant_removed`, `room_deleted`, "
                                            "`server_shutdown`, `server_crash`, …"},
            "bytes_in": {**_COUNT, "description": "RTP payload bytes received from it."},
            "bytes_out": {**_COUNT, "description": "RTP payload bytes sent to it."},
            "published_s": {**_SECONDS, "description": "Track-seconds it published."},
            "subscribed_s": {**_SECONDS, "description": "Track-seconds it was subscribed."},
            "average_quality": {"type": ["number", "null"], "minimum": 0, "maximum": 5,
                                "description": "Mean connection quality (MOS, 1..5); null "
                                               "without media."},
        },
        "required": ["session_id", "room", "room_sid", "participant_sid", "identity", "name",
                     "hidden", "joined_at", "left_at", "duration_s", "leave_reason",
                     "bytes_in", "bytes_out", "published_s", "subscribed_s",
                     "average_quality"],
        "additionalProperties": False,
    },
    "SessionPage": {
        "type": "object",
        "properties": {
            "sessions": {"type": "array", "items": ref("SessionRecord"),
                         "description": "In the order they joined."},
            "next_cursor": {"type": ["integer", "null"], "minimum": 0,
                            "description": _CURSOR_DESCRIPTION},
        },
        "required": ["sessions", "next_cursor"], "additionalProperties": False,
    },
    "UsageSummary": {
        "description": "The sessions overlapping the window, summed up.",
        "type": "object",
        "properties": {
            "room": {"type": ["string", "null"], "description": "`room_id`, as given."},
            "from": {**_nullable({"type": "number"}),
                     "description": "The window's start (unix s), as given."},
            "to": {**_nullable({"type": "number"}),
                   "description": "The window's end (unix s), as given."},
            "unique_participants": {**_COUNT, "description": "Distinct identities."},
            "sessions": _COUNT,
            "open_sessions": {**_COUNT, "description": "Sessions not yet ended."},
            "first_join": {**_nullable({"type": "number"}),
                           "description": "The earliest `joined_at` (unix s)."},
            "last_leave": {**_nullable({"type": "number"}),
                           "description": "The latest `left_at`; null while a session is "
                                          "open."},
            "duration_s": {**_nullable({"type": "number"}),
                           "description": "`last_leave - first_join`; null while a "
                                          "session is open."},
            "participant_seconds": {**_SECONDS,
                                    "description": "The sessions' time inside the window, "
                                                   "summed (open ones up to now)."},
            "bytes_in": _COUNT,
            "bytes_out": _COUNT,
        },
        "required": ["room", "from", "to", "unique_participants", "sessions",
                     "open_sessions", "first_join", "last_leave", "duration_s",
                     "participant_seconds", "bytes_in", "bytes_out"],
        "additionalProperties": False,
    },
    "FailedDelivery": {
        "description": "A webhook the server gave up on (`webhooks.max_age_s` after its "
                       "event).",
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 1, "maximum": MAX_ROW_ID,
                   "description": "The delivery's id (for replay)."},
            "event_id": {"type": "string", "description": "The event's id, sent as "
                                                         "`webhook-id`."},
            "event_type": {"type": "string"},
            "endpoint": {"type": "string", "description": "The endpoint's `name`."},
            "room": {"type": "string", "description": "The room's name."},
            "event_created_at": {**_UNIX_S, "description": "When the event happened."},
            "attempts": _COUNT,
            "last_attempt_at": _nullable(_UNIX_S),
            "last_status": {"type": ["integer", "null"],
                            "description": "The HTTP status of the last attempt; null when "
                                           "there was no answer."},
            "last_error": {"type": ["string", "null"]},
        },
        "required": ["id", "event_id", "event_type", "endpoint", "room", "event_created_at",
                     "attempts", "last_attempt_at", "last_status", "last_error"],
        "additionalProperties": False,
    },
    "FailedDeliveryPage": {
        "type": "object",
        "properties": {
            "deliveries": {"type": "array", "items": ref("FailedDelivery"),
                           "description": "Oldest first."},
            "next_cursor": {"type": ["integer", "null"], "minimum": 0,
                            "description": _CURSOR_DESCRIPTION},
        },
        "required": ["deliveries", "next_cursor"], "additionalProperties": False,
    },
    "ReplayFailed": {
        "description": "Which failed deliveries to send again: `ids`, or every one of "
                       "`room_id`, or both (those ids in that room); `{}`: all.",
        "type": "object",
        "properties": {
            "ids": {"type": "array", "maxItems": PAGE_LIMIT_MAX,
                    "items": {"type": "integer", "minimum": 1, "maximum": MAX_ROW_ID}},
            "room_id": {**ref("room_name"), "description": "The room's name."},
        },
        "additionalProperties": False,
    },
    "ReplayResult": {
        "type": "object",
        "properties": {"replayed": {**_COUNT,
                                    "description": "Deliveries queued again (ids that are "
                                                   "not failed deliveries are skipped)."}},
        "required": ["replayed"], "additionalProperties": False,
    },
}


def _closure(own: dict[str, dict[str, Any]], shared: dict[str, Any]) -> dict[str, Any]:
    """``own`` plus every shared definition they reach, sorted by name."""
    out: dict[str, Any] = dict(own)
    todo = [own[name] for name in own]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            target = node.get("$ref")
            if isinstance(target, str):
                name = target.removeprefix(PREFIX)
                if name not in out:
                    if name not in shared:
                        raise KeyError(f"schema {name!r} is not defined")
                    out[name] = shared[name]
                    todo.append(shared[name])
            todo.extend(v for k, v in node.items() if k != "$ref")
        elif isinstance(node, list):
            todo.extend(node)
    return dict(sorted(out.items()))


def components() -> dict[str, Any]:
    """``components.schemas`` of the OpenAPI document (a fresh copy)."""
    shared = _rewrite_refs(load_schema("common")["$defs"])
    overlap = sorted(set(shared) & set(_OWN))
    if overlap:  # pragma: no cover - a naming mistake, caught by any test
        raise RuntimeError(f"API schemas redefine shared ones: {overlap}")
    return _closure(copy.deepcopy(_OWN), shared)
