"""``sfu bench …`` (also ``python -m bench …``): load tests of the forwarding path.

- ``forward``: one publisher (Opus + VP8) → N subscribers through the SFU, real WebRTC
  clients (ICE, DTLS, SRTP, RTCP) on one event loop; server CPU per forwarded packet.
- ``floor``: the same packet stream through a plain UDP + SRTP fan-out with no SFU logic,
  on the same machine: the floor the SFU's per-packet cost compares with.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be >= 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 24 * 3600:
        raise argparse.ArgumentTypeError(f"{text}: must be 0..86400 seconds")
    return value


def _percent(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text}: must be 0..100")
    return value


def _common(p: argparse.ArgumentParser, subscribers: int, duration_s: float) -> None:
    p.add_argument("--subscribers", type=_positive_int, default=subscribers, metavar="N",
                   help=f"receivers of the stream (default {subscribers})")
    p.add_argument("--duration", type=_seconds, default=duration_s, metavar="S",
                   help=f"measured window in seconds, after the warm-up (default {duration_s:g})")
    p.add_argument("--warmup", type=_seconds, default=3.0, metavar="S",
                   help="seconds skipped once media flows, before measuring (default 3)")
    p.add_argument("--fps", type=_positive_int, default=30, help="video frame rate (default 30)")
    p.add_argument("--video-bitrate", type=_positive_int, default=600_000, metavar="BPS",
                   help="VP8 target bitrate (default 600000)")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="do not pin the server to CPU 0 and the bench to CPU 1")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (the report) instead of the live progress line "
                        "and the summary")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sfu bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fwd = sub.add_parser(
        "forward", help="1 publisher → N subscribers through the SFU",
        description="One publisher (Opus 20 ms + VP8) and N subscribers, real WebRTC clients "
                    "sharing this process. Without --url it starts its own daemon on free "
                    "loopback ports. Reports server CPU per forwarded packet, loss, one-way "
                    "delay and the bench's own CPU (over 80%% of its core: \"valid\": false).")
    _common(fwd, 10, 10.0)
    fwd.add_argument("--url", metavar="WS_URL",
                     help="signaling URL of a running daemon (ws://host:port/rtc); default: "
                          "start one")
    fwd.add_argument("--api-key", metavar="K", help="API key for the tokens (with --url)")
    fwd.add_argument("--api-secret-file", metavar="F",
                     help="file holding the API secret (with --url; else SFU_API_SECRET, else "
                          "the development key)")
    fwd.add_argument("--metrics-url", metavar="URL",
                     help="the daemon's /metrics (with --url): counters and, without "
                          "--server-pid, its process CPU")
    fwd.add_argument("--server-pid", type=int, metavar="PID",
                     help="the daemon's pid on this machine (with --url), for its CPU time")
    fwd.add_argument("--room", help="room name (default: a random bench-… name)")
    fwd.add_argument("--decode", type=int, default=1, metavar="K",
                     help="subscribers that depacketize and decode the video (default 1)")
    fwd.add_argument("--media-timeout", type=_seconds, default=10.0, metavar="S",
                     help="how long to wait for every subscriber to receive media before "
                          "measuring anyway (default 10)")
    fwd.add_argument("--connect-timeout", type=_seconds, default=30.0, metavar="S",
                     help="per client: signaling, ICE and DTLS (default 30)")
    fwd.add_argument("--concurrency", type=_positive_int, default=16, metavar="C",
                     help="subscribers connecting at once (default 16)")
    fwd.add_argument("--loss", type=_percent, default=0.0, metavar="PCT",
                     help="drop this percentage of the packets each subscriber receives, "
                          "before SRTP (simulated network loss: exercises NACK/RTX)")
    fwd.add_argument("--publisher-loss", type=_percent, default=0.0, metavar="PCT",
                     help="the publisher skips sending this percentage of its packets "
                          "(simulated upstream loss: the SFU NACKs, the publisher retransmits)")
    fwd.add_argument("--seed", type=int, help="seed for SSRCs, sequence numbers and ICE "
                                                "credentials")
    fwd.add_argument("--daemon-log-level", default="warning",
                     choices=("debug", "info", "warning", "error"),
                     help="log level of the daemon the bench starts (default warning)")

    live = sub.add_parser(
        "livestream", help="1 simulcast publisher → N subscribers spread over the layers",
        description="Like forward, with the video in three RID simulcast layers (each "
                    "layer its own SSRC + RTX, as Chromium sends it). Subscribers ask for "
                    "low, medium and high in turn; after the window the decoding "
                    "subscribers change layers --switches times and the report gives the "
                    "request → first frame at the new size latency (layer_switch_ms).")
    _common(live, 50, 15.0)
    live.add_argument("--decode", type=int, default=3, metavar="K",
                      help="subscribers that decode the video and measure layer switches "
                           "(default 3)")
    live.add_argument("--switches", type=int, default=10, metavar="K",
                      help="layer changes per decoding subscriber after the window "
                           "(default 10)")
    live.add_argument("--connect-timeout", type=_seconds, default=30.0, metavar="S",
                      help="per client: signaling, ICE and DTLS (default 30)")
    live.add_argument("--concurrency", type=_positive_int, default=16, metavar="C",
                      help="subscribers connecting at once (default 16)")
    for parser in (fwd, live):
        parser.add_argument("--sweep", action="store_true",
                            help="raise --subscribers by 1.5x per run (each with its own "
                                 "daemon) until loss passes 1 %% or a run is invalid; report "
                                 "the capacity")
        parser.add_argument("--sweep-max", type=_positive_int, default=600, metavar="N",
                            help="largest subscriber count a sweep tries (default 600)")
        parser.add_argument("--png", metavar="FILE",
                            help="with --sweep: plot the capacity to this PNG (matplotlib)")
        parser.add_argument("--capacity-json", metavar="FILE",
                            help="with --sweep: record the headline numbers in this JSON file "
                                 "(e.g. bench/capacity.json; other modes' entries are kept)")

    floor = sub.add_parser(
        "floor", help="the same stream through a plain UDP + SRTP fan-out (no SFU logic)",
        description="A sender process sends the publisher's packet stream (SRTP, fixed keys) "
                    "to a forwarder process (uvloop, one socket in, one socket per receiver "
                    "out, unprotect once, SSRC rewrite and protect per receiver) that fans "
                    "it out to N receivers in this process. Same report fields as forward.")
    _common(floor, 10, 10.0)
    floor.add_argument("--streams", type=_positive_int, default=1, metavar="K",
                       help="copies of the publisher's stream the sender sends (default 1), "
                            "to reach higher packet rates")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from .transport import BenchError

    try:
        if args.command == "forward":
            from .forward import ForwardOptions, run_forward

            opts = ForwardOptions(
                subscribers=args.subscribers, duration_s=args.duration, warmup_s=args.warmup,
                url=args.url, api_key=args.api_key, api_secret_file=args.api_secret_file,
                metrics_url=args.metrics_url, server_pid=args.server_pid,
                decode=args.decode, media_timeout_s=args.media_timeout,
                connect_timeout_s=args.connect_timeout, concurrency=args.concurrency,
                pin=args.pin, show_progress=not args.json, fps=args.fps,
                video_bitrate_bps=args.video_bitrate, seed=args.seed, loss_pct=args.loss,
                publisher_loss_pct=args.publisher_loss,
                daemon_log_level=args.daemon_log_level)
            if args.room:
                opts.room = args.room
            if args.sweep:
                from .sweep import run_sweep

                report, rc = run_sweep(opts, maximum=args.sweep_max, png=args.png,
                                       capacity_json=args.capacity_json)
            else:
                report, rc = run_forward(opts)
        elif args.command == "livestream":
            from .forward import ForwardOptions, run_forward

            live_opts = ForwardOptions(
                subscribers=args.subscribers, duration_s=args.duration, warmup_s=args.warmup,
                decode=min(args.decode, args.subscribers), connect_timeout_s=args.connect_timeout,
                concurrency=args.concurrency, pin=args.pin, show_progress=not args.json,
                fps=args.fps, video_bitrate_bps=args.video_bitrate, simulcast=True,
                switches=args.switches)
            if args.sweep:
                from .sweep import run_sweep

                report, rc = run_sweep(live_opts, maximum=args.sweep_max, png=args.png,
                                       capacity_json=args.capacity_json)
            else:
                report, rc = run_forward(live_opts)
        else:
            from .floor import FloorOptions, run_floor

            report, rc = run_floor(FloorOptions(
                subscribers=args.subscribers, duration_s=args.duration, warmup_s=args.warmup,
                pin=args.pin, show_progress=not args.json, fps=args.fps,
                video_bitrate_bps=args.video_bitrate, streams=args.streams))
    except (BenchError, OSError) as exc:
        print(f"bench {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(report))
    else:
        print(summary(report))
    return rc


def summary(report: dict[str, object]) -> str:
    """The report for humans: the headline numbers, then the JSON."""
    if str(report.get("mode", "")).endswith("-sweep"):
        return (f"{report['mode']}: capacity {report['capacity_subscribers']} subscribers "
                f"at < {report['loss_limit_pct']} % loss\n" + json.dumps(report, indent=2))
    lines = [
        f"{report['mode']}: {report['subscribers']} subscribers, {report['duration_s']} s",
        f"  forwarded        {report['forwarded_packets']} packets, "
        f"{report['forwarded_pps']} pps",
        f"  server CPU       {report['server_cpu_s']} s -> "
        f"{report['us_per_forwarded_packet']} µs per forwarded packet",
        f"  loss             {report['loss_pct']} %",
        f"  bench CPU        {report['bench_cpu_pct']} % "
        f"({'valid' if report['valid'] else 'NOT VALID: ' + '; '.join(report['invalid_reasons'])})",  # type: ignore[arg-type]
    ]
    if report.get("delay_ms"):
        lines.append(f"  one-way delay ms {report['delay_ms']}")
    if report.get("warnings"):
        lines.append(f"  warnings         {report['warnings']}")
    if report.get("errors"):
        lines.append(f"  errors           {report['errors']}")
    lines.append(json.dumps(report, indent=2))
    return "\n".join(lines)
