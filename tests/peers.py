"""An aiortc participant speaking our signaling protocol (publisher + subscriber transports)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import aioice.ice
import websockets
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from signaling.messages import validate_server_message

# aioice skips loopback addresses when gathering: tests live on 127.0.0.1 only.
aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]


class AiortcParticipant:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.ws: Any = None
        self.join: dict[str, Any] = {}
        self.publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.subscriber = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.messages: list[dict[str, Any]] = []
        #: ``time.monotonic()`` when each of ``messages`` was read (same index)
        self.received_at: list[float] = []
        self.tracks: list[MediaStreamTrack] = []
        self.track_event = asyncio.Event()
        self._answer: asyncio.Future[dict[str, Any]] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]] = []
        self.subscriber_answers = 0

        @self.subscriber.on("track")  # type: ignore[misc]
        def on_track(track: MediaStreamTrack) -> None:
            self.tracks.append(track)
            self.track_event.set()

    async def connect(self) -> dict[str, Any]:
        self.ws = await websockets.connect(f"{self.url}?access_token={self.token}")
        self.join = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        validate_server_message(self.join)
        assert self.join["type"] == "join", self.join
        self._reader = asyncio.create_task(self._read())
        return self.join

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            validate_server_message(msg)
            self.received_at.append(time.monotonic())
            self.messages.append(msg)
            for pred, fut in list(self._waiters):
                if not fut.done() and pred(msg):
                    fut.set_result(msg)
                    self._waiters.remove((pred, fut))
            if msg["type"] == "offer" and msg["target"] == "subscriber":
                await self.subscriber.setRemoteDescription(
                    RTCSessionDescription(sdp=msg["sdp"], type="offer"))
                answer = await self.subscriber.createAnswer()
                await self.subscriber.setLocalDescription(answer)
                await self.send({"type": "answer", "target": "subscriber",
                                 "sdp": self.subscriber.localDescription.sdp})
                self.subscriber_answers += 1
            elif msg["type"] == "answer" and msg["target"] == "publisher":
                if self._answer is not None and not self._answer.done():
                    self._answer.set_result(msg)

    def wait_for(self, pred: Callable[[dict[str, Any]], bool]) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        for msg in self.messages:
            if pred(msg):
                fut.set_result(msg)
                return fut
        self._waiters.append((pred, fut))
        return fut

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(msg))

    async def publish(self, *tracks: MediaStreamTrack, source: str | None = None) -> list[str]:
        """Add tracks, announce them by mid, negotiate; returns the track sids."""
        transceivers = [self.publisher.addTransceiver(t, direction="sendonly") for t in tracks]
        offer = await self.publisher.createOffer()
        await self.publisher.setLocalDescription(offer)
        sids = []
        for track, tr in zip(tracks, transceivers, strict=True):
            rid = f"add-{track.id}"
            await self.send({"type": "add_track", "id": rid, "cid": track.id, "kind": track.kind,
                             "source": source or ("camera" if track.kind == "video" else "microphone"),
                             "mid": tr.mid, "width": 640, "height": 480} if track.kind == "video"
                            else {"type": "add_track", "id": rid, "cid": track.id,
                                  "kind": track.kind, "source": source or "microphone",
                                  "mid": tr.mid})
            published = await asyncio.wait_for(self.wait_for(lambda m, rid=rid: m.get("id") == rid), 10)
            assert published["type"] == "track_published", published
            sids.append(published["track"]["sid"])
        await self.negotiate_publisher()
        return sids

    async def negotiate_publisher(self) -> None:
        if self.publisher.signalingState != "have-local-offer":
            offer = await self.publisher.createOffer()
            await self.publisher.setLocalDescription(offer)
        self._answer = asyncio.get_running_loop().create_future()
        await self.send({"type": "offer", "target": "publisher",
                         "sdp": self.publisher.localDescription.sdp})
        answer = await asyncio.wait_for(self._answer, 10)
        await self.publisher.setRemoteDescription(
            RTCSessionDescription(sdp=answer["sdp"], type="answer"))

    async def track_settings(self, sids: Iterable[str], *, request_id: str | None = None,
                             timeout: float = 10, **fields: Any) -> dict[str, Any] | None:
        """Send ``track_settings`` (``quality``, ``width``, ``height``, ``disabled``, ...).

        With ``request_id`` the server's reply to it (``ack`` or ``error``) is returned.
        """
        msg: dict[str, Any] = {"type": "track_settings", "track_sids": list(sids), **fields}
        if request_id is None:
            await self.send(msg)
            return None
        reply = self.wait_for(lambda m: m.get("id") == request_id)
        await self.send({**msg, "id": request_id})
        return await asyncio.wait_for(reply, timeout)

    async def wait_track(self, kind: str, timeout: float = 10) -> MediaStreamTrack:
        """The first remote track of ``kind`` on the subscriber transport."""
        async def wait() -> MediaStreamTrack:
            while True:
                self.track_event.clear()
                for t in self.tracks:
                    if t.kind == kind:
                        return t
                await self.track_event.wait()

        return await asyncio.wait_for(wait(), timeout)

    async def wait_connected(self, pc: RTCPeerConnection, timeout: float = 15) -> None:
        async def wait() -> None:
            while pc.connectionState != "connected":
                if pc.connectionState == "failed":
                    raise AssertionError("transport failed")
                await asyncio.sleep(0.02)

        await asyncio.wait_for(wait(), timeout)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None:
            await self.ws.close()
        await self.publisher.close()
        await self.subscriber.close()


class FrameRecorder:
    """Reads a remote video track continuously, recording ``(time.monotonic(), width, height)``
    per decoded frame; decoding itself stays in aiortc's decoder thread."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self.track = track
        self.frames: list[tuple[float, int, int]] = []
        self.ended = False
        self._event = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                assert isinstance(frame, VideoFrame), frame
                self.frames.append((time.monotonic(), frame.width, frame.height))
                self._event.set()
        except MediaStreamError:
            self.ended = True
            self._event.set()

    def since(self, t: float) -> list[tuple[float, int, int]]:
        return [f for f in self.frames if f[0] >= t]

    async def wait_frame(self, pred: Callable[[tuple[float, int, int]], bool], *,
                         since: float, timeout: float) -> tuple[float, int, int] | None:
        """The first frame recorded at or after ``since`` that matches, or None on timeout."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            self._event.clear()
            for f in self.frames[checked:]:
                if f[0] >= since and pred(f):
                    return f
            checked = len(self.frames)
            left = deadline - time.monotonic()
            if left <= 0 or self.ended:
                return None
            try:
                await asyncio.wait_for(self._event.wait(), left)
            except TimeoutError:
                return None

    async def stop(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


class _RewritingSocket:
    """A WebSocket whose received text goes through ``rewrite`` before the reader sees it."""

    def __init__(self, ws: Any, rewrite: Callable[[str], str]) -> None:
        self.ws = ws
        self.rewrite = rewrite

    async def recv(self) -> str:
        return self.rewrite(await self.ws.recv())

    def __aiter__(self) -> _RewritingSocket:
        return self

    async def __anext__(self) -> str:
        try:
            return await self.recv()
        except websockets.ConnectionClosedOK:
            raise StopAsyncIteration from None

    async def send(self, data: str) -> None:
        await self.ws.send(data)

    async def close(self) -> None:
        await self.ws.close()


class RelayedParticipant(AiortcParticipant):
    """An AiortcParticipant whose media goes through a relay (e.g. ``tests.lossrelay``): the
    SFU's host candidate in the subscriber offer, the publisher answer and server trickles is
    rewritten to the relay's port before aiortc sees it; ``rewritten`` counts the rewrites."""

    def __init__(self, url: str, token: str, sfu_port: int, relay_port: int) -> None:
        super().__init__(url, token)
        self.sfu_port = sfu_port
        self.relay_port = relay_port
        self.rewritten = 0

    def _rewrite_candidate(self, text: str) -> str:
        new, n = re.subn(rf"\b127\.0\.0\.1 {self.sfu_port} typ host",
                         f"127.0.0.1 {self.relay_port} typ host", text)
        self.rewritten += n
        return new

    def _rewrite(self, raw: str) -> str:
        msg = json.loads(raw)
        if msg.get("type") in ("offer", "answer"):
            msg["sdp"] = self._rewrite_candidate(msg["sdp"])
            assert f" {self.sfu_port} typ" not in msg["sdp"]
        elif msg.get("type") == "trickle" and msg.get("candidate"):
            msg["candidate"]["candidate"] = self._rewrite_candidate(msg["candidate"]["candidate"])
        return json.dumps(msg)

    async def connect(self) -> dict[str, Any]:
        ws = await websockets.connect(f"{self.url}?access_token={self.token}")
        self.ws = _RewritingSocket(ws, self._rewrite)
        self.join = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        validate_server_message(self.join)
        assert self.join["type"] == "join", self.join
        self._reader = asyncio.create_task(self._read())
        return self.join
