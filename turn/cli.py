"""``sfu turn``: run the TURN relay on its own, under uvloop.

argv (and an optional ``--config FILE`` whose ``[turn]`` table has keys named like the flags)
→ :class:`~turn.config.TurnConfig` → :class:`~turn.shell.TurnService`. Flags override the file;
a repeatable flag replaces the file's list. Exit codes: 0 after SIGTERM/SIGINT, 2 for a
configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from turn.config import TurnConfig, load_file, load_table
from turn.errors import TurnConfigError

__all__ = ["build_parser", "config_from_args", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sfu turn",
        description="TURN relay (RFC 8656) over UDP, TCP and TLS with long-term and TURN REST "
                    "credentials. Peers on loopback, private, link-local, CGNAT, multicast and "
                    "reserved addresses are refused unless --allow-peer lets them in.")
    a = p.add_argument
    a("--config", metavar="FILE", help="TOML file; its [turn] table uses the flag names "
      "(listen, users_file, secret_file, realm, allow_peers, deny_peers, relay_ips, ...)")
    a("--listen", metavar="IP:PORT", action="append",
      help="UDP+TCP listener (repeatable; default 127.0.0.1:3478)")
    a("--user", metavar="NAME:PASS", action="append", default=[],
      help="static user (repeatable; visible in ps: prefer --users-file)")
    a("--users-file", metavar="FILE", help="static users, one name:password per line")
    a("--secret-file", metavar="FILE", help="TURN REST secret(s), one per line")
    a("--realm", help="realm (default sfu)")
    a("--allow-peer", metavar="CIDR", action="append", help="allow relaying to CIDR")
    a("--deny-peer", metavar="CIDR", action="append", help="deny relaying to CIDR")
    a("--relay-ip", metavar="IP", action="append",
      help="relay socket IP, one per family (default: the listen IPs)")
    a("--external-ip", metavar="IP", help="public IPv4 announced for the IPv4 relay (1:1 NAT)")
    a("--relay-ports", metavar="MIN-MAX", help="relay port range (default 49152-65535)")
    a("--user-quota", type=int, metavar="N", help="allocations per user (default 12)")
    a("--total-quota", type=int, metavar="N", help="allocations in all (default 1000)")
    a("--bandwidth", type=int, metavar="BYTES_PER_S",
      help="per-allocation relay cap in bytes/s (default 0 = none)")
    a("--max-lifetime", type=int, metavar="S", help="longest allocation lifetime (default 3600)")
    a("--rfc5766-channels", action="store_true", default=None,
      help="also accept channel numbers 0x5000-0x7FFF (RFC 5766 clients such as coturn's)")
    a("--tls-cert", metavar="FILE")
    a("--tls-key", metavar="FILE")
    a("--tls-listen", metavar="IP:PORT", help="TLS listener (needs --tls-cert and --tls-key)")
    a("--software", help="SOFTWARE attribute in responses (default none)")
    a("--log-format", choices=("console", "json"), default="console")
    a("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    return p


_FLAG_KEYS = {
    "listen": "listen", "users_file": "users_file", "secret_file": "secret_file",
    "realm": "realm", "allow_peer": "allow_peers", "deny_peer": "deny_peers",
    "relay_ip": "relay_ips", "external_ip": "external_ip", "user_quota": "user_quota",
    "total_quota": "total_quota", "bandwidth": "bandwidth_bytes_per_s",
    "max_lifetime": "max_lifetime_s", "rfc5766_channels": "rfc5766_channels",
    "tls_cert": "tls_cert", "tls_key": "tls_key", "tls_listen": "tls_listen",
    "software": "software",
}


def config_from_args(args: argparse.Namespace) -> tuple[TurnConfig, dict[str, str]]:
    """The file's [turn] table with the flags laid over it, and the --user users."""
    base = load_file(args.config) if args.config else TurnConfig()
    table: dict[str, Any] = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    for flag, key in _FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            table[key] = value
    if args.relay_ports:
        lo, sep, hi = args.relay_ports.partition("-")
        try:
            table["relay_port_min"], table["relay_port_max"] = int(lo), int(hi)
        except ValueError:
            raise TurnConfigError("--relay-ports", "expected MIN-MAX") from None
        if not sep:
            raise TurnConfigError("--relay-ports", "expected MIN-MAX")
    users: dict[str, str] = {}
    for item in args.user:
        name, sep, password = item.partition(":")
        if not sep or not name or not password:
            raise TurnConfigError("--user", f"expected NAME:PASS, got {item!r}")
        users[name] = password
    return load_table(table), users


def _configure_logging(fmt: str, level: str) -> None:
    import structlog

    lvl = getattr(logging, level.upper())
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


async def _serve(cfg: TurnConfig, users: dict[str, str]) -> int:
    from turn.shell import TurnService, logger

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = TurnService(cfg, users=users, mint_secret=False)
    await service.start()
    try:
        await stop.wait()
    finally:
        stats = service.stats
        await service.close()
        logger.info("turn_stopped", stats=json.dumps(stats, sort_keys=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg, users = config_from_args(args)
        if not (users or cfg.users_file or cfg.secret_file):
            raise TurnConfigError("turn", "no credentials: give --user, --users-file or "
                                          "--secret-file")
    except TurnConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    _configure_logging(args.log_format, args.log_level)
    import uvloop

    try:
        return uvloop.run(_serve(cfg, users))
    except TurnConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
