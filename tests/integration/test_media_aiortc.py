"""aiortc participants through the daemon: both transports, both SRTP profiles."""

from __future__ import annotations

import asyncio

import aiortc.rtcdtlstransport as dtls_mod
import pytest
from aiortc.mediastreams import AudioStreamTrack

from tests.conftest import Daemon
from tests.peers import AiortcParticipant


@pytest.mark.timeout(60)
@pytest.mark.parametrize("profile", ["SRTP_AES128_CM_SHA1_80", "SRTP_AEAD_AES_128_GCM"])
async def test_srtp_profiles(daemon: Daemon, profile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The client (this process) offers one profile only; the daemon must accept it.
    monkeypatch.setattr(dtls_mod, "SRTP_PROFILES", [getattr(dtls_mod, profile)])
    pub = AiortcParticipant(daemon.ws, daemon.token("pub"))
    try:
        await pub.connect()
        await pub.publish(AudioStreamTrack())
        await pub.wait_connected(pub.publisher)
        await pub.wait_connected(pub.subscriber)
        # (the handshake succeeded with only that profile on offer: the daemon agreed to it)
        # RTP arrives at the server: its receiver reports come back with our SSRC in them
        deadline = asyncio.get_running_loop().time() + 10
        while asyncio.get_running_loop().time() < deadline:
            stats = await pub.publisher.getStats()
            remote = [s for s in stats.values() if s.type == "remote-inbound-rtp"]
            if remote and remote[0].packetsLost is not None:
                break
            await asyncio.sleep(0.2)
        assert remote, "no receiver report from the SFU"
    finally:
        await pub.close()


@pytest.mark.timeout(60)
async def test_publisher_answer_echoes_request_id(daemon: Daemon) -> None:
    pub = AiortcParticipant(daemon.ws, daemon.token("pub"))
    try:
        await pub.connect()
        pub.publisher.addTransceiver(AudioStreamTrack(), direction="sendonly")
        await pub.publisher.setLocalDescription(await pub.publisher.createOffer())
        await pub.send({"type": "offer", "id": "o-1", "target": "publisher",
                        "sdp": pub.publisher.localDescription.sdp})
        answer = await asyncio.wait_for(pub.wait_for(lambda m: m["type"] == "answer"), 10)
        assert answer["id"] == "o-1" and answer["target"] == "publisher"
    finally:
        await pub.close()
