"""Chromium as the peer: it offers (fake microphone + data channel), the SFU answers ICE-lite.

Debian's chromium driven by Playwright (``executable_path``; never ``playwright install``).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aioice import stun
from aiortc import RTCCertificate

from sfu.webrtc import sdp
from sfu.webrtc.dtls import DtlsSrtpTransport, fingerprints_from_sdp_values, serve_transport
from sfu.webrtc.ice import Addr, Decision, IceCredentials, IceLiteMux, Kind
from sfu.webrtc.udp import TransportHandler, UdpEndpoint
from tests.browser import CHROMIUM, FLAGS

# localhost is a secure context (getUserMedia needs one); Playwright serves the page itself.
PAGE_URL = "http://localhost/sfu-test"

JS_OFFER = """async () => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true});
  const pc = new RTCPeerConnection();
  window.pc = pc;
  stream.getTracks().forEach(track => pc.addTrack(track, stream));
  window.dc = pc.createDataChannel('chat');
  window.messages = [];
  window.ice_states = [];
  pc.oniceconnectionstatechange = () => window.ice_states.push(pc.iceConnectionState);
  window.dc.onmessage = event => window.messages.push(event.data);
  await pc.setLocalDescription();
  return pc.localDescription.sdp;
}"""

pytestmark = [
    pytest.mark.browser,
]

playwright_api = pytest.importorskip("playwright.async_api")


@dataclass(frozen=True)
class Check:
    at: float  # monotonic
    local_ufrag: str
    remote_ufrag: str
    use_candidate: bool
    answered: bool
    reason: str | None


@dataclass
class Server:
    """One SFU transport on a shared port, with spies on what crosses it."""

    endpoint: UdpEndpoint
    transport: DtlsSrtpTransport
    credentials: IceCredentials
    rtp: list[bytes] = field(default_factory=list)
    selected: list[Addr] = field(default_factory=list)
    # Every Binding request that reached the mux.
    checks: list[Check] = field(default_factory=list)
    # monotonic times of DTLS handshake records (content type 22) received.
    handshake_records: list[float] = field(default_factory=list)

    def answer(self, offer_sdp: str) -> tuple[str, sdp.Offer]:
        offer = sdp.parse_offer(offer_sdp)
        answer = sdp.build_answer(
            offer,
            credentials=self.credentials,
            fingerprints=self.transport.local_fingerprint_values,
            candidate=self.endpoint.local_addr,
        )
        return answer, offer


async def open_server(certificate: RTCCertificate, *, restart_grace_s: float = 30.0) -> Server:
    mux = IceLiteMux(restart_grace_s=restart_grace_s)
    endpoint = await UdpEndpoint.open("127.0.0.1", 0, mux=mux, tick_s=0.1)
    credentials = IceCredentials.generate()
    transport = serve_transport(endpoint, "chromium", credentials, certificate)
    server = Server(endpoint, transport, credentials)
    transport.on_rtp = server.rtp.append

    def on_dtls(data: bytes) -> None:
        if data[0] == 22:
            server.handshake_records.append(time.monotonic())
        transport.dtls_received(data)

    endpoint.attach(
        "chromium",
        TransportHandler(on_dtls, transport.srtp_received, on_selected=server.selected.append),
    )
    receive = endpoint.mux.receive_datagram

    def spy(data: bytes, addr: Addr, now: float) -> Decision:
        decision = receive(data, addr, now)
        if data and data[0] < 4:
            attributes = stun.parse_message(data).attributes
            local, _, remote = attributes["USERNAME"].partition(":")
            server.checks.append(
                Check(
                    time.monotonic(), local, remote, "USE-CANDIDATE" in attributes,
                    decision.kind is Kind.STUN, decision.reason,
                )
            )
        return decision

    endpoint.mux.receive_datagram = spy  # type: ignore[method-assign]
    return server


@pytest.fixture
async def page() -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as playwright:
        with tempfile.TemporaryDirectory(prefix="sfu-chromium-") as profile:
            context = await playwright.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=FLAGS
            )
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                await page.route(
                    PAGE_URL,
                    lambda route: route.fulfill(body="<html></html>", content_type="text/html"),
                )
                await page.goto(PAGE_URL)
                yield page
            finally:
                await context.close()


async def until(predicate: object, timeout_s: float = 10.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def connect(page: object, server: Server) -> sdp.Offer:
    answer, offer = server.answer(await page.evaluate(JS_OFFER))  # type: ignore[attr-defined]
    await page.evaluate("a => pc.setRemoteDescription({type: 'answer', sdp: a})", answer)  # type: ignore[attr-defined]
    await server.transport.start(fingerprints_from_sdp_values(offer.fingerprints), timeout_s=10)
    await page.wait_for_function("pc.connectionState === 'connected'", timeout=10_000)  # type: ignore[attr-defined]
    return offer


async def echo_data_channels(server: Server, offer: sdp.Offer) -> None:
    sctp = await server.transport.start_sctp(remote_port=offer.media[-1].sctp_port or 5000)

    def on_channel(channel: object) -> None:
        channel.on("message", lambda message: channel.send(f"echo: {message}"))  # type: ignore[attr-defined]

    sctp.on("datachannel", on_channel)


async def round_trip(page: object, text: str) -> None:
    await page.wait_for_function("dc.readyState === 'open'", timeout=10_000)  # type: ignore[attr-defined]
    await page.evaluate("t => dc.send(t)", text)  # type: ignore[attr-defined]
    await page.wait_for_function(  # type: ignore[attr-defined]
        "t => window.messages.includes('echo: ' + t)", arg=text, timeout=10_000
    )


@pytest.mark.timeout(60)
async def test_chromium_connects_sends_audio_and_uses_a_data_channel(page: object) -> None:
    server = await open_server(RTCCertificate.generateCertificate())
    try:
        offer = await connect(page, server)
        assert server.transport.state == "connected"
        assert len(server.selected) == 1
        await echo_data_channels(server, offer)
        await round_trip(page, "hello")

        await until(lambda: len(server.rtp) >= 10)  # fake microphone, Opus every 20 ms
        assert {p[0] >> 6 for p in server.rtp} == {2}
        assert {p[1] & 0x7F for p in server.rtp} == {int(offer.media[0].fmts[0])}  # opus, 111
        assert server.transport.srtp_errors == 0
        assert server.endpoint.drops == {}
    finally:
        await server.transport.stop()
        server.endpoint.close()


@pytest.mark.timeout(60)
async def test_chromium_ice_restart_keeps_the_dtls_session(page: object) -> None:
    """restartIce() with 1 s of signalling delay and a 2 s grace for our old credentials."""
    server = await open_server(RTCCertificate.generateCertificate(), restart_grace_s=2.0)
    try:
        offer = await connect(page, server)
        await echo_data_channels(server, offer)
        await round_trip(page, "before restart")
        await page.evaluate("window.dtls = pc.sctp.transport")  # type: ignore[attr-defined]
        dtls_before = server.transport.dtls
        handshake_records = len(server.handshake_records)
        assert handshake_records > 0

        restart_sdp = await page.evaluate(  # type: ignore[attr-defined]
            "async () => { pc.restartIce(); await pc.setLocalDescription(); "
            "return pc.localDescription.sdp; }"
        )
        restart_offer = sdp.parse_offer(restart_sdp)
        old, new = server.credentials, IceCredentials.generate()
        assert restart_offer.ice_ufrag != offer.ice_ufrag
        server.endpoint.mux.restart("chromium", new.ufrag, new.pwd, now=server.endpoint.clock())
        server.endpoint.mux.set_remote("chromium", restart_offer.ice_ufrag, restart_offer.ice_pwd)
        server.credentials = new
        restarted_at = time.monotonic()

        # Before it has our answer, Chromium checks its new candidates with OUR OLD ufrag
        # and ITS NEW one: the old credentials must still be valid then.
        await asyncio.sleep(1.0)
        early = [c for c in server.checks if c.at > restarted_at]
        assert any(
            c.local_ufrag == old.ufrag and c.remote_ufrag == restart_offer.ice_ufrag
            and c.answered for c in early
        ), early

        answer, _ = server.answer(restart_sdp)
        await page.evaluate("a => pc.setRemoteDescription({type: 'answer', sdp: a})", answer)  # type: ignore[attr-defined]
        await until(lambda: any(c.local_ufrag == new.ufrag and c.answered for c in server.checks))

        # Once the old credentials expire, Chromium's checks with them go unanswered and it
        # nominates a pair checked with the new ones; media and data channel go on.
        expired_at = restarted_at + 2.0
        await until(
            lambda: any(
                c.local_ufrag == new.ufrag and c.use_candidate and c.answered and c.at > expired_at
                for c in server.checks
            ),
            15,
        )
        rtp_now = len(server.rtp)
        await round_trip(page, "after restart")
        await until(lambda: len(server.rtp) >= rtp_now + 10)

        # The DTLS session is the same on both sides: no handshake record since.
        assert server.transport.dtls is dtls_before
        assert server.transport.state == "connected"
        assert len(server.handshake_records) == handshake_records
        assert await page.evaluate(  # type: ignore[attr-defined]
            "pc.sctp.transport === window.dtls && window.dtls.state === 'connected'"
        )
        ice_states = await page.evaluate("window.ice_states")  # type: ignore[attr-defined]
        assert "failed" not in ice_states and "disconnected" not in ice_states, ice_states
        assert await page.evaluate("pc.connectionState") == "connected"  # type: ignore[attr-defined]
        assert server.transport.srtp_errors == 0
    finally:
        await server.transport.stop()
        server.endpoint.close()
