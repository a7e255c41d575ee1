"""The room media message interface: commands and events are plain and msgpack-encodable."""

import msgpack

from sfu.room_media import MediaParticipant


def test_participant_state_round_trips_through_msgpack() -> None:
    wire = {"sid": "PA_1", "identity": "alice", "hidden": False,
            "permission": {"can_publish": True, "can_subscribe": False,
                           "can_publish_data": True},
            "tracks": [{"sid": "TR_1", "kind": "video", "mid": "0", "source": "camera", "muted": False,
                        "layers": [{"rid": "q", "quality": "low", "width": 320,
                                    "height": 180}]},
                       {"sid": "TR_2", "kind": "audio", "mid": None, "source": "microphone", "muted": True,
                        "layers": []}],
            "unsubscribed": ["TR_9"]}
    cmd = {"op": "join", "session": "SE_1", "participant": wire}
    decoded = msgpack.unpackb(msgpack.packb(cmd))
    assert decoded == cmd
    member = MediaParticipant.from_wire("SE_1", "room", decoded["participant"])
    assert member.permission.can_subscribe is False
    assert member.tracks["TR_1"].mid == "0" and member.unsubscribed == {"TR_9"}
    assert member.to_wire() == wire
