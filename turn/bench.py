"""``python -m turn.bench``: server CPU per relayed packet and the most relayed packets/s.

Starts ``python -m turn`` (the real CLI, under uvloop) on 127.0.0.1, an echo peer
(``turnutils_peer`` when installed, else a Python echo process) and one UDP client that
allocates and binds a channel to the peer. Every round trip is two relayed packets: the
client's ChannelData out to the peer, and the echo back as ChannelData.

1. Fixed rate: ``--rate`` round trips/s for ``--seconds``; the server's CPU time (utime + stime
   from /proc) divided by the packets it relayed.
2. Saturation: a closed loop with ``--window`` packets in flight for ``--seconds``; relayed
   packets per second, and CPU per packet at that load.

Prints one JSON line. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from typing import Any

from turn.client import TurnClient, error_code

CHANNEL = 0x4000


def _free_port() -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port: int = u.getsockname()[1]
            if port >= 65535:
                continue
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, \
                        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u2:
                    t.bind(("127.0.0.1", port))
                    u2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair")


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_PY_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    d, a = s.recvfrom(65536)
    s.sendto(d, a)
"""


def _start_peer(port: int) -> subprocess.Popen[bytes]:
    if shutil.which("turnutils_peer"):
        cmd = ["turnutils_peer", "-L", "127.0.0.1", "-p", str(port)]
    else:
        cmd = [sys.executable, "-c", _PY_ECHO, str(port)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the TURN server exited")
        try:
            with TurnClient(("127.0.0.1", port), timeout_s=0.2) as c:
                if error_code(c.binding()) == 0:
                    return
        except (TimeoutError, OSError):
            time.sleep(0.05)
    raise RuntimeError("the TURN server did not answer")


def _fixed_rate(sock: socket.socket, packet: bytes, rate: int, seconds: float) -> tuple[int, int]:
    sent = received = 0
    start = time.monotonic()
    end = start + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - start) * rate)
        while sent < due:
            try:
                sock.send(packet)
            except BlockingIOError:
                break
            sent += 1
        while True:
            try:
                sock.recv(65536)
                received += 1
            except BlockingIOError:
                break
        time.sleep(0.0005)
    drain_until = time.monotonic() + 0.5
    while time.monotonic() < drain_until and received < sent:
        try:
            sock.recv(65536)
            received += 1
        except BlockingIOError:
            time.sleep(0.001)
    return sent, received


def _saturate(sock: socket.socket, packet: bytes, window: int, seconds: float
              ) -> tuple[int, int, float]:
    sock.setblocking(True)
    sock.settimeout(0.05)
    sent = received = 0
    for _ in range(window):
        sock.send(packet)
        sent += 1
    start = time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        try:
            sock.recv(65536)
            received += 1
            sock.send(packet)
            sent += 1
        except TimeoutError:  # losses shrank the window: refill it
            for _ in range(min(window, window - (sent - received))):
                sock.send(packet)
                sent += 1
    elapsed = time.monotonic() - start
    sock.settimeout(0.2)
    try:
        while received < sent:
            sock.recv(65536)
            received += 1
    except TimeoutError:
        pass
    return sent, received, elapsed


def _pin(pid: int, cpus: set[int]) -> None:
    try:
        os.sched_setaffinity(pid, cpus)
    except OSError:
        pass


def run(seconds: float, rate: int, window: int, payload: int, pin: bool = True
        ) -> dict[str, Any]:
    port = _free_port()
    peer_port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "turn", "--listen", f"127.0.0.1:{port}", "--user", "bench:bench",
         "--allow-peer", "127.0.0.1/32", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peer = _start_peer(peer_port)
    cpus = sorted(os.sched_getaffinity(0))
    pinned = pin and len(cpus) >= 2
    if pinned:  # the server alone on one core; load generator and echo peer on the others
        _pin(server.pid, {cpus[-1]})
        _pin(peer.pid, set(cpus[:-1]))
        _pin(0, set(cpus[:-1]))
    try:
        _wait_ready(port, server)
        client = TurnClient(("127.0.0.1", port), "bench", "bench")
        if error_code(client.allocate()) or error_code(
                client.channel_bind(CHANNEL, ("127.0.0.1", peer_port))):
            raise RuntimeError("allocate or channel bind failed")
        sock = client.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        packet = CHANNEL.to_bytes(2, "big") + payload.to_bytes(2, "big") + b"\x5a" * payload
        sock.setblocking(False)
        _fixed_rate(sock, packet, min(rate, 1000), 0.5)  # warm-up
        cpu0 = _cpu_s(server.pid)
        sent, received = _fixed_rate(sock, packet, rate, seconds)
        cpu_fixed = _cpu_s(server.pid) - cpu0
        relayed_fixed = sent + received
        cpu0 = _cpu_s(server.pid)
        s_sent, s_received, elapsed = _saturate(sock, packet, window, seconds)
        cpu_sat = _cpu_s(server.pid) - cpu0
        relayed_sat = s_sent + s_received
        client.close()
        return {
            "bench": "turn_channeldata_udp_loopback",
            "payload_bytes": payload,
            "fixed_rate_round_trips_per_s": rate,
            "fixed_rate_loss_pct": round(100.0 * (sent - received) / max(sent, 1), 3),
            "us_cpu_per_relayed_packet_at_fixed_rate": round(
                1e6 * cpu_fixed / max(relayed_fixed, 1), 2),
            "max_relayed_packets_per_s": round(2 * s_received / elapsed),
            "saturation_window": window,
            "saturation_loss_pct": round(100.0 * (s_sent - s_received) / max(s_sent, 1), 3),
            "us_cpu_per_relayed_packet_at_max": round(1e6 * cpu_sat / max(relayed_sat, 1), 2),
            "server_cpu_util_at_max": round(cpu_sat / elapsed, 3),
            "echo_peer": "turnutils_peer" if shutil.which("turnutils_peer") else "python",
            "server_pinned_to_own_core": pinned,
        }
    finally:
        server.terminate()
        peer.terminate()
        for proc in (server, peer):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m turn.bench",
        description="TURN relay benchmark: server CPU per relayed packet, max packets/s.")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    p.add_argument("--rate", type=int, default=5000, help="round trips/s in the fixed phase")
    p.add_argument("--window", type=int, default=64, help="packets in flight at saturation")
    p.add_argument("--payload", type=int, default=1200, help="ChannelData payload bytes")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the server to its own core (default: pin when 2+ cores)")
    args = p.parse_args(argv)
    result = run(args.seconds, args.rate, args.window, args.payload, pin=not args.no_pin)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
