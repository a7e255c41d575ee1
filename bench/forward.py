"""``sfu bench forward``: one publisher (audio + video) → N subscribers in one room;
``sfu bench livestream``: the same with the video in three RID simulcast layers.

In ``livestream`` the subscribers are spread over the layers (``track_settings`` quality
low / medium / high in turn) and, after the measured window, the decoding subscribers change
layers ``--switches`` times each: the report's ``layer_switch_ms`` is the time from sending
``track_settings`` to the first decoded frame of the new layer's size.

Without ``--url`` the bench starts its own daemon (``python -m sfu serve`` on free loopback
ports, pinned with ``taskset -c 0`` when the machine has two CPUs, the bench then on CPU 1).
All clients share this process's event loop (uvloop). Once every subscriber receives audio
and video (or ``--media-timeout`` passes), a warm-up is skipped, and over the steady window
the bench measures:

- packets and bytes the subscribers received (every RTP packet the server sent them:
  media, RTX and padding), loss from their extended sequence numbers (after and before
  retransmissions), one-way delay publisher → subscriber from RTP timestamps and the
  server's sender reports (which map them to the publisher's NTP clock);
- the daemon's CPU time (``/proc/<pid>/stat``; for a remote daemon, its
  ``process_cpu_seconds_total`` when ``--metrics-url`` is given) per forwarded packet;
- the daemon's own counters when it exports them (``sfu_forwarded_packets_total``...);
- the bench's own CPU: above 80 % of its core the run measured the bench, and the report
  says ``"valid": false``.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiortc import RTCCertificate

from sfu.config import DEV_API_KEY, DEV_API_SECRET
from signaling.auth import VideoGrant, mint_token

from .client import BenchPublisher, BenchSubscriber, Ticker
from .daemon import LocalDaemon, start_daemon
from .media import EncodedMedia, load_media, load_simulcast_media
from .report import (
    BENCH_CPU_LIMIT,
    CpuClock,
    MemorySeries,
    bench_cpu_s,
    cpu_busy_s,
    machine_load,
    percentiles,
    pin_to_cpu,
    progress,
    scrape_metrics,
    usable_cpus,
)
from .transport import BenchError

__all__ = ["ForwardOptions", "run_forward"]

#: Daemon counters read at the window's edges when the daemon exports them (sums over labels).
SERVER_COUNTERS = {
    "sfu_forwarded_packets_total": "forwarded_packets",
    "sfu_retransmitted_packets_total": "retransmitted_packets",
    "sfu_nacks_total": "nacks",
    "sfu_keyframe_requests_total": "keyframe_requests",
    "sfu_publisher_rtp_packets_total": "publisher_rtp_packets",
    "sfu_udp_datagrams_total": "udp_datagrams",
    "sfu_udp_kernel_rx_drops_total": "udp_kernel_rx_drops",
    "sfu_udp_dropped_datagrams_total": "udp_dropped_datagrams",
}


#: Above this p95 lag of the publisher's sends, one-way delays measure the bench too.
SEND_LAG_WARN_MS = 20.0


@dataclass
class ForwardOptions:
    subscribers: int = 10
    duration_s: float = 10.0
    warmup_s: float = 3.0
    url: str | None = None
    api_key: str | None = None
    api_secret_file: str | None = None
    metrics_url: str | None = None
    server_pid: int | None = None
    room: str = field(default_factory=lambda: f"bench-{secrets.token_hex(4)}")
    decode: int = 1
    media_timeout_s: float = 10.0
    connect_timeout_s: float = 30.0
    concurrency: int = 16
    pin: bool = True
    show_progress: bool = True
    fps: int = 30
    video_bitrate_bps: int = 600_000
    seed: int | None = None
    loss_pct: float = 0.0
    publisher_loss_pct: float = 0.0
    daemon_log_level: str = "warning"
    #: livestream: the video in 3 RID simulcast layers, subscribers spread over them
    simulcast: bool = False
    #: livestream: layer changes per decoding subscriber after the window (latency)
    switches: int = 0


QUALITIES = ("low", "medium", "high")
SWITCH_TIMEOUT_S = 5.0


@dataclass
class _Snapshot:
    at: float
    server_cpu_s: float | None
    bench_cpu_s: float
    received: int
    octets: int
    expected: int
    unique: int
    originals: int
    rtx: int
    published: int
    metrics: dict[str, float] | None
    by_kind: dict[str, int] = field(default_factory=dict)
    machine: dict[int, float] = field(default_factory=dict)


def run_forward(opts: ForwardOptions) -> tuple[dict[str, Any], int]:
    """Run the bench; returns the report and the exit status (0: every client connected)."""
    import uvloop

    cpus = usable_cpus()
    pin = opts.pin and len(cpus) >= 2
    daemon: LocalDaemon | None = None
    workdir: tempfile.TemporaryDirectory[str] | None = None
    try:
        if opts.url is None:
            workdir = tempfile.TemporaryDirectory(prefix="sfu-bench-")
            daemon = start_daemon(Path(workdir.name), cpu=cpus[0] if pin else None,
                                  log_level=opts.daemon_log_level)
            url, key, secret = daemon.ws_url, daemon.api_key, daemon.api_secret
            metrics_url: str | None = daemon.metrics_url
            server_pid: int | None = daemon.proc.pid
        else:
            url = opts.url
            key, secret = _credentials(opts)
            metrics_url, server_pid = opts.metrics_url, opts.server_pid
        bench_cpu = pin_to_cpu(cpus[1]) if pin else None
        server_core = (daemon.pinned_cpu if daemon is not None else None)
        report = uvloop.run(_run(opts, url, key, secret, metrics_url, server_pid,
                                 (server_core, bench_cpu)))
        report["server"] = {
            "url": url, "pid": server_pid, "started_by_bench": daemon is not None,
            "pinned_cpu": daemon.pinned_cpu if daemon else None, "bench_cpu": bench_cpu,
        }
        if daemon is not None and daemon.proc.poll() is not None:
            report["errors"].append(f"the daemon exited with {daemon.proc.returncode}: "
                                    f"{daemon.log_tail(5)}")
        ok = report["connected"]["publisher"] and (
            report["connected"]["subscribers"] == opts.subscribers)
        return report, 0 if ok else 1
    finally:
        if daemon is not None:
            daemon.stop()
        if workdir is not None:
            workdir.cleanup()


def _credentials(opts: ForwardOptions) -> tuple[str, str]:
    if opts.api_secret_file:
        secret = Path(opts.api_secret_file).read_text().strip()
    else:
        secret = os.environ.get("SFU_API_SECRET", "")
    if not secret:
        return opts.api_key or DEV_API_KEY, DEV_API_SECRET
    return opts.api_key or DEV_API_KEY, secret


async def _run(opts: ForwardOptions, url: str, key: str, secret: str,
               metrics_url: str | None, server_pid: int | None,
               cores: tuple[int | None, int | None]) -> dict[str, Any]:
    seed = opts.seed if opts.seed is not None else secrets.randbits(32)
    layers: tuple[EncodedMedia, ...] | None = None
    if opts.simulcast:
        layers = load_simulcast_media(fps=opts.fps, video_bitrate_bps=opts.video_bitrate_bps)
        media = layers[-1]
    else:
        media = load_media(fps=opts.fps, video_bitrate_bps=opts.video_bitrate_bps)
    certificate = RTCCertificate.generateCertificate()
    ticker = Ticker()
    errors: list[str] = []

    def token(identity: str) -> str:
        return mint_token(key, secret, identity=identity, now=time.time(), ttl_s=6 * 3600,
                          grant=VideoGrant(room_join=True, room=opts.room))

    subscribers = [
        BenchSubscriber(url, token(f"sub-{i}"), f"sub-{i}", certificate, ticker,
                        decode=i < opts.decode, rng=random.Random(seed + i + 1),
                        drop_rate=opts.loss_pct / 100.0,
                        record_frames=opts.simulcast and i < opts.decode)
        for i in range(opts.subscribers)
    ]
    publisher = BenchPublisher(url, token("pub"), "pub", certificate, media,
                               rng=random.Random(seed),
                               drop_rate=opts.publisher_loss_pct / 100.0, layers=layers)
    switch_ms: list[float] = []
    gate = asyncio.Semaphore(max(1, opts.concurrency))
    setup_started = time.monotonic()

    async def start_subscriber(sub: BenchSubscriber) -> None:
        async with gate:
            await sub.start(timeout_s=opts.connect_timeout_s)
            await sub.wait_connected(opts.connect_timeout_s)

    try:
        results = await asyncio.gather(*(start_subscriber(s) for s in subscribers),
                                       return_exceptions=True)
        errors += [str(r) for r in results if isinstance(r, BaseException)]
        try:
            await publisher.start(timeout_s=opts.connect_timeout_s)
        except (BenchError, OSError) as exc:
            errors.append(str(exc))
        setup_s = time.monotonic() - setup_started
        if not publisher.connected:
            raise BenchError("the publisher did not connect, nothing to measure: "
                             + "; ".join(dict.fromkeys(errors[:5])))

        media_deadline = time.monotonic() + opts.media_timeout_s
        # a condition over per-packet counters: polled, not signalled from the packet path
        while time.monotonic() < media_deadline and publisher.connected and not all(  # noqa: ASYNC110
                s.has_media for s in subscribers if s.connected):
            await asyncio.sleep(0.05)
        first_media_s = time.monotonic() - setup_started
        if layers is not None:  # spread the subscribers over the layers
            video = publisher.track_sids["video"]
            replies = await asyncio.gather(*(
                s.track_settings([video], quality=QUALITIES[i % 3])
                for i, s in enumerate(subscribers) if s.connected), return_exceptions=True)
            errors += [str(r) for r in replies if isinstance(r, BaseException)]
        await asyncio.sleep(opts.warmup_s)

        clock = CpuClock(server_pid) if server_pid is not None else None
        start = await _snapshot(subscribers, publisher, clock, metrics_url)
        memory = (MemorySeries.start(server_pid, opts.duration_s, start.at)
                  if server_pid is not None else None)
        for sub in subscribers:
            sub.core.recording = True
        if publisher.core is not None:
            publisher.core.recording = True
        end = start
        window_end = start.at + opts.duration_s
        last = start
        while True:
            remaining = window_end - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.sleep(min(1.0, remaining))
            if memory is not None:
                memory.sample(time.monotonic())
            if opts.show_progress and time.monotonic() - last.at >= 0.5:
                now = _quick_snapshot(subscribers, publisher, clock)
                progress(_progress_line(opts, start, last, now, subscribers))
                last = now
        end = await _snapshot(subscribers, publisher, clock, metrics_url)
        if memory is not None:
            memory.sample(end.at, force=True)
        for sub in subscribers:
            sub.core.recording = False
        if publisher.core is not None:
            publisher.core.recording = False
        if opts.show_progress:
            progress(_progress_line(opts, start, start, end, subscribers), final=True)
        if layers is not None and opts.switches:
            switch_ms = await _switch_latencies(opts, subscribers, publisher, layers, errors)
        report = _report(opts, start, end, subscribers, publisher, setup_s, first_media_s,
                         media, cores)
        report["daemon_memory"] = memory.report() if memory is not None else None
        if layers is not None:
            report["mode"] = "livestream"
            report["layers"] = {q: f"{m.width}x{m.height}" for q, m in zip(QUALITIES, layers,
                                                                          strict=True)}
            report["subscribers_per_layer"] = {
                q: len(range(i, len(subscribers), 3)) for i, q in enumerate(QUALITIES)}
            report["layer_switch_ms"] = percentiles(switch_ms)
            report["layer_switches_measured"] = len(switch_ms)
    finally:
        ticker.stop()
        for sub in subscribers:
            if sub.error:
                errors.append(sub.error)
        if publisher.error:
            errors.append(publisher.error)
        await _close_all([publisher, *subscribers])
    report["errors"] = list(dict.fromkeys(errors))[:20]
    report["seed"] = seed
    return report


async def _switch_latencies(opts: ForwardOptions, subscribers: list[BenchSubscriber],
                            publisher: BenchPublisher, layers: tuple[EncodedMedia, ...],
                            errors: list[str]) -> list[float]:
    """Each decoding subscriber changes layer ``opts.switches`` times (to the next quality
    in low → medium → high → medium → low …): ms from the request to the first decoded
    frame of the new layer's size."""
    video = publisher.track_sids["video"]
    sizes = {q: (m.width, m.height) for q, m in zip(QUALITIES, layers, strict=True)}
    cycle = ("low", "medium", "high", "medium")

    async def one(index: int, sub: BenchSubscriber) -> list[float]:
        out: list[float] = []
        frames = sub.core.decoded_frames
        current = QUALITIES[index % 3]
        step = cycle.index(current)
        for _ in range(opts.switches):
            step = (step + 1) % len(cycle)
            quality = cycle[step]
            if quality == current:
                step = (step + 1) % len(cycle)
                quality = cycle[step]
            mark = len(frames)
            sent = time.monotonic()
            await sub.track_settings([video], quality=quality)
            deadline = sent + SWITCH_TIMEOUT_S
            found = None
            while found is None and time.monotonic() < deadline:
                found = next((f for f in frames[mark:]
                              if (f.width, f.height) == sizes[quality]), None)
                if found is None:
                    await asyncio.sleep(0.005)
            if found is None:
                errors.append(f"{sub.name}: no {quality} frame {SWITCH_TIMEOUT_S} s after "
                              "asking for it")
            else:
                out.append((found.arrival - sent) * 1000.0)
            current = quality
            await asyncio.sleep(0.3)  # let the new layer run a little
        return out

    deciders = [(i, s) for i, s in enumerate(subscribers)
                if s.connected and s.core.checker is not None]
    results = await asyncio.gather(*(one(i, s) for i, s in deciders), return_exceptions=True)
    latencies: list[float] = []
    for r in results:
        if isinstance(r, BaseException):
            errors.append(str(r))
        else:
            latencies += r
    return latencies


