"""UDP metrics equal what this test sent: with the daemon stopped (SIGSTOP) the test sends N
junk datagrams at its media port, more than its small receive buffer holds; after SIGCONT
the datagrams the daemon received plus the kernel's receive-buffer drops are exactly N,
bytes in are exactly what those datagrams weigh, every one is dropped with a reason, and
nothing is sent back."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from typing import Any

import pytest

from tests.conftest import Daemon

pytestmark = pytest.mark.timeout(60)

N = 3000
SIZE = 1000


def scrape(d: Daemon) -> dict[str, float]:
    status, body = d.get("/metrics", port=d.metrics_port)
    assert status == 200
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)", line)
        if m and not line.startswith("#"):
            out[m.group(1)] = float(m.group(2))
    return out


def test_datagrams_bytes_drops_and_kernel_drops_add_up(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory({"rtc": {"socket_rcvbuf_bytes": 65536}})
    before = scrape(d)
    junk = bytes([0xFF]) + os.urandom(SIZE - 1)  # neither STUN, DTLS nor RTP
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        os.kill(d.proc.pid, signal.SIGSTOP)
        try:
            for _ in range(N):
                s.sendto(junk, ("127.0.0.1", d.udp_port))
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while True:
        after = scrape(d)
        received = (after['sfu_udp_datagrams_total{direction="in"}']
                    - before.get('sfu_udp_datagrams_total{direction="in"}', 0.0))
        kernel = (after["sfu_udp_kernel_rx_drops_total"]
                  - before.get("sfu_udp_kernel_rx_drops_total", 0.0))
        if received + kernel >= N or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert received + kernel == N
    assert kernel > 0 and received > 0  # the buffer overflowed, and held some
    assert (after['sfu_udp_bytes_total{direction="in"}']
            - before.get('sfu_udp_bytes_total{direction="in"}', 0.0)) == received * SIZE
    dropped = {k: v - before.get(k, 0.0) for k, v in after.items()
               if k.startswith("sfu_udp_dropped_datagrams_total{")}
    assert sum(dropped.values()) == received
    assert after.get('sfu_udp_datagrams_total{direction="out"}', 0.0) == before.get(
        'sfu_udp_datagrams_total{direction="out"}', 0.0)
