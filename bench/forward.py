"""Runs a scenario and measures it: ``sfu bench forward`` (one publisher → N subscribers),
``livestream`` (the same with the video in three RID simulcast layers), ``audio`` (P audio
publishers → S subscribers) and ``meeting`` (N participants, everyone receives everyone);
the clients of each are in :mod:`bench.scenario`.

In ``livestream`` the subscribers are spread over the layers (``track_settings`` quality
low / medium / high in turn) and, after the measured window, the decoding subscribers change
layers ``--switches`` times each: the report's ``layer_switch_ms`` is the time from sending
``track_settings`` to the first decoded frame of the new layer's size.

Without ``--url`` the bench starts its own daemon (``python -m sfu serve`` on free loopback
ports, pinned with ``taskset -c 0`` when the machine has two CPUs, the bench then on CPU 1).
The clients share this process's event loop (uvloop), or with ``--processes K`` they are
spread over K worker processes (:mod:`bench.worker`) that this one drives in step. Once
every subscriber receives every stream it expects (or ``--media-timeout`` passes), a
warm-up is skipped, and over the steady window the bench measures:

- packets and bytes the subscribers received (every RTP packet the server sent them:
  media, RTX and padding), loss from their extended sequence numbers (after and before
  retransmissions), one-way delay publisher → subscriber from RTP timestamps and the
  server's sender reports (which map them to the publisher's NTP clock); in total and per
  room (``per_room``);
- the daemon's CPU time (``/proc/<pid>/stat``; for a remote daemon, its
  ``process_cpu_seconds_total`` when ``--metrics-url`` is given) per forwarded packet;
- the daemon's own counters when it exports them (``sfu_forwarded_packets_total``...);
- join times: ``join_to_connected_ms`` (signaling connect → every transport of the client
  connected: ICE + DTLS) and ``join_to_first_media_ms`` (signaling connect → first RTP
  packet at a subscriber, which includes waiting for publishers that join later);
- the bench's own CPU, per bench process: above 80 % of its core that process measured
  itself, and the report says ``"valid": false``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sfu.config import DEV_API_KEY, DEV_API_SECRET

from .daemon import LocalDaemon, start_daemon
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
from .scenario import QUALITIES, ClientGroup, ClientSpec, ForwardOptions, merge, plan, room_name
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

#: Above this p95 lag of the publishers' sends, one-way delays measure the bench too.
SEND_LAG_WARN_MS = 20.0


class Group(Protocol):
    """The clients of one bench process: :class:`~bench.scenario.ClientGroup` in this
    process, or :class:`~bench.worker.WorkerGroup` driving a worker process."""

    async def connect(self) -> dict[str, Any]: ...

    async def wait_media(self) -> dict[str, Any]: ...

    async def snapshot(self, recording: bool | None = None) -> dict[str, Any]: ...

    async def finish(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


@dataclass
class _Snapshot:
    at: float
    server_cpu_s: float | None
    #: Each group's :meth:`~bench.scenario.ClientGroup.snapshot`.
    groups: list[dict[str, Any]]
    coordinator_cpu_s: float
    metrics: dict[str, float] | None = None
    machine: dict[int, float] = field(default_factory=dict)

    @functools.cached_property
    def rooms(self) -> dict[str, dict[str, int]]:
        merged: dict[str, dict[str, int]] = {}
        for group in self.groups:
            merged = merge(merged, group["rooms"])
        return merged

    @functools.cached_property
    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for counters in self.rooms.values():
            out = merge(out, counters)
        return out


def run_forward(opts: ForwardOptions) -> tuple[dict[str, Any], int]:
    """Run the scenario ``opts.scenario``; returns the report and the exit status (0: every
    client connected)."""
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
        # worker processes: on every CPU but the daemon's, round robin
        worker_cpus: list[int | None] = list(cpus[1:]) if pin else [None]
        report = uvloop.run(_run(opts, url, key, secret, metrics_url, server_pid,
                                 server_core, bench_cpu, worker_cpus))
        report["server"] = {
            "url": url, "pid": server_pid, "started_by_bench": daemon is not None,
            "pinned_cpu": daemon.pinned_cpu if daemon else None, "bench_cpu": bench_cpu,
        }
        if daemon is not None and daemon.proc.poll() is not None:
            report["errors"].append(f"the daemon exited with {daemon.proc.returncode}: "
                                    f"{daemon.log_tail(5)}")
        connected = report["connected"]
        ok = connected["publisher"] and connected["subscribers"] == report["subscribers"]
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
               metrics_url: str | None, server_pid: int | None, server_core: int | None,
               bench_cpu: int | None, worker_cpus: Sequence[int | None]) -> dict[str, Any]:
    seed = opts.seed if opts.seed is not None else secrets.randbits(32)
    specs = plan(opts)
    groups: list[Group] = []
    #: the CPU each group's process runs on
    group_cpus: list[int | None] = []
    try:
        if opts.processes == 1:
            groups.append(ClientGroup(opts, specs, url=url, key=key, secret=secret, seed=seed))
            group_cpus.append(bench_cpu)
        else:
            from .worker import WorkerGroup

            group_cpus += [worker_cpus[w % len(worker_cpus)] for w in range(opts.processes)]
            started = await asyncio.gather(*(
                WorkerGroup.start(opts, w, url=url, key=key, secret=secret, seed=seed,
                                  cpu=group_cpus[w]) for w in range(opts.processes)),
                return_exceptions=True)
            groups += [g for g in started if isinstance(g, WorkerGroup)]
            failed = [str(g) for g in started if isinstance(g, BaseException)]
            if failed:
                raise BenchError("bench workers did not start: " + "; ".join(failed))
        setup_started = time.monotonic()
        statuses = await asyncio.gather(*(g.connect() for g in groups))
        setup_s = time.monotonic() - setup_started
        if not sum(s["publishers_connected"] for s in statuses):
            errors = [e for s in statuses for e in s.get("errors", ())]
            raise BenchError("no publisher connected, nothing to measure: "
                             + "; ".join(dict.fromkeys(errors[:5])))
        await asyncio.gather(*(g.wait_media() for g in groups))
        first_media_s = time.monotonic() - setup_started
        await asyncio.sleep(opts.warmup_s)

        clock = CpuClock(server_pid) if server_pid is not None else None
        start = await _snapshot(groups, clock, metrics_url, recording=True)
        memory = (MemorySeries.start(server_pid, opts.duration_s, start.at)
                  if server_pid is not None else None)
        window_end = start.at + opts.duration_s
        last = start
        while (remaining := window_end - time.monotonic()) > 0:
            await asyncio.sleep(min(1.0, remaining))
            if memory is not None:
                memory.sample(time.monotonic())
            if opts.show_progress and time.monotonic() - last.at >= 0.5:
                now = await _snapshot(groups, clock, None)
                progress(_progress_line(opts, start, last, now))
                last = now
        end = await _snapshot(groups, clock, metrics_url, recording=False)
        if memory is not None:
            memory.sample(end.at, force=True)
        if opts.show_progress:
            progress(_progress_line(opts, start, start, end), final=True)
        finals = await asyncio.gather(*(g.finish() for g in groups))
        info: dict[str, Any] = {}
        for final in finals:
            info = merge(info, final)
        info["media"] = finals[0]["media"]  # the same loop in every process: not summed
        report = _report(opts, specs, start, end, info, setup_s, first_media_s,
                         server_core, group_cpus)
        report["daemon_memory"] = memory.report() if memory is not None else None
    finally:
        await asyncio.gather(*(g.close() for g in groups), return_exceptions=True)
    report["seed"] = seed
    return report


async def _snapshot(groups: Sequence[Group], clock: CpuClock | None, metrics_url: str | None,
                    *, recording: bool | None = None) -> _Snapshot:
    metrics_task = (asyncio.ensure_future(asyncio.to_thread(scrape_metrics, metrics_url))
                    if metrics_url else None)
    states = await asyncio.gather(*(g.snapshot(recording) for g in groups))
    snap = _Snapshot(time.monotonic(), clock.read_s() if clock else None, list(states),
                     bench_cpu_s(), machine=cpu_busy_s())
    if metrics_task is not None:
        snap.metrics = await metrics_task
    if snap.server_cpu_s is None and snap.metrics and "process_cpu_seconds_total" in snap.metrics:
        snap.server_cpu_s = snap.metrics["process_cpu_seconds_total"]
    return snap


def _loss_pct(expected: int, got: int) -> float | None:
    if expected <= 0:
        return None
    return round(max(0, expected - got) * 100.0 / expected, 4)


def _progress_line(opts: ForwardOptions, start: _Snapshot, last: _Snapshot,
                   now: _Snapshot) -> str:
    dt = max(1e-6, now.at - last.at)
    pps = (now.totals.get("received", 0) - last.totals.get("received", 0)) / dt
    with_media = sum(g["with_media"] for g in now.groups)
    subscribers = sum(g["subscribers"] for g in now.groups)
    loss = _loss_pct(now.totals.get("expected", 0) - start.totals.get("expected", 0),
                     now.totals.get("unique", 0) - start.totals.get("unique", 0))
    server = (f"{(now.server_cpu_s - last.server_cpu_s) * 100 / dt:5.1f}%"
              if now.server_cpu_s is not None and last.server_cpu_s is not None else "   n/a")
    bench = max((b["bench_cpu_s"] - a["bench_cpu_s"]) * 100 / dt
                for a, b in zip(last.groups, now.groups, strict=True))
    return (f"[{opts.mode}] {now.at - start.at:5.1f}/{opts.duration_s:g} s  "
            f"subs with media {with_media}/{subscribers}  rx {pps:8.0f} pps  "
            f"loss {loss if loss is not None else 0:.3f}%  server cpu {server}  "
            f"bench cpu {bench:5.1f}%")


def _window(start: dict[str, int], end: dict[str, int], window_s: float,
            samples: dict[str, list[float]]) -> dict[str, Any]:
    """The traffic fields of a report (the whole run's or one room's)."""
    def delta(name: str) -> int:
        return end.get(name, 0) - start.get(name, 0)

    forwarded = delta("received")
    delays = percentiles(samples["delays_ms"])
    return {
        "forwarded_packets": forwarded,
        "forwarded_pps": round(forwarded / window_s, 1),
        "forwarded_bytes": delta("octets"),
        "forwarded_bps": round(delta("octets") * 8 / window_s),
        "loss_pct": _loss_pct(delta("expected"), delta("unique")),
        "raw_loss_pct": _loss_pct(delta("expected"), delta("originals")),
        "loss_pct_by_kind": {kind: _loss_pct(delta(f"{kind}_expected"), delta(f"{kind}_unique"))
                             for kind in ("audio", "video")},
        "retransmissions_received": delta("rtx"),
        "delay_ms": delays,
        "join_to_connected_ms": percentiles(samples["join_to_connected_ms"]),
        "join_to_first_media_ms": percentiles(samples["join_to_first_media_ms"]),
    }


def _report(opts: ForwardOptions, specs: Sequence[ClientSpec], start: _Snapshot, end: _Snapshot,
            info: dict[str, Any], setup_s: float, first_media_s: float,
            server_core: int | None, group_cpus: Sequence[int | None]) -> dict[str, Any]:
    window_s = max(1e-6, end.at - start.at)
    server_cpu_s = (round(end.server_cpu_s - start.server_cpu_s, 3)
                    if end.server_cpu_s is not None and start.server_cpu_s is not None else None)
    # CPU of each bench process: the groups' processes (this one when there is one group)
    process_cpu = [b["bench_cpu_s"] - a["bench_cpu_s"]
                   for a, b in zip(start.groups, end.groups, strict=True)]
    coordinator_cpu = end.coordinator_cpu_s - start.coordinator_cpu_s
    bench_cpu = sum(process_cpu) + (coordinator_cpu if len(process_cpu) > 1 else 0.0)
    worst = max(process_cpu)
    server_counters: dict[str, float] | None = None
    forwarding_advertised = False
    if start.metrics is not None and end.metrics is not None:
        forwarding_advertised = "sfu_forwarded_packets_total" in end.metrics
        server_counters = {label: end.metrics[name] - start.metrics.get(name, 0.0)
                           for name, label in SERVER_COUNTERS.items() if name in end.metrics}
    rooms: dict[str, Any] = info["rooms"]
    counts: dict[str, int] = {}
    samples: dict[str, list[float]] = {}
    for room in rooms.values():
        counts = merge(counts, room["counts"])
        samples = merge(samples, room["samples"])
    totals = _window(start.totals, end.totals, window_s, samples)
    forwarded = totals["forwarded_packets"]
    invalid: list[str] = []
    for i, used in enumerate(process_cpu):
        if used / window_s > BENCH_CPU_LIMIT:
            who = "the bench" if len(process_cpu) == 1 else f"bench process {i}"
            invalid.append(f"{who} used {used * 100 / window_s:.1f}% of its CPU (limit "
                           f"{BENCH_CPU_LIMIT * 100:.0f}%): it measured itself")
    if not forwarded:
        invalid.append("no media reached the subscribers")
    if server_cpu_s is None:
        invalid.append("no server CPU reading (give --server-pid or --metrics-url)")
    all_publishers = counts["publishers_connected"] == counts["publishers"]
    if not all_publishers or counts["subscribers_connected"] < counts["subscribers"]:
        invalid.append("not every client connected")
    drops = info["subscriber_socket_drops"]
    warnings: list[str] = []
    lag = percentiles(samples["send_lag_ms"])
    if lag is not None and lag["p95"] > SEND_LAG_WARN_MS:
        warnings.append(f"publisher send lag p95 {lag['p95']} ms: the bench's event loop was "
                        "busy, so delay_ms includes bench queueing (use fewer subscribers)")
    if drops:
        warnings.append(f"the kernel dropped {drops} datagrams at the subscribers' sockets")
    missing = [m for room in rooms.values() for m in room["missing_media"]]
    if missing:
        warnings.append(f"{len(missing)} subscribers lack expected streams, e.g. {missing[0]}")
    ours: dict[int, float] = {}
    if server_core is not None and server_cpu_s is not None:
        ours[server_core] = server_cpu_s
    for cpu, used in zip(group_cpus, process_cpu, strict=True):
        if cpu is not None:
            ours[cpu] = ours.get(cpu, 0.0) + used
    if len(process_cpu) > 1:
        shared = Counter(c for c in group_cpus if c is not None)
        for cpu, n in shared.items():
            if n > 1 and ours[cpu] / window_s > BENCH_CPU_LIMIT:
                warnings.append(f"the {n} bench processes on CPU {cpu} used "
                                f"{ours[cpu] * 100 / window_s:.0f}% of it together: the "
                                "clients were short of CPU")
    machine, noisy = machine_load(start.machine, end.machine, window_s, ours)
    warnings += noisy
    publisher = info["publisher"]
    published = end.totals.get("published", 0) - start.totals.get("published", 0)
    report: dict[str, Any] = {
        "mode": opts.mode,
        "rooms": opts.rooms,
        "publishers": counts["publishers"],
        "subscribers": counts["subscribers"],
        "duration_s": round(window_s, 3),
        "warmup_s": opts.warmup_s,
        "forwarded_packets": forwarded,
        "forwarded_pps": totals["forwarded_pps"],
        "forwarded_bytes": totals["forwarded_bytes"],
        "forwarded_bps": totals["forwarded_bps"],
        "us_per_forwarded_packet": (round(server_cpu_s * 1e6 / forwarded, 2)
                                    if server_cpu_s is not None and forwarded else None),
        "server_cpu_s": server_cpu_s,
        "server_cpu_pct": (round(server_cpu_s * 100 / window_s, 1)
                           if server_cpu_s is not None else None),
        **{k: totals[k] for k in ("loss_pct", "raw_loss_pct", "loss_pct_by_kind",
                                  "retransmissions_received")},
        "simulated_loss_pct": {"subscribers": opts.loss_pct,
                               "publisher": opts.publisher_loss_pct},
        "delay_ms": totals["delay_ms"],
        "delay_breakdown_ms": {
            "publisher_send_lag": lag,
            "server_to_subscriber": percentiles(samples["hop_delays_ms"]),
        },
        "join_to_connected_ms": totals["join_to_connected_ms"],
        "join_to_first_media_ms": totals["join_to_first_media_ms"],
        "bench_cpu_s": round(bench_cpu, 3),
        "bench_cpu_pct": round(worst * 100 / window_s, 1),
        "bench_processes": [
            {"cpu": cpu, "cpu_s": round(used, 3), "cpu_pct": round(used * 100 / window_s, 1)}
            for cpu, used in zip(group_cpus, process_cpu, strict=True)],
        "valid": not invalid,
        "invalid_reasons": invalid,
        "warnings": warnings,
        "machine_cpu_pct": machine,
        "connected": {
            "publisher": all_publishers,
            "publishers": counts["publishers_connected"],
            "subscribers": counts["subscribers_connected"],
            "subscribers_with_media": counts["subscribers_with_media"],
            "streams_expected": counts["streams_expected"],
            "streams_received": counts["streams_received"],
            "setup_s": round(setup_s, 3),
            "first_media_s": round(first_media_s, 3),
        },
        "forwarding_advertised": forwarding_advertised,
        "server_counters": server_counters,
        "publisher": {
            **publisher,
            "window_packets": published,
            "window_pps": round(published / window_s, 1),
            **{k: v for k, v in info["media"].items() if k != "layers"},
        },
        "subscriber_feedback": info["subscriber_feedback"],
        "subscriber_socket_drops": drops,
        "decode": info["decode"],
        "per_room": [
            {"room": room_name(opts, int(r)), **rooms[r]["counts"],
             **_window(start.rooms.get(r, {}), end.rooms.get(r, {}), window_s,
                       rooms[r]["samples"])}
            for r in sorted(rooms, key=int)],
        "errors": list(dict.fromkeys(info["errors"]))[:20],
    }
    if len(process_cpu) > 1:
        report["bench_coordinator_cpu_pct"] = round(coordinator_cpu * 100 / window_s, 1)
    if opts.mode == "meeting":
        report["participants"] = counts["subscribers"]
        report["simulcast"] = opts.simulcast
    if opts.mode == "audio":
        report["publishers_per_room"] = opts.publishers
    if info["media"]["layers"]:
        report["layers"] = info["media"]["layers"]
    if opts.mode == "livestream":
        report["subscribers_per_layer"] = {q: sum(1 for s in specs if s.quality == q)
                                           for q in QUALITIES}
        report["layer_switch_ms"] = percentiles(samples["layer_switch_ms"])
        report["layer_switches_measured"] = len(samples["layer_switch_ms"])
    return report
