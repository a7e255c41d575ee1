"""``sfu bench floor``: the raw per-packet floor of this machine, for comparison with
``sfu bench forward``.

Three processes, no SFU logic and no signaling, ICE or DTLS (SRTP keys are fixed):

- a **sender** sends the publisher's packet stream (the same :class:`bench.rtp.PublisherCore`
  over the same pre-encoded Opus + VP8), SRTP-protected, to the forwarder;
- the **forwarder** (uvloop, pinned to CPU 0 like the daemon) has one socket in and one
  connected socket per receiver out: it unprotects each packet once, then per receiver
  rewrites the SSRC (``struct.pack_into``), protects with that receiver's SRTP session and
  sends;
- the **receivers** (N sockets in this process, pinned to CPU 1 with the sender) unprotect
  and count packets, bytes and loss from extended sequence numbers, and take one-way delay
  from the abs-send-time extension the forwarder leaves untouched.

The report has the fields of ``forward``; ``server_cpu_s`` is the forwarder's CPU time.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import pylibsrtp
from pylibsrtp import Policy, Session

from sfu.rtp.header import find_extension
from sfu.webrtc.sdp import EXT_ABS_SEND_TIME

from .daemon import child_env
from .media import load_media
from .report import (
    BENCH_CPU_LIMIT,
    CpuClock,
    bench_cpu_s,
    cpu_busy_s,
    machine_load,
    percentiles,
    pin_to_cpu,
    progress,
    usable_cpus,
)
from .rtp import PUBLISHER_EXTENSIONS, PublisherCore
from .transport import BenchError

__all__ = ["FloorOptions", "run_floor"]

SRTP_PROFILE = Policy.SRTP_PROFILE_AEAD_AES_256_GCM  # what two aiortc ends negotiate
KEY_BYTES = 44  # AES-256 key + 12-byte salt
_U32 = struct.Struct("!I")
_HDR = struct.Struct("!BBHII")
_ABS_ID = PUBLISHER_EXTENSIONS[EXT_ABS_SEND_TIME]
SOCKET_BUFFER_BYTES = 1 << 20


@dataclass
class FloorOptions:
    subscribers: int = 10
    duration_s: float = 10.0
    warmup_s: float = 3.0
    pin: bool = True
    show_progress: bool = True
    fps: int = 30
    video_bitrate_bps: int = 600_000
    streams: int = 1
    media_timeout_s: float = 10.0


def _session(key: bytes, outbound: bool) -> Session:
    policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND if outbound
                    else Policy.SSRC_ANY_INBOUND, srtp_profile=SRTP_PROFILE)
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return Session(policy)


def _udp_socket_opts(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)


# -- forwarder process ---------------------------------------------------------------------


class _Forwarder(asyncio.DatagramProtocol):
    def __init__(self, rx: Session, outs: list[tuple[Any, Session, int]]) -> None:
        self.rx = rx
        self.outs = outs  # (send, tx session, ssrc xor)
        self.errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if hasattr(transport, "max_size"):
            transport.max_size = 2048  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            plain = self.rx.unprotect(data)
        except pylibsrtp.Error:
            self.errors += 1
            return
        buf = bytearray(plain)
        (ssrc,) = _U32.unpack_from(buf, 8)
        for send, tx, xor in self.outs:
            _U32.pack_into(buf, 8, ssrc ^ xor)
            send(tx.protect(bytes(buf)))


def _forwarder_main(config: dict[str, Any]) -> None:
    import uvloop

    in_key = bytes.fromhex(config["in_key"])
    receivers = [(port, bytes.fromhex(key), xor) for port, key, xor in config["receivers"]]

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        outs = []
        for port, key, xor in receivers:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            _udp_socket_opts(sock)
            sock.bind(("127.0.0.1", 0))
            sock.connect(("127.0.0.1", port))
            sock.setblocking(False)
            transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                               sock=sock)
            outs.append((transport.sendto, _session(key, outbound=True), xor))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _udp_socket_opts(sock)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        await loop.create_datagram_endpoint(lambda: _Forwarder(_session(in_key, False), outs),
                                            sock=sock)
        _ready(sock.getsockname()[1])
        await asyncio.Event().wait()

    uvloop.run(serve())


# -- sender process ------------------------------------------------------------------------


def _sender_main(config: dict[str, Any]) -> None:
    import uvloop

    media = load_media(fps=config["fps"], video_bitrate_bps=config["video_bitrate_bps"])
    rng = random.Random(config["seed"])
    key = bytes.fromhex(config["key"])
    wall_offset_s = time.time() - time.monotonic()

    async def send() -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _udp_socket_opts(sock)
        sock.connect(("127.0.0.1", config["port"]))
        sock.setblocking(False)
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=sock)
        tx = _session(key, outbound=True)
        now = time.monotonic()
        cores = [PublisherCore(
            media, audio_ssrc=rng.getrandbits(32) or 1, video_ssrc=rng.getrandbits(32) or 2,
            rtx_ssrc=rng.getrandbits(32) or 3, start=now, wall_offset_s=wall_offset_s,
            initial=(rng.getrandbits(16), rng.getrandbits(32), rng.getrandbits(16),
                     rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(16)))
            for _ in range(config["streams"])]

        def tick() -> None:
            now = time.monotonic()
            for core in cores:
                for packet in core.due(now):
                    transport.sendto(tx.protect(packet))
            at = min(core.next_at for core in cores)
            loop.call_at(loop.time() + max(0.0, at - time.monotonic()), tick)

        _ready(0)
        tick()
        await asyncio.Event().wait()

    uvloop.run(send())


def _ready(port: int) -> None:
    sys.stdout.write(f"ready {port}\n")
    sys.stdout.flush()


def worker_main() -> None:
    """Entry point of the forwarder and sender processes: ``python -c`` runs it with the
    role as argument and the JSON config on stdin (keys never on the command line)."""
    role = sys.argv[1]
    config = json.loads(sys.stdin.readline())
    pin_to_cpu(config.get("cpu"))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if role == "forwarder":
        _forwarder_main(config)
    elif role == "sender":
        _sender_main(config)
    else:
        raise SystemExit(f"unknown floor worker role {role!r}")


_WORKER = "import bench.floor as f; f.worker_main()"


class _Worker:
    """A forwarder or sender subprocess."""

    def __init__(self, role: str, config: dict[str, Any]) -> None:
        self.role = role
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER, role],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=child_env())
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(config) + "\n").encode())
        self.proc.stdin.close()

    async def ready(self, timeout_s: float) -> int:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout_s)
        except TimeoutError:
            raise BenchError(f"the floor {self.role} did not start in {timeout_s} s") from None
        if not line.startswith(b"ready "):
            raise BenchError(f"the floor {self.role} failed to start (exit "
                             f"{self.proc.poll()})")
        return int(line.split()[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- receivers (this process) ------------------------------------------------------------------


class _Receiver(asyncio.DatagramProtocol):
    __slots__ = ("rx", "received", "octets", "errors", "streams", "recording", "delays_ms",
                 "wall_offset_s", "_tick")

    def __init__(self, rx: Session, wall_offset_s: float) -> None:
        self.rx = rx
        self.received = 0
        self.octets = 0
        self.errors = 0
        self.streams: dict[int, list[int]] = {}  # ssrc -> [base, highest, unique]
        self.recording = False
        self.delays_ms: list[float] = []
        self.wall_offset_s = wall_offset_s
        self._tick = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if hasattr(transport, "max_size"):
            transport.max_size = 2048  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            plain = self.rx.unprotect(data)
        except pylibsrtp.Error:
            self.errors += 1
            return
        self.received += 1
        self.octets += len(data)
        _, _, seq, _, ssrc = _HDR.unpack_from(plain)
        state = self.streams.get(ssrc)
        if state is None:
            self.streams[ssrc] = [seq, seq, 1]
        else:
            highest = state[1]
            delta = (seq - highest) & 0xFFFF
            ext = highest + delta - 0x10000 if delta >= 0x8000 else highest + delta
            if ext > highest:
                state[1] = ext
                state[2] += 1
            # reordered or duplicate packets are rare here; counted as not new
        if self.recording:
            self._tick += 1
            if self._tick >= 4:
                self._tick = 0
                loc = find_extension(plain, _ABS_ID)
                if loc is not None:
                    off = loc[0]
                    sent = (plain[off] << 16) | (plain[off + 1] << 8) | plain[off + 2]
                    now = int((time.monotonic() + self.wall_offset_s) * 262144) & 0xFFFFFF
                    self.delays_ms.append(((now - sent) & 0xFFFFFF) * 1000.0 / 262144)

    def totals(self) -> tuple[int, int, int, int]:
        expected = sum(s[1] - s[0] + 1 for s in self.streams.values())
        unique = sum(s[2] for s in self.streams.values())
        return self.received, self.octets, expected, unique


def run_floor(opts: FloorOptions) -> tuple[dict[str, Any], int]:
    import uvloop

    cpus = usable_cpus()
    pin = opts.pin and len(cpus) >= 2
    server_cpu = cpus[0] if pin else None
    bench_cpu = pin_to_cpu(cpus[1]) if pin else None
    report = uvloop.run(_run(opts, server_cpu, bench_cpu))
    return report, 0 if report["forwarded_packets"] else 1


async def _run(opts: FloorOptions, server_cpu: int | None,
               bench_cpu: int | None) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    load_media(fps=opts.fps, video_bitrate_bps=opts.video_bitrate_bps)  # fail early
    wall_offset_s = time.time() - time.monotonic()
    receivers: list[_Receiver] = []
    transports: list[asyncio.BaseTransport] = []
    wiring: list[tuple[int, bytes, int]] = []
    for i in range(opts.subscribers):
        key = secrets.token_bytes(KEY_BYTES)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _udp_socket_opts(sock)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        transport, receiver = await loop.create_datagram_endpoint(
            functools.partial(_Receiver, _session(key, False), wall_offset_s), sock=sock)
        receivers.append(receiver)
        transports.append(transport)
        wiring.append((sock.getsockname()[1], key, (i + 1) * 0x01010101 & 0xFFFFFFFF))
    in_key = secrets.token_bytes(KEY_BYTES)
    forwarder = _Worker("forwarder", {
        "cpu": server_cpu, "in_key": in_key.hex(),
        "receivers": [(port, key.hex(), xor) for port, key, xor in wiring]})
    sender: _Worker | None = None
    try:
        port = await forwarder.ready(20)
        sender = _Worker("sender", {
            "cpu": bench_cpu, "port": port, "key": in_key.hex(), "fps": opts.fps,
            "video_bitrate_bps": opts.video_bitrate_bps, "streams": opts.streams,
            "seed": secrets.randbits(32)})
        await sender.ready(30)
        deadline = time.monotonic() + opts.media_timeout_s
        # a condition over per-packet counters: polled, not signalled from the packet path
        while time.monotonic() < deadline and not all(  # noqa: ASYNC110
                r.received for r in receivers):
            await asyncio.sleep(0.05)
        await asyncio.sleep(opts.warmup_s)
        server_clock, sender_clock = CpuClock(forwarder.proc.pid), CpuClock(sender.proc.pid)

        def snap() -> tuple[float, float | None, float, float | None, int, int, int, int]:
            totals = [r.totals() for r in receivers]
            return (time.monotonic(), server_clock.read_s(), bench_cpu_s(), sender_clock.read_s(),
                    sum(t[0] for t in totals), sum(t[1] for t in totals),
                    sum(t[2] for t in totals), sum(t[3] for t in totals))

        machine_start = cpu_busy_s()
        start = snap()
        for r in receivers:
            r.recording = True
        last = start
        window_end = start[0] + opts.duration_s
        while (remaining := window_end - time.monotonic()) > 0:
            await asyncio.sleep(min(1.0, remaining))
            if opts.show_progress and time.monotonic() - last[0] >= 0.5:
                now = snap()
                dt = max(1e-6, now[0] - last[0])
                cpu = (f"{(now[1] - last[1]) * 100 / dt:5.1f}%"
                       if now[1] is not None and last[1] is not None else "n/a")
                progress(f"[floor] {now[0] - start[0]:5.1f}/{opts.duration_s:g} s  "
                         f"rx {(now[4] - last[4]) / dt:8.0f} pps  forwarder cpu {cpu}  "
                         f"bench cpu {(now[2] - last[2]) * 100 / dt:5.1f}%")
                last = now
        end = snap()
        machine_end = cpu_busy_s()
    finally:
        for worker in (sender, forwarder):
            if worker is not None:
                worker.stop()
        for receiver_transport in transports:
            receiver_transport.close()
    window_s = max(1e-6, end[0] - start[0])
    forwarded = end[4] - start[4]
    server_cpu_s = end[1] - start[1] if end[1] is not None and start[1] is not None else None
    sender_cpu_s = end[3] - start[3] if end[3] is not None and start[3] is not None else None
    bench_used = end[2] - start[2] + (sender_cpu_s or 0.0)
    expected, unique = end[6] - start[6], end[7] - start[7]
    invalid = []
    if bench_used / window_s > BENCH_CPU_LIMIT:
        invalid.append(f"receivers + sender used {bench_used * 100 / window_s:.1f}% of their "
                       f"CPU (limit {BENCH_CPU_LIMIT * 100:.0f}%)")
    if not forwarded:
        invalid.append("nothing reached the receivers")
    errors = sum(r.errors for r in receivers)
    ours: dict[int, float] = {}
    if server_cpu is not None and server_cpu_s is not None:
        ours[server_cpu] = server_cpu_s
    if bench_cpu is not None:
        ours[bench_cpu] = bench_used
    machine, warnings = machine_load(machine_start, machine_end, window_s, ours)
    return {
        "mode": "floor",
        "subscribers": opts.subscribers,
        "streams": opts.streams,
        "duration_s": round(window_s, 3),
        "warmup_s": opts.warmup_s,
        "forwarded_packets": forwarded,
        "forwarded_pps": round(forwarded / window_s, 1),
        "forwarded_bytes": end[5] - start[5],
        "forwarded_bps": round((end[5] - start[5]) * 8 / window_s),
        "us_per_forwarded_packet": (round(server_cpu_s * 1e6 / forwarded, 2)
                                    if server_cpu_s is not None and forwarded else None),
        "server_cpu_s": round(server_cpu_s, 3) if server_cpu_s is not None else None,
        "server_cpu_pct": (round(server_cpu_s * 100 / window_s, 1)
                           if server_cpu_s is not None else None),
        "loss_pct": (round(max(0, expected - unique) * 100.0 / expected, 4)
                     if expected > 0 else None),
        "delay_ms": percentiles([d for r in receivers for d in r.delays_ms]),
        "bench_cpu_s": round(bench_used, 3),
        "bench_cpu_pct": round(bench_used * 100 / window_s, 1),
        "sender_cpu_s": round(sender_cpu_s, 3) if sender_cpu_s is not None else None,
        "valid": not invalid,
        "invalid_reasons": invalid,
        "warnings": warnings,
        "machine_cpu_pct": machine,
        "srtp_errors": errors,
        "srtp_profile": "AEAD_AES_256_GCM",
        "errors": [],
        "server": {"pid": forwarder.proc.pid, "pinned_cpu": server_cpu, "bench_cpu": bench_cpu},
    }
