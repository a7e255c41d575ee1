"""``--sweep``: raise the load step by step until loss passes 1 % (or a run turns invalid),
then plot capacity to a PNG and write the headline numbers as JSON.

Each step is a full run (its own daemon, its own clients) at a higher subscriber count, so
one overloaded step cannot skew the next. The capacity is the largest subscriber count
whose run was valid, connected every client, lost less than ``LOSS_LIMIT_PCT`` and
delivered with a median one-way delay under ``DELAY_LIMIT_MS``.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .forward import ForwardOptions, run_forward
from .report import progress

__all__ = ["LOSS_LIMIT_PCT", "plot", "run_sweep", "steps"]

LOSS_LIMIT_PCT = 1.0
#: A run whose median one-way delay exceeds this is saturated (packets queue somewhere:
#: the server's or the bench's event loop, socket buffers) even if nothing is lost yet.
DELAY_LIMIT_MS = 500.0


def steps(start: int, maximum: int, factor: float = 1.5) -> list[int]:
    """Subscriber counts: ``start``, then × ``factor`` (at least +1) up to ``maximum``."""
    if start < 1 or maximum < start or factor <= 1:
        raise ValueError(f"bad sweep: start {start}, maximum {maximum}, factor {factor}")
    out = [start]
    while out[-1] < maximum:
        out.append(min(maximum, max(out[-1] + 1, round(out[-1] * factor))))
    return out


def _point(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "subscribers": report["subscribers"],
        "forwarded_pps": report["forwarded_pps"],
        "forwarded_bps": report.get("forwarded_bps"),
        "us_per_forwarded_packet": report["us_per_forwarded_packet"],
        "server_cpu_pct": report["server_cpu_pct"],
        "loss_pct": report["loss_pct"],
        "delay_ms_p50": (report.get("delay_ms") or {}).get("p50"),
        "delay_ms_p99": (report.get("delay_ms") or {}).get("p99"),
        "valid": report["valid"],
        "invalid_reasons": report["invalid_reasons"],
        "connected": report["connected"]["subscribers"],
        "errors": report["errors"][:3],
    }


def _ok(point: dict[str, Any]) -> bool:
    loss = point["loss_pct"]
    delay = point["delay_ms_p50"]
    return bool(point["valid"]) and point["connected"] == point["subscribers"] and (
        loss is not None and loss < LOSS_LIMIT_PCT) and (
        delay is None or delay < DELAY_LIMIT_MS)


def run_sweep(opts: ForwardOptions, *, maximum: int, png: str | None,
              capacity_json: str | None,
              run: Callable[[ForwardOptions], tuple[dict[str, Any], int]] = run_forward
              ) -> tuple[dict[str, Any], int]:
    """Run the steps until one fails; returns the sweep report and an exit status."""
    mode = opts.mode
    points: list[dict[str, Any]] = []
    for count in steps(opts.subscribers, maximum):
        progress(f"[sweep {mode}] {count} subscribers ...", final=True)
        report, _ = run(replace(opts, subscribers=count, show_progress=False, switches=0))
        point = _point(report)
        points.append(point)
        progress(f"[sweep {mode}] {count} subscribers: {point['forwarded_pps']} pps, "
                 f"{point['us_per_forwarded_packet']} µs/packet, loss {point['loss_pct']} %, "
                 f"server CPU {point['server_cpu_pct']} %"
                 f"{'' if point['valid'] else ' (invalid)'}", final=True)
        if not _ok(point):
            break
    good = [p for p in points if _ok(p)]
    best = max(good, key=lambda p: p["subscribers"]) if good else None
    sweep = {
        "mode": f"{mode}-sweep",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu": _cpu_model(), "python": platform.python_version()},
        "loss_limit_pct": LOSS_LIMIT_PCT,
        "delay_limit_ms": DELAY_LIMIT_MS,
        "duration_s": opts.duration_s,
        "capacity_subscribers": best["subscribers"] if best else 0,
        "at_capacity": best,
        "stopped_by": None if len(points) == len(good) else points[-1],
        "points": points,
    }
    if png:
        plot(sweep, png)
        sweep["png"] = png
    if capacity_json:
        path = Path(capacity_json)
        existing = json.loads(path.read_text()) if path.exists() else {}
        existing[mode] = {k: sweep[k] for k in ("measured_at", "machine", "loss_limit_pct",
                                                 "delay_limit_ms", "duration_s",
                                                 "capacity_subscribers",
                                                 "at_capacity", "points")}
        path.write_text(json.dumps(existing, indent=1) + "\n")
    return sweep, 0 if best else 1


def plot(sweep: dict[str, Any], png: str) -> None:
    """Forwarded packets/s and server CPU against subscribers, with loss marked."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("the sweep plot needs matplotlib: pip install 'pysfu[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sweep["points"]
    x = [p["subscribers"] for p in points]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot(x, [p["forwarded_pps"] for p in points], "o-", label="forwarded packets/s")
    ax.set_xlabel("subscribers")
    ax.set_ylabel("packets/s")
    cpu = ax.twinx()
    cpu.plot(x, [p["server_cpu_pct"] or 0 for p in points], "s--", color="tab:red",
             label="server CPU %")
    cpu.plot(x, [p["loss_pct"] or 0 for p in points], "^:", color="tab:gray", label="loss %")
    cpu.set_ylabel("%")
    capacity = sweep["capacity_subscribers"]
    if capacity:
        ax.axvline(capacity, color="tab:green", linewidth=1)
        ax.text(capacity, ax.get_ylim()[1] * 0.95, f" capacity {capacity}", color="tab:green",
                va="top")
    lines = ax.get_legend_handles_labels()
    more = cpu.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    ax.set_title(f"{sweep['mode']}: capacity at < {sweep['loss_limit_pct']} % loss "
                 f"({sweep['machine']['cpu']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
