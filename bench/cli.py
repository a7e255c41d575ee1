"""``sfu bench …`` (also ``python -m bench …``): load tests of the forwarding path.

- ``forward``: one publisher (Opus + VP8) → N subscribers through the SFU, real WebRTC
  clients (ICE, DTLS, SRTP, RTCP) on one event loop; server CPU per forwarded packet.
- ``livestream``: the same with the video in three RID simulcast layers.
- ``audio``: P audio-only publishers → S subscribers in one room.
- ``meeting``: N participants, each publishing audio + video and receiving all others.
- ``floor``: the same packet stream through a plain UDP + SRTP fan-out with no SFU logic,
  on the same machine: the floor the SFU's per-packet cost compares with.

``--rooms R`` runs R independent copies of a scenario, each in its own room;
``--processes K`` spreads the clients over K bench processes.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .scenario import ForwardOptions

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


def _common(p: argparse.ArgumentParser, duration_s: float) -> None:
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


def _subscribers(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument("--subscribers", type=_positive_int, default=default, metavar="N",
                   help=f"receivers of the stream (default {default})")


def _scenario(p: argparse.ArgumentParser, *, decode: int | None) -> None:
    """What every scenario through the SFU takes: the server, rooms, processes, clients."""
    p.add_argument("--url", metavar="WS_URL",
                   help="signaling URL of a running daemon (ws://host:port/rtc); default: "
                        "start one")
    p.add_argument("--api-key", metavar="K", help="API key for the tokens (with --url)")
    p.add_argument("--api-secret-file", metavar="F",
                   help="file holding the API secret (with --url; else SFU_API_SECRET, else "
                        "the development key)")
    p.add_argument("--metrics-url", metavar="URL",
                   help="the daemon's /metrics (with --url): counters and, without "
                        "--server-pid, its process CPU")
    p.add_argument("--server-pid", type=int, metavar="PID",
                   help="the daemon's pid on this machine (with --url), for its CPU time")
    p.add_argument("--room", help="room name (default: a random bench-… name; with --rooms "
                                  "R, R rooms NAME-0 … NAME-R-1)")
    p.add_argument("--rooms", type=_positive_int, default=1, metavar="R",
                   help="R independent copies of the scenario, each in its own room; the "
                        "report sums them and breaks them down per room (default 1)")
    p.add_argument("--processes", type=_positive_int, default=1, metavar="K",
                   help="spread the clients over K bench worker processes (pinned away from "
                        "the daemon's CPU when there is a spare one); the >80%% bench CPU "
                        "rule applies to each (default 1: this process)")
    if decode is not None:
        p.add_argument("--decode", type=int, default=decode, metavar="K",
                       help=f"subscribers per room that depacketize and decode the video "
                            f"(default {decode})")
    p.add_argument("--media-timeout", type=_seconds, default=10.0, metavar="S",
                   help="how long to wait for every subscriber to receive every stream before "
                        "measuring anyway (default 10)")
    p.add_argument("--connect-timeout", type=_seconds, default=30.0, metavar="S",
                   help="per client: signaling, ICE and DTLS (default 30)")
    p.add_argument("--concurrency", type=_positive_int, default=16, metavar="C",
                   help="clients connecting at once, per bench process (default 16)")
    p.add_argument("--loss", type=_percent, default=0.0, metavar="PCT",
                   help="drop this percentage of the packets each subscriber receives, "
                        "before SRTP (simulated network loss: exercises NACK/RTX)")
    p.add_argument("--publisher-loss", type=_percent, default=0.0, metavar="PCT",
                   help="the publishers skip sending this percentage of their packets "
                        "(simulated upstream loss: the SFU NACKs, the publisher retransmits)")
    p.add_argument("--seed", type=int, help="seed for SSRCs, sequence numbers and ICE "
                                              "credentials")
    p.add_argument("--daemon-log-level", default="warning",
                   choices=("debug", "info", "warning", "error"),
                   help="log level of the daemon the bench starts (default warning)")


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
    _common(fwd, 10.0)
    _subscribers(fwd, 10)
    _scenario(fwd, decode=1)

    live = sub.add_parser(
        "livestream", help="1 simulcast publisher → N subscribers spread over the layers",
        description="Like forward, with the video in three RID simulcast layers (each "
                    "layer its own SSRC + RTX, as Chromium sends it). Subscribers ask for "
                    "low, medium and high in turn; after the window the decoding "
                    "subscribers change layers --switches times and the report gives the "
                    "request → first frame at the new size latency (layer_switch_ms).")
    _common(live, 15.0)
    _subscribers(live, 50)
    _scenario(live, decode=3)
    live.add_argument("--switches", type=int, default=10, metavar="K",
                      help="layer changes per decoding subscriber after the window "
                           "(default 10)")
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

    audio = sub.add_parser(
        "audio", help="P audio-only publishers → S subscribers, everyone in one room",
        description="P publishers sending Opus only (20 ms packets, pre-encoded and looped) "
                    "and S subscribers in the same room, each receiving every publisher "
                    "(P×S forwarded streams), like LiveKit's audio benchmark. Same report "
                    "fields as forward.")
    _common(audio, 10.0)
    audio.add_argument("--publishers", type=_positive_int, default=10, metavar="P",
                       help="audio publishers per room (default 10)")
    _subscribers(audio, 10)
    _scenario(audio, decode=None)

    meeting = sub.add_parser(
        "meeting", help="N participants, each publishing audio + video and receiving "
                        "everyone else",
        description="N participants, each on one signaling connection with a publisher "
                    "transport (Opus + VP8, optionally RID simulcast) and a subscriber "
                    "transport receiving the N-1 others (N×(N-1) streams of each kind). "
                    "Same report fields as forward.")
    _common(meeting, 10.0)
    meeting.add_argument("--participants", type=_positive_int, default=10, metavar="N",
                         help="participants per room (default 10)")
    meeting.add_argument("--simulcast", action="store_true",
                         help="publish the video in three RID simulcast layers (each "
                              "subscriber gets the highest)")
    _scenario(meeting, decode=1)

    floor = sub.add_parser(
        "floor", help="the same stream through a plain UDP + SRTP fan-out (no SFU logic)",
        description="A sender process sends the publisher's packet stream (SRTP, fixed keys) "
                    "to a forwarder process (uvloop, one socket in, one socket per receiver "
                    "out, unprotect once, SSRC rewrite and protect per receiver) that fans "
                    "it out to N receivers in this process. Same report fields as forward.")
    _common(floor, 10.0)
    _subscribers(floor, 10)
    floor.add_argument("--streams", type=_positive_int, default=1, metavar="K",
                       help="copies of the publisher's stream the sender sends (default 1), "
                            "to reach higher packet rates")
    return p


def options(args: argparse.Namespace) -> ForwardOptions:
    """The options of a scenario run (forward, livestream, audio, meeting) from argv."""
    from .forward import ForwardOptions

    opts = ForwardOptions(
        scenario=args.command, subscribers=getattr(args, "subscribers", 1),
        publishers=getattr(args, "publishers", 1),
        participants=getattr(args, "participants", 1), rooms=args.rooms,
        processes=args.processes, duration_s=args.duration, warmup_s=args.warmup,
        url=args.url, api_key=args.api_key, api_secret_file=args.api_secret_file,
        metrics_url=args.metrics_url, server_pid=args.server_pid,
        decode=getattr(args, "decode", 0), media_timeout_s=args.media_timeout,
        connect_timeout_s=args.connect_timeout, concurrency=args.concurrency,
        pin=args.pin, show_progress=not args.json, fps=args.fps,
        video_bitrate_bps=args.video_bitrate, seed=args.seed, loss_pct=args.loss,
        publisher_loss_pct=args.publisher_loss, daemon_log_level=args.daemon_log_level,
        simulcast=args.command == "livestream" or getattr(args, "simulcast", False),
        switches=getattr(args, "switches", 0))
    if args.command == "livestream":
        opts.decode = min(opts.decode, opts.subscribers)
    if args.room:
        opts.room = args.room
    return opts


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from .transport import BenchError

    try:
        if args.command == "floor":
            from .floor import FloorOptions, run_floor

            report, rc = run_floor(FloorOptions(
                subscribers=args.subscribers, duration_s=args.duration, warmup_s=args.warmup,
                pin=args.pin, show_progress=not args.json, fps=args.fps,
                video_bitrate_bps=args.video_bitrate, streams=args.streams))
        elif getattr(args, "sweep", False):
            from .sweep import run_sweep

            report, rc = run_sweep(options(args), maximum=args.sweep_max, png=args.png,
                                   capacity_json=args.capacity_json)
        else:
            from .forward import run_forward

            report, rc = run_forward(options(args))
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
    rooms = f" in {report['rooms']} rooms" if report.get("rooms", 1) != 1 else ""
    lines = [
        f"{report['mode']}: {report.get('publishers', 1)} publishers, "
        f"{report['subscribers']} subscribers{rooms}, {report['duration_s']} s",
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
    if report.get("join_to_first_media_ms"):
        lines.append(f"  join → 1st media {report['join_to_first_media_ms']} ms")
    if report.get("warnings"):
        lines.append(f"  warnings         {report['warnings']}")
    if report.get("errors"):
        lines.append(f"  errors           {report['errors']}")
    lines.append(json.dumps(report, indent=2))
    return "\n".join(lines)
