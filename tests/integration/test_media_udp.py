"""Garbage on the daemon's media port is counted by reason and dropped; nothing else breaks."""

from __future__ import annotations

import re
import socket
import time

import pytest
from aioice import stun

from tests.conftest import Daemon


def dropped(d: Daemon) -> dict[str, float]:
    _, body = d.get("/metrics", port=d.metrics_port)
    return {m[0]: float(m[1]) for m in re.findall(
        r'sfu_udp_dropped_datagrams_total\{reason="(\w+)"\} ([0-9.e+]+)', body.decode())}


@pytest.mark.timeout(30)
def test_malformed_and_unknown_datagrams_are_counted(daemon: Daemon) -> None:
    binding = stun.Message(message_method=stun.Method.BINDING,
                           message_class=stun.Class.REQUEST)
    binding.attributes["USERNAME"] = "nosuchufrag:peer"
    binding.attributes["PRIORITY"] = 1
    binding.add_message_integrity(b"x" * 24)
    binding.add_fingerprint()
    unknown_ufrag = bytes(binding)
    datagrams = {
        "malformed_stun": [b"\x00\x01\x00\x08" + b"\x21\x12\xa4\x42" + b"\x00" * 4],
        "unknown_tuple": [b"\x80\x60\x00\x01" + b"\x00" * 20,  # RTP
                          b"\x16\xfe\xfd" + b"\x00" * 30],       # DTLS
        "unknown_first_byte": [b"\xff" * 10, b"\x40" * 10],
        "unknown_ufrag": [unknown_ufrag],
    }
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        for payloads in datagrams.values():
            for payload in payloads:
                s.sendto(payload, ("127.0.0.1", daemon.udp_port))
        with pytest.raises(TimeoutError):
            s.recvfrom(2048)  # nothing is answered
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        got = dropped(daemon)
        if all(got.get(r, 0) >= len(p) for r, p in datagrams.items()):
            break
        time.sleep(0.1)
    for reason, payloads in datagrams.items():
        assert got.get(reason, 0) == len(payloads), (reason, got)
    assert daemon.get("/healthz")[0] == 200
    assert daemon.proc.poll() is None
