"""Chromium → SFU → Chromium: video plays and audio arrives, VP8 and forced H.264."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.browser import chromium, client_page
from tests.conftest import Daemon

pytestmark = [pytest.mark.browser]

PUBLISH_JS = """
async ({url, token, codec}) => {
  const c = new SfuClient(url, token);
  window.pub = c;
  await c.connect();
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: {width: 640, height: 480}});
  if (codec) {
    // prefer one codec by reordering the transceiver's codec list
    const origAdd = c.publisher.addTransceiver.bind(c.publisher);
    c.publisher.addTransceiver = (track, init) => {
      const t = origAdd(track, init);
      if (track.kind === 'video') {
        const caps = RTCRtpSender.getCapabilities('video').codecs;
        const want = caps.filter(x => x.mimeType.toLowerCase() === 'video/' + codec.toLowerCase()
                                 && (!x.sdpFmtpLine || x.sdpFmtpLine.includes('packetization-mode=1')));
        const rest = caps.filter(x => !want.includes(x));
        t.setCodecPreferences([...want, ...rest]);
      }
      return t;
    };
  }
  await c.publish(stream);
  return true;
}
"""

SUBSCRIBE_JS = """
async ({url, token}) => {
  const c = new SfuClient(url, token);
  window.sub = c;
  window.frames = 0;
  window.lastFrameTime = 0;
  c.onTrack = (track, streams) => {
    if (track.kind !== 'video') {
      const a = document.createElement('audio'); a.autoplay = true; a.srcObject = new MediaStream([track]);
      document.body.appendChild(a);
      return;
    }
    const v = document.createElement('video');
    v.autoplay = true; v.muted = true; v.playsInline = true;
    v.srcObject = new MediaStream([track]);
    document.body.appendChild(v);
    window.video = v;
    const onFrame = (now, meta) => { window.frames++; window.lastFrameTime = meta.mediaTime;
                                     v.requestVideoFrameCallback(onFrame); };
    v.requestVideoFrameCallback(onFrame);
  };
  await c.connect();
  return true;
}
"""

STATE_JS = """
async () => {
  const out = {frames: window.frames, width: window.video ? window.video.videoWidth : 0,
               audioPackets: 0, audioEnergy: 0, videoCodec: '', framesDecoded: 0};
  const stats = await window.sub.subscriber.getStats();
  const codecs = {};
  stats.forEach(r => { if (r.type === 'codec') codecs[r.id] = r.mimeType; });
  stats.forEach(r => {
    if (r.type === 'inbound-rtp' && r.kind === 'audio') {
      out.audioPackets += r.packetsReceived; out.audioEnergy += r.totalAudioEnergy || 0;
    }
    if (r.type === 'inbound-rtp' && r.kind === 'video') {
      out.videoCodec = codecs[r.codecId] || ''; out.framesDecoded += r.framesDecoded || 0;
    }
  });
  return out;
}
"""


async def run_pair(d: Daemon, codec: str | None) -> dict[str, Any]:
    async with chromium() as ctx:
        pub = await client_page(ctx, d.http)
        sub = await client_page(ctx, d.http)
        await pub.evaluate(PUBLISH_JS, {"url": d.ws, "token": d.token("pub"), "codec": codec})
        await sub.evaluate(SUBSCRIBE_JS, {"url": d.ws, "token": d.token("sub")})
        deadline = time.monotonic() + 20
        first: dict[str, Any] = {}
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = await sub.evaluate(STATE_JS)
            if state["width"] > 0 and state["frames"] > 0 and not first:
                first = state
                await asyncio.sleep(1.0)
                continue
            if first and state["frames"] > first["frames"] + 10 and state["audioPackets"] > 50:
                break
            await asyncio.sleep(0.2)
        return {"first": first, "last": state}


@pytest.mark.timeout(90)
async def test_chromium_to_chromium_vp8(daemon: Daemon) -> None:
    r = await run_pair(daemon, None)
    assert r["first"], f"no video frame rendered: {r['last']}"
    assert 0 < r["last"]["width"] <= 640  # Chromium starts scaled down, then climbs
    assert r["last"]["frames"] > r["first"]["frames"] + 10  # frames keep advancing
    assert r["last"]["audioPackets"] > 50 and r["last"]["audioEnergy"] > 0
    assert r["last"]["videoCodec"].lower() == "video/vp8"


@pytest.mark.timeout(90)
async def test_chromium_to_chromium_h264(daemon: Daemon) -> None:
    r = await run_pair(daemon, "H264")
    assert r["first"], f"no video frame rendered: {r['last']}"
    assert r["last"]["frames"] > r["first"]["frames"] + 10
    assert r["last"]["videoCodec"].lower() == "video/h264"
