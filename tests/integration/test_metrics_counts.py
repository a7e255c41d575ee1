"""Each media metric equals a quantity the test's own clients counted independently.

A bench publisher (RID simulcast, audio) and two bench subscribers run through a daemon;
one subscriber changes layers. When the publisher has stopped and everything has drained,
the daemon's counters must equal what the clients saw: packets forwarded = media packets
the subscribers received on their media SSRCs, retransmissions = RTX packets they
received, publisher packets = what the publisher sent, keyframe requests out = PLIs the
publisher received, sender reports = SRs the subscribers received, layer switches = the
size changes the switching subscriber decoded, rooms / participants / tracks gauges = the
room as the test built it, PLIs in = PLIs the subscribers sent, RTCP feedback to the
publisher by kind = what it received, loss and jitter observations = receiver-report blocks
(subscribers' for "down", the publisher's received ones for "up"), RTT observations = blocks
answering a sender report, UDP datagrams and bytes in / out = what the clients sent /
received, and the incoming bitrate per layer ≈ the publisher's own count (within 20 %).
Loopback loses nothing, so there is no slack in the equalities; the clients' counts are read
in the same turn of the test's event loop as the (blocking) scrape.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from itertools import pairwise
from typing import Any

import pytest
import websockets
from aiortc import RTCCertificate

from bench.client import BenchPublisher, BenchSubscriber, Ticker
from bench.media import load_simulcast_media
from signaling.messages import validate_server_message
from tests.conftest import Daemon

pytestmark = pytest.mark.timeout(120)


def scrape(daemon: Daemon) -> dict[str, float]:
    status, body = daemon.get("/metrics", port=daemon.metrics_port)
    assert status == 200
    values: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)", line)
        if m:
            values[m.group(1)] = float(m.group(2))
    return values


async def wait_until(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() >= deadline:
            raise AssertionError(f"no {what} within {timeout_s} s")
        await asyncio.sleep(0.05)


async def test_media_metrics_equal_what_the_clients_counted(daemon: Daemon) -> None:
    layers = load_simulcast_media(width=640, height=360, fps=30, duration_s=2.0)
    certificate = RTCCertificate.generateCertificate()
    ticker = Ticker()
    subs = [BenchSubscriber(daemon.ws, daemon.token(f"sub{i}"), f"sub{i}", certificate, ticker,
                            decode=True, record_frames=True, rng=random.Random(10 + i))
            for i in range(2)]
    pub = BenchPublisher(daemon.ws, daemon.token("pub"), "pub", certificate, layers[-1],
                         layers=layers, rng=random.Random(1))
    before = scrape(daemon)
    try:
        for sub in subs:
            await sub.start(timeout_s=10)
            await sub.wait_connected(10)
        await pub.start(timeout_s=10)
        await wait_until(lambda: all(len(s.core.decoded_frames) >= 20 for s in subs), 15,
                         "decoded video at both subscribers")
        during = scrape(daemon)
        assert during["sfu_rooms"] == 1
        assert during["sfu_participants"] == 3
        assert during['sfu_tracks{direction="published"}'] == 2
        assert during['sfu_tracks{direction="subscribed"}'] == 4
        video = pub.track_sids["video"]
        switcher = subs[1]
        for quality in ("low", "medium", "high"):
            mark = len(switcher.core.decoded_frames)
            await switcher.track_settings([video], quality=quality)
            want = {"low": layers[0], "medium": layers[1], "high": layers[2]}[quality]
            await wait_until(lambda mark=mark, want=want: any(
                (f.width, f.height) == (want.width, want.height)
                for f in switcher.core.decoded_frames[mark:]), 5, f"{quality} frames")
        await asyncio.sleep(1.5)  # a sender report round for every down-track
        await check_admin_figures(daemon)
        # the incoming bitrate per layer = the publisher's own count of what it sent on that
        # layer over the last 2 s (no keyframe requests meanwhile: a steady rate)
        sent = [(time.monotonic(), [layer.video.octets for layer in pub.simulcast.layers])]
        await asyncio.sleep(2.0)
        sent.append((time.monotonic(), [layer.video.octets for layer in pub.simulcast.layers]))
        # the clients' counts and the scrape in one turn of this loop: nothing is sent between
        blocks = sum(sub.core.sent["rr_blocks"] for sub in subs)
        answering_sr = sum(sub.core.sent["rr_blocks_after_sr"] for sub in subs)
        blocks_up = pub.stats()["feedback_received"].get("rr_blocks", 0)
        rates = scrape(daemon)

        def link_delta(name: str) -> float:
            return rates.get(name, 0.0) - before.get(name, 0.0)

        # link figures: one observation per receiver-report block, in both directions
        for histogram in ("sfu_packet_loss_ratio_count", "sfu_jitter_seconds_count"):
            assert link_delta(f'{histogram}{{direction="down"}}') == blocks > 0
            assert link_delta(f'{histogram}{{direction="up"}}') == blocks_up > 0
        # RTT: one per block answering one of our sender reports
        assert link_delta("sfu_rtt_seconds_count") == answering_sr > 0
        for i in range(len(layers)):
            measured = rates[f'sfu_layer_bitrate_bps{{kind="video",layer="{i}"}}']
            counted = (sent[1][1][i] - sent[0][1][i]) * 8 / (sent[1][0] - sent[0][0])
            assert 0.8 * counted <= measured <= 1.25 * counted, (i, measured, counted)
    finally:
        await pub.close()
    # let in-flight packets land and the SFU's last reports go out, then stop counting
    await asyncio.sleep(1.5)
    after = scrape(daemon)
    clients_udp = {k: sum(getattr(c.transport, k) for c in (pub, *subs) if c.transport)
                   for k in ("datagrams_in", "datagrams_out", "bytes_in", "bytes_out")}
    for sub in subs:
        await sub.close()
    ticker.stop()

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    streams = [s for sub in subs for s in sub.core.streams.values()]
    media_received = sum(s.received - s.rtx for s in streams)
    rtx_received = sum(s.rtx for s in streams)
    padding = sum(s.padding for s in streams)
    assert delta("sfu_forwarded_packets_total") == media_received
    assert delta("sfu_retransmitted_packets_total") + delta("sfu_probe_packets_total") \
        == rtx_received
    assert delta("sfu_probe_packets_total") == padding
    core = pub.simulcast
    # what the publisher sent = what the SFU took in + what arrived before the SRTP keys
    # (the publisher's DTLS handshake finishes a moment before the server's)
    early = delta('sfu_udp_dropped_datagrams_total{reason="srtp_before_keys"}')
    assert delta("sfu_publisher_rtp_packets_total") + early == core.packets_sent
    assert delta('sfu_udp_dropped_datagrams_total{reason="srtp_auth_failed"}') == 0
    assert delta('sfu_keyframe_requests_total{direction="out"}') == core.keyframe_requests
    assert delta("sfu_sender_reports_total") == sum(sub.core.srs for sub in subs)
    assert delta('sfu_nacks_total{direction="in"}') == sum(sub.core.sent["nack"] for sub in subs)
    assert delta('sfu_keyframe_requests_total{direction="in"}') == sum(
        sub.core.sent["pli"] for sub in subs)
    # every datagram and byte on the media port, both ways, as the clients counted them
    for direction, client_side in (("in", "out"), ("out", "in")):
        assert delta(f'sfu_udp_datagrams_total{{direction="{direction}"}}') == clients_udp[
            f"datagrams_{client_side}"]
        assert delta(f'sfu_udp_bytes_total{{direction="{direction}"}}') == clients_udp[
            f"bytes_{client_side}"]
    # RTCP feedback the SFU sent the publisher = what the publisher received, by kind
    feedback = pub.stats()["feedback_received"]
    for kind in ("transport_cc", "rr", "remb"):
        assert delta(f'sfu_rtcp_feedback_packets_total{{kind="{kind}"}}') == feedback.get(
            kind, 0), kind
    # layer switches: every change of decoded frame size at a subscriber (the first
    # layer a subscriber gets is a start, not a switch)
    changes = sum(1 for sub in subs for a, b in pairwise(sub.core.decoded_frames)
                  if (a.width, a.height) != (b.width, b.height))
    assert delta("sfu_layer_switches_total") == changes
    assert changes >= 3


async def check_admin_figures(daemon: Daemon) -> None:
    """Per-track figures reach a control plane through list_participants (not labels)."""
    token = daemon.token("ops", "room1", room_join=False, room_admin=True)
    async with websockets.connect(f"{daemon.ws}?access_token={token}") as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "control_ready"
        await ws.send(json.dumps({"type": "list_participants", "id": "lp"}))
        reply: dict[str, Any] = {}
        while reply.get("id") != "lp":
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
    validate_server_message(reply)
    media = {p["identity"]: p["media"] for p in reply["participants"]}
    (video,) = [t for t in media["pub"]["published"] if t["kind"] == "video"]
    assert [layer["rid"] for layer in video["layers"]] == ["q", "h", "f"]
    assert all(layer["active"] and layer["bitrate_bps"] > 0 for layer in video["layers"])
    rates = [layer["bitrate_bps"] for layer in video["layers"]]
    assert rates == sorted(rates)  # low < medium < high
    subs = {t["track_sid"]: t for t in media["sub0"]["subscribed"]}
    assert len(subs) == 2
    (v,) = [t for t in subs.values() if t["kind"] == "video"]
    assert v["layer"] == v["target_layer"] == 2 and not v["paused"] and v["bitrate_bps"] > 0
    assert "rtt_ms" in v and v["loss"] == 0
    (v1,) = [t for t in media["sub1"]["subscribed"] if t["kind"] == "video"]
    assert v1["layer"] == 2  # it asked for high last
    assert media["sub0"]["quality"] in ("excellent", "good")
