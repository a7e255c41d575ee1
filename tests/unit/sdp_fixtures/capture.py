"""Capture the SDP fixtures of ``tests/unit/test_webrtc_sdp.py`` from real peers.

Not part of the package and not a test. Re-run it from the repository root when Chromium or
aiortc changes, then run the SDP tests and review the fixture diff::

    python tests/unit/sdp_fixtures/capture.py

The tests read volatile values (ports, ufrags, ssrcs, msids) out of the fixtures, but a few
error-message tests name fixture line numbers: a new Chromium layout may need them updated.

It drives Debian's ``/usr/bin/chromium`` through the PyPI ``playwright`` package (never
``playwright install``) with a fresh profile, and writes next to this file:

- ``chromium_av_datachannel_offer.sdp``: fake microphone + camera (1280x720) ``sendonly`` and a
  data channel, taken after ICE gathering (so it carries ``a=candidate`` lines);
- ``chromium_simulcast_offer.sdp``: camera with three ``sendEncodings`` q/h/f
  (``scaleResolutionDownBy`` 4, 2, 1);
- ``chromium_h264_offer.sdp``: camera with H.264 first through ``setCodecPreferences``;
- ``aiortc_audio_offer.sdp``: an aiortc ``RTCPeerConnection`` with one audio track;
- ``subscriber_offer.sdp`` / ``chromium_subscriber_answer.sdp``: an offer from
  :func:`sfu.webrtc.sdp.offer_subscriber` (audio + video + data channel) and the answer
  Chromium's ``createAnswer`` gives to it.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # the repository root, for sfu.webrtc.sdp

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# localhost is a secure context (getUserMedia needs one); Playwright serves the page itself.
PAGE_URL = "http://localhost/sdp-capture"

JS_AV_DATACHANNEL = """async () => {
  const stream = await navigator.mediaDevices.getUserMedia(
    {audio: true, video: {width: 1280, height: 720}});
  const pc = new RTCPeerConnection();
  pc.addTransceiver(stream.getAudioTracks()[0], {direction: 'sendonly', streams: [stream]});
  pc.addTransceiver(stream.getVideoTracks()[0], {direction: 'sendonly', streams: [stream]});
  pc.createDataChannel('chat');
  await pc.setLocalDescription();
  await new Promise(resolve => {
    if (pc.iceGatheringState === 'complete') { resolve(); return; }
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') resolve();
    });
    setTimeout(resolve, 5000);
  });
  const sdp = pc.localDescription.sdp;
  pc.close();
  stream.getTracks().forEach(t => t.stop());
  return sdp;
}"""

JS_SIMULCAST = """async () => {
  const stream = await navigator.mediaDevices.getUserMedia({video: {width: 1280, height: 720}});
  const pc = new RTCPeerConnection();
  pc.addTransceiver(stream.getVideoTracks()[0], {
    direction: 'sendonly', streams: [stream],
    sendEncodings: [
      {rid: 'q', scaleResolutionDownBy: 4},
      {rid: 'h', scaleResolutionDownBy: 2},
      {rid: 'f', scaleResolutionDownBy: 1},
    ],
  });
  const offer = await pc.createOffer();
  pc.close();
  stream.getTracks().forEach(t => t.stop());
  return offer.sdp;
}"""

JS_H264 = """async () => {
  const stream = await navigator.mediaDevices.getUserMedia({video: {width: 1280, height: 720}});
  const pc = new RTCPeerConnection();
  const transceiver = pc.addTransceiver(
    stream.getVideoTracks()[0], {direction: 'sendonly', streams: [stream]});
  const codecs = RTCRtpReceiver.getCapabilities('video').codecs;
  const h264 = codecs.filter(c => c.mimeType === 'video/H264');
  transceiver.setCodecPreferences(h264.concat(codecs.filter(c => c.mimeType !== 'video/H264')));
  const offer = await pc.createOffer();
  pc.close();
  stream.getTracks().forEach(t => t.stop());
  return offer.sdp;
}"""

JS_ANSWER = """async offer => {
  const pc = new RTCPeerConnection();
  await pc.setRemoteDescription({type: 'offer', sdp: offer});
  const answer = await pc.createAnswer();
  pc.close();
  return answer.sdp;
}"""


def open_page(context: object) -> Page:
    page: Page = context.pages[0] if context.pages else context.new_page()  # type: ignore[attr-defined]
    page.route(PAGE_URL, lambda route: route.fulfill(body="<html></html>", content_type="text/html"))
    page.goto(PAGE_URL)
    return page


def write(name: str, sdp: str) -> None:
    (HERE / name).write_bytes(sdp.encode())  # keep CRLF exactly as the peer wrote it
    print(f"wrote {name} ({len(sdp.splitlines())} lines)")


async def aiortc_offer() -> str:
    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.mediastreams import AudioStreamTrack

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(AudioStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    sdp: str = pc.localDescription.sdp
    await pc.close()
    return sdp


# The subscriber offer of the fixtures; test_webrtc_sdp.py rebuilds it with this function and
# checks it still equals subscriber_offer.sdp before it reads Chromium's answer to it.
SUBSCRIBER_ICE = ("SFUs", "subscriberpasswordsubscr")
SUBSCRIBER_FINGERPRINT = ("sha-256", ":".join(["AB"] * 32))
SUBSCRIBER_CANDIDATE = "1 1 udp 2130706431 127.0.0.1 7882 typ host"
SUBSCRIBER_SESSION_ID = 4611686018427387904


def subscriber_offer() -> tuple[str, object]:
    """(offer text, SubscriberOfferState): Opus mid 0, VP8/H.264 mid 1, data channel mid 2."""
    from sfu.webrtc import sdp

    policy = sdp.CodecPolicy()
    tracks = [
        sdp.SubscriberTrack(
            mid="0", kind="audio", stream_id="PA_alice", track_id="TR_mic", ssrc=1111,
            codecs=sdp.default_codecs("audio", policy),
        ),
        sdp.SubscriberTrack(
            mid="1", kind="video", stream_id="PA_alice", track_id="TR_cam", ssrc=2222,
            rtx_ssrc=2223, codecs=sdp.default_codecs("video", policy),
        ),
    ]
    return sdp.offer_subscriber(
        tracks,
        ice_ufrag=SUBSCRIBER_ICE[0],
        ice_pwd=SUBSCRIBER_ICE[1],
        fingerprints=[SUBSCRIBER_FINGERPRINT],
        candidates=[SUBSCRIBER_CANDIDATE],
        policy=policy,
        session_id=SUBSCRIBER_SESSION_ID,
        version=1,
        previous=None,
        data_channel=True,
    )


def main() -> None:
    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="sdp-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        try:
            page = open_page(context)
            write("chromium_av_datachannel_offer.sdp", page.evaluate(JS_AV_DATACHANNEL))
            write("chromium_simulcast_offer.sdp", page.evaluate(JS_SIMULCAST))
            write("chromium_h264_offer.sdp", page.evaluate(JS_H264))
            if "--no-subscriber" not in sys.argv:
                offer, _ = subscriber_offer()
                write("subscriber_offer.sdp", offer)
                write("chromium_subscriber_answer.sdp", page.evaluate(JS_ANSWER, offer))
        finally:
            context.close()
    write("aiortc_audio_offer.sdp", asyncio.run(aiortc_offer()))


if __name__ == "__main__":
    main()
