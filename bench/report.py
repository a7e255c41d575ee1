"""What a bench measures besides packets: CPU time of processes, Prometheus counters, and
the shape of its report (percentiles, the live progress line)."""

from __future__ import annotations

import math
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CpuClock", "MemorySeries", "bench_cpu_s", "cpu_busy_s", "machine_load",
           "memory_kb", "percentiles", "pin_to_cpu", "progress", "scrape_metrics",
           "usable_cpus"]

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: A bench process using more of its core than this measured itself, not the server.
BENCH_CPU_LIMIT = 0.8
#: Busy time of a measured CPU not explained by the measured processes, above which a run
#: is flagged as noisy (kernel softirq work for loopback traffic accounts for some).
OTHER_LOAD_WARN = 0.25


@dataclass(frozen=True, slots=True)
class CpuClock:
    """CPU time (user + system) of another process, read from ``/proc/<pid>/stat``."""

    pid: int

    def read_s(self) -> float | None:
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                stat = f.read()
        except OSError:
            return None
        # the command name may hold spaces and parentheses: fields start after the last ')'
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


def memory_kb(pid: int) -> dict[str, int] | None:
    """Resident (``rss_kb``), proportional (``pss_kb``: shared pages divided among the
    processes mapping them, so it drops when other processes map the same libraries) and
    unique (``uss_kb``: private pages only) set size of a process, from
    ``/proc/<pid>/smaps_rollup``; None when it cannot be read."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                    fields[name] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if len(fields) != 4:
        return None
    return {"rss_kb": fields["Rss"], "pss_kb": fields["Pss"],
            "uss_kb": fields["Private_Clean"] + fields["Private_Dirty"]}


@dataclass(slots=True)
class MemorySeries:
    """A process's memory sampled over a measured window: the report says how flat its PSS
    stayed (largest deviation from the first sample, in % of it)."""

    pid: int
    interval_s: float
    samples: list[tuple[float, int, int, int]]  # (s into the window, rss_kb, pss_kb, uss_kb)
    started: float = 0.0
    next_at: float = 0.0

    @classmethod
    def start(cls, pid: int, window_s: float, now: float) -> MemorySeries:
        # about 60 samples per window, at most one a second
        series = cls(pid, max(1.0, window_s / 60), [], now, now)
        series.sample(now)
        return series

    def sample(self, now: float, *, force: bool = False) -> None:
        if not force and now < self.next_at:
            return
        reading = memory_kb(self.pid)
        if reading is not None:
            self.samples.append((round(now - self.started, 1), reading["rss_kb"],
                                 reading["pss_kb"], reading["uss_kb"]))
        self.next_at = now + self.interval_s

    def report(self) -> dict[str, object] | None:
        if not self.samples:
            return None
        def summary(column: int) -> dict[str, object]:
            values = [s[column] for s in self.samples]
            first = values[0]
            return {"first": first, "last": values[-1], "min": min(values), "max": max(values),
                    "max_deviation_pct": (round(max(abs(v - first) for v in values) * 100
                                                / first, 2) if first else None)}

        pss = summary(2)
        return {
            "rss_kb": summary(1), "pss_kb": pss, "uss_kb": summary(3),
            "pss_max_deviation_pct": pss["max_deviation_pct"],
            "interval_s": self.interval_s,
            "samples": [list(s) for s in self.samples],
        }


def cpu_busy_s() -> dict[int, float]:
    """Busy seconds of each CPU since boot (``/proc/stat``: all but idle and iowait)."""
    out: dict[int, float] = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    name, *values = line.split()
                    ticks = [int(v) for v in values[:8]]
                    out[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4]) / _CLK_TCK
    except OSError:
        pass
    return out


def machine_load(before: dict[int, float], after: dict[int, float], window_s: float,
                 ours: dict[int, float]) -> tuple[dict[str, float], list[str]]:
    """Per-CPU busy % over the window and warnings when something else than ``ours``
    (CPU → seconds our processes used there) kept a CPU we measure on busy."""
    busy = {cpu: (after[cpu] - before.get(cpu, 0.0)) / window_s for cpu in after}
    warnings = []
    for cpu, used_s in ours.items():
        if cpu in busy:
            other = busy[cpu] - used_s / window_s
            if other > OTHER_LOAD_WARN:
                warnings.append(f"CPU {cpu} was {other * 100:.0f}% busy with other work "
                                "(other processes, interrupts): the numbers are noisy")
    return {f"cpu{cpu}": round(b * 100, 1) for cpu, b in sorted(busy.items())}, warnings


def bench_cpu_s() -> float:
    """CPU time of this process (all threads)."""
    return time.process_time()


def pin_to_cpu(cpu: int | None) -> int | None:
    """Pin this process to ``cpu`` when the machine has it; returns the CPU pinned to."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        if cpu not in os.sched_getaffinity(0):
            return None
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return None
    return cpu


def usable_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", re.M)


def scrape_metrics(url: str, timeout_s: float = 2.0) -> dict[str, float] | None:
    """Prometheus text exposition at ``url`` as ``{name: sum over label sets}``; None if
    it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            text = resp.read().decode("utf-8", errors="replace")
    except (OSError, urllib.error.URLError):
        return None
    out: dict[str, float] = {}
    for name, _, value in _SAMPLE.findall(text):
        try:
            number = float(value)
        except ValueError:
            continue
        out[name] = out.get(name, 0.0) + number
    return out


def percentiles(values: Sequence[float], points: Sequence[float] = (50, 95, 99)
                ) -> dict[str, float] | None:
    """``{"p50": …, "p95": …, "p99": …, "max": …, "samples": n}``, nearest-rank; None if
    empty."""
    if not values:
        return None
    ordered = sorted(values)
    n = len(ordered)
    out = {f"p{p:g}": round(ordered[min(n - 1, max(0, math.ceil(p / 100 * n) - 1))], 3)
           for p in points}
    out["max"] = round(ordered[-1], 3)
    out["samples"] = n
    return out


def progress(text: str, *, final: bool = False) -> None:
    """One live status line on stderr (rewritten in place on a terminal)."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\x1b[2K{text}" + ("\n" if final else ""))
    else:
        sys.stderr.write(text + "\n")
    sys.stderr.flush()
