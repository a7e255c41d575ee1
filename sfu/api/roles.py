"""Roles of the join tokens the API mints, and the grant each one gets.

| role          | join | publish media          | subscribe | publish data | own metadata | roomAdmin |
|---------------|------|------------------------|-----------|--------------|--------------|-----------|
| `moderator`   | yes  | yes                    | yes       | yes          | yes          | that room |
| `participant` | yes  | yes (not in a webinar) | yes       | yes          | yes          | no        |
| `viewer`      | yes  | no                     | yes       | no           | no           | no        |

A moderator's ``roomAdmin`` is bound to the token's room: over signaling it may list, mute,
update and remove the room's participants and send data, and nothing in any other room.
"""

from __future__ import annotations

from typing import Final

from signaling.auth import VideoGrant

ROLES: Final = ("participant", "moderator", "viewer")


def grant_for(role: str, room: str, room_type: str) -> VideoGrant:
    """The grant of a ``role`` token for ``room`` (of type ``conference`` or ``webinar``)."""
    if role == "moderator":
        return VideoGrant(room_join=True, room=room, can_publish=True, can_subscribe=True,
                          can_publish_data=True, can_update_own_metadata=True, room_admin=True)
    if role == "participant":
        return VideoGrant(room_join=True, room=room, can_publish=room_type != "webinar",
                          can_subscribe=True, can_publish_data=True,
                          can_update_own_metadata=True)
    if role == "viewer":
        return VideoGrant(room_join=True, room=room, can_publish=False, can_subscribe=True,
                          can_publish_data=False, can_update_own_metadata=False)
    raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