async def _close_all(clients: list[BenchPublisher | BenchSubscriber]) -> None:
    gate = asyncio.Semaphore(32)

    async def close(client: BenchPublisher | BenchSubscriber) -> None:
        async with gate:
            try:
                await asyncio.wait_for(client.close(), 5)
            except (TimeoutError, OSError, BenchError):
                pass

    await asyncio.gather(*(close(c) for c in clients))


def _totals(subscribers: list[BenchSubscriber]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for sub in subscribers:
        for name, value in sub.core.counters().items():
            totals[name] = totals.get(name, 0) + value
    return totals


def _quick_snapshot(subscribers: list[BenchSubscriber], publisher: BenchPublisher,
                    clock: CpuClock | None) -> _Snapshot:
    t = _totals(subscribers)
    return _Snapshot(time.monotonic(), clock.read_s() if clock else None, bench_cpu_s(),
                     t.get("received", 0), t.get("octets", 0), t.get("expected", 0),
                     t.get("unique", 0), t.get("originals", 0), t.get("rtx", 0),
                     publisher.core.packets_sent if publisher.core else 0, None,
                     {k: v for k, v in t.items() if k.startswith(("audio_", "video_"))},
                     cpu_busy_s())


async def _snapshot(subscribers: list[BenchSubscriber], publisher: BenchPublisher,
                    clock: CpuClock | None, metrics_url: str | None) -> _Snapshot:
    metrics = await asyncio.to_thread(scrape_metrics, metrics_url) if metrics_url else None
    snap = _quick_snapshot(subscribers, publisher, clock)
    snap.metrics = metrics
    if snap.server_cpu_s is None and metrics and "process_cpu_seconds_total" in metrics:
        snap.server_cpu_s = metrics["process_cpu_seconds_total"]
    return snap


def _loss_pct(expected: int, got: int) -> float | None:
    if expected <= 0:
        return None
    return round(max(0, expected - got) * 100.0 / expected, 4)


def _progress_line(opts: ForwardOptions, start: _Snapshot, last: _Snapshot, now: _Snapshot,
                   subscribers: list[BenchSubscriber]) -> str:
    dt = max(1e-6, now.at - last.at)
    pps = (now.received - last.received) / dt
    with_media = sum(1 for s in subscribers if s.has_media)
    loss = _loss_pct(now.expected - start.expected, now.unique - start.unique)
    server = (f"{(now.server_cpu_s - last.server_cpu_s) * 100 / dt:5.1f}%"
              if now.server_cpu_s is not None and last.server_cpu_s is not None else "   n/a")
    bench = (now.bench_cpu_s - last.bench_cpu_s) * 100 / dt
    return (f"[forward] {now.at - start.at:5.1f}/{opts.duration_s:g} s  "
            f"subs with media {with_media}/{len(subscribers)}  rx {pps:8.0f} pps  "
            f"loss {loss if loss is not None else 0:.3f}%  server cpu {server}  "
            f"bench cpu {bench:5.1f}%")


def _report(opts: ForwardOptions, start: _Snapshot, end: _Snapshot,
            subscribers: list[BenchSubscriber], publisher: BenchPublisher, setup_s: float,
            first_media_s: float, media: Any,
            cores: tuple[int | None, int | None]) -> dict[str, Any]:
    window_s = max(1e-6, end.at - start.at)
    forwarded = end.received - start.received
    server_cpu_s = (round(end.server_cpu_s - start.server_cpu_s, 3)
                    if end.server_cpu_s is not None and start.server_cpu_s is not None else None)
    bench_cpu = end.bench_cpu_s - start.bench_cpu_s
    bench_cpu_pct = round(bench_cpu * 100 / window_s, 1)
    server_counters: dict[str, float] | None = None
    forwarding_advertised = False
    if start.metrics is not None and end.metrics is not None:
        forwarding_advertised = "sfu_forwarded_packets_total" in end.metrics
        server_counters = {label: end.metrics[name] - start.metrics.get(name, 0.0)
                           for name, label in SERVER_COUNTERS.items() if name in end.metrics}
    delays = [d for s in subscribers for d in s.core.delays_ms]
    decoders = [s.core for s in subscribers if s.core.checker is not None]
    connected_subs = sum(1 for s in subscribers if s.connected)
    invalid: list[str] = []
    if bench_cpu / window_s > BENCH_CPU_LIMIT:
        invalid.append(f"the bench used {bench_cpu_pct}% of its CPU (limit "
                       f"{BENCH_CPU_LIMIT * 100:.0f}%): it measured itself")
    if not forwarded:
        invalid.append("no media reached the subscribers")
    if server_cpu_s is None:
        invalid.append("no server CPU reading (give --server-pid or --metrics-url)")
    if not publisher.connected or connected_subs < len(subscribers):
        invalid.append("not every client connected")
    drops = sum(s.transport.kernel_drops() for s in subscribers if s.transport is not None)
    warnings: list[str] = []
    lag = percentiles(publisher.core.send_lag_ms) if publisher.core else None
    if lag is not None and lag["p95"] > SEND_LAG_WARN_MS:
        warnings.append(f"publisher send lag p95 {lag['p95']} ms: the bench's event loop was "
                        "busy, so delay_ms includes bench queueing (use fewer subscribers)")
    if drops:
        warnings.append(f"the kernel dropped {drops} datagrams at the subscribers' sockets")
    ours: dict[int, float] = {}
    if cores[0] is not None and server_cpu_s is not None:
        ours[cores[0]] = server_cpu_s
    if cores[1] is not None:
        ours[cores[1]] = bench_cpu
    machine, noisy = machine_load(start.machine, end.machine, window_s, ours)
    warnings += noisy
    published = end.published - start.published
    return {
        "mode": "forward",
        "subscribers": len(subscribers),
        "duration_s": round(window_s, 3),
        "warmup_s": opts.warmup_s,
        "forwarded_packets": forwarded,
        "forwarded_pps": round(forwarded / window_s, 1),
        "forwarded_bytes": end.octets - start.octets,
        "forwarded_bps": round((end.octets - start.octets) * 8 / window_s),
        "us_per_forwarded_packet": (round(server_cpu_s * 1e6 / forwarded, 2)
                                    if server_cpu_s is not None and forwarded else None),
        "server_cpu_s": server_cpu_s,
        "server_cpu_pct": (round(server_cpu_s * 100 / window_s, 1)
                           if server_cpu_s is not None else None),
        "loss_pct": _loss_pct(end.expected - start.expected, end.unique - start.unique),
        "raw_loss_pct": _loss_pct(end.expected - start.expected,
                                  end.originals - start.originals),
        "loss_pct_by_kind": {
            kind: _loss_pct(end.by_kind.get(f"{kind}_expected", 0)
                            - start.by_kind.get(f"{kind}_expected", 0),
                            end.by_kind.get(f"{kind}_unique", 0)
                            - start.by_kind.get(f"{kind}_unique", 0))
            for kind in ("audio", "video")},
        "retransmissions_received": end.rtx - start.rtx,
        "simulated_loss_pct": {"subscribers": opts.loss_pct,
                               "publisher": opts.publisher_loss_pct},
        "delay_ms": percentiles(delays),
        "delay_breakdown_ms": {
            "publisher_send_lag": lag,
            "server_to_subscriber": percentiles(
                [d for s in subscribers for d in s.core.hop_delays_ms]),
        },
        "bench_cpu_s": round(bench_cpu, 3),
        "bench_cpu_pct": bench_cpu_pct,
        "valid": not invalid,
        "invalid_reasons": invalid,
        "warnings": warnings,
        "machine_cpu_pct": machine,
        "connected": {
            "publisher": publisher.connected,
            "subscribers": connected_subs,
            "subscribers_with_media": sum(1 for s in subscribers if s.has_media),
            "setup_s": round(setup_s, 3),
            "first_media_s": round(first_media_s, 3),
        },
        "forwarding_advertised": forwarding_advertised,
        "server_counters": server_counters,
        "publisher": {
            **publisher.stats(),
            "window_packets": published,
            "window_pps": round(published / window_s, 1),
            "video_bitrate_bps": media.video_bitrate_bps,
            "audio_bitrate_bps": media.audio_bitrate_bps,
            "fps": media.fps,
        },
        "subscriber_feedback": {
            k: sum(s.core.sent[k] for s in subscribers) for k in ("transport_cc", "rr", "nack",
                                                                  "pli")},
        "subscriber_socket_drops": drops,
        "decode": {
            "subscribers": len(decoders),
            "frames": sum(c.checker.decoded for c in decoders if c.checker),
            "errors": sum(c.checker.errors for c in decoders if c.checker),
            "incomplete_frames": sum(c.assembler.incomplete for c in decoders if c.assembler),
            "size": (f"{decoders[0].checker.width}x{decoders[0].checker.height}"
                     if decoders and decoders[0].checker else None),
        },
    }
