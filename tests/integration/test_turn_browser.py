"""Chromium with iceTransportPolicy 'relay' joins through the embedded TURN relay."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from tests.browser import chromium, client_page
from tests.conftest import free_port, start_daemon, stop_daemon
from tests.integration.test_forward_chromium import STATE_JS, SUBSCRIBE_JS

pytestmark = [pytest.mark.browser]


@pytest.mark.timeout(120)
async def test_relay_only_publisher_through_embedded_turn(tmp_path: Path) -> None:
    turn_port = free_port(socket.SOCK_DGRAM)
    # the default peer policy (no allow_peers): only the SFU's own media address is reachable
    d = await asyncio.to_thread(start_daemon, tmp_path, {
        "turn": {"enabled": True, "listen": [f"127.0.0.1:{turn_port}"],
                 "relay_port_min": 40000, "relay_port_max": 40999}})
    try:
        async with chromium() as ctx:
            pub = await client_page(ctx, d.http)
            sub = await client_page(ctx, d.http)
            ice = await pub.evaluate("""async ({url, token}) => {
                const c = new SfuClient(url, token, {iceTransportPolicy: 'relay'});
                window.pub = c;
                const join = await c.connect();
                const stream = await navigator.mediaDevices.getUserMedia(
                    {video: {width: 640, height: 480}});
                await c.publish(stream);
                return join.ice_servers;
            }""", {"url": d.ws, "token": d.token("relayed")})
            assert ice and ice[0]["urls"] and ice[0]["username"] and ice[0]["credential"]
            assert any(u.startswith("turn:127.0.0.1") for u in ice[0]["urls"])
            await sub.evaluate(SUBSCRIBE_JS, {"url": d.ws, "token": d.token("watcher")})
            deadline = time.monotonic() + 30
            state: dict = {}
            while time.monotonic() < deadline:
                state = await sub.evaluate(STATE_JS)
                if state["frames"] > 10:
                    break
                await asyncio.sleep(0.3)
            assert state["frames"] > 10, state
            pair = await pub.evaluate("""async () => {
                const stats = await window.pub.publisher.getStats();
                let pairId = null; const cands = {};
                stats.forEach(r => {
                    if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
                    if (r.type === 'local-candidate') cands[r.id] = r.candidateType;
                });
                const p = stats.get(pairId);
                return {local: cands[p.localCandidateId], state: p.state};
            }""")
            assert pair == {"local": "relay", "state": "succeeded"}
        _, body = d.get("/metrics", port=d.metrics_port)
        text = body.decode()
        assert "sfu_turn_allocations_created_total" in text
        relayed = [line for line in text.splitlines()
                   if line.startswith('sfu_turn_relayed_packets_total{direction="to_peer"}')]
        assert relayed and float(relayed[0].split()[-1]) > 20
    finally:
        await asyncio.to_thread(stop_daemon, d)
