"""TURN configuration: one frozen dataclass, read from a ``[turn]`` TOML table or built by the
daemon's own loader (the field metadata has the same ``lo``/``hi``/``choices``/``kind`` shape
as ``sfu.config``'s, so its loader checks the same bounds).

Secrets never live in the table: static users come from ``users_file`` (``name:password`` lines)
and REST secrets from ``secret_file`` (one per line; several allow rotation). ``sfu turn
--user NAME:PASS`` exists for tests and one-off runs only.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from turn.errors import TurnConfigError
from turn.policy import parse_network

__all__ = ["EXAMPLE", "TurnConfig", "load_file", "load_table", "parse_hostport"]

# The [turn] section of config.example.toml: every key, its default, unit, bounds, security note.
EXAMPLE = """\
[turn]
# Run the embedded TURN relay (RFC 8656: UDP, TCP, TLS) in the daemon. Default false.
# `sfu turn` runs it on its own and ignores this key.
enabled = false
# UDP and TCP listeners, "IP:PORT" ("[::1]:3478" for IPv6). Default ["127.0.0.1:3478"].
# Port 0 picks a free port (the same for UDP and TCP). Security: open UDP and TCP 3478.
listen = ["127.0.0.1:3478"]
# TLS listener "IP:PORT" (usually port 5349 or 443). Default "" (no TLS). Needs both
# tls_cert and tls_key.
tls_listen = ""
# Certificate chain for the TLS listener, a PEM file. Default "".
tls_cert = ""
# Its private key, a PEM file. Default "". Security: mode 0600.
tls_key = ""
# Realm of the long-term credentials. Default "sfu". Must not be empty.
realm = "sfu"
# Static users, one "name:password" line each. Default "" (none). Security: mode 0600; the
# daemon's participants get ephemeral REST credentials instead.
users_file = ""
# TURN REST secrets (coturn's use-auth-secret), one per line, at least 16 characters; list
# the new one first to rotate. Default "": the daemon makes a random one at start-up.
secret_file = ""
# IPs the relay sockets bind to, at most one IPv4 and one IPv6. Default [] (the listen IPs).
# Required when listening on 0.0.0.0 or ::.
relay_ips = []
# Public IPv4 announced instead of the IPv4 relay IP, behind 1:1 NAT. Default "".
external_ip = ""
# Lowest relay port. Default 49152. Bounds 1024..65535. Security: open the UDP range
# relay_port_min..relay_port_max in the firewall; each allocation holds one port.
relay_port_min = 49152
# Highest relay port. Default 65535. Bounds 1024..65535; not below relay_port_min.
relay_port_max = 65535
# Peers the relay may reach although the default policy refuses them (loopback, RFC 1918,
# link-local incl. 169.254.169.254, CGNAT, multicast, NAT64, 6to4, reserved), as CIDRs.
# Default []. Security: every entry opens that network to anyone holding credentials.
allow_peers = []
# Peers refused on top of the default policy, as CIDRs. Default []. The most specific of
# allow_peers and deny_peers wins; a tie denies.
deny_peers = []
# Allocations per user (per REST identity). Default 12. Bounds 1..100000. Over it: 486.
user_quota = 12
# Allocations in all. Default 1000. Bounds 1..1000000. Over it: 486.
total_quota = 1000
# Per-allocation cap on relayed bytes/s, both directions together (token bucket, one second
# of burst). Default 0 (no cap). Bounds 0..10000000000. Unit: bytes/second.
bandwidth_bytes_per_s = 0
# Longest allocation lifetime a client may ask for. Default 3600. Bounds 600..86400.
# Unit: seconds. (Default lifetime 600 s, permissions 300 s, channel bindings 600 s: RFC 8656.)
max_lifetime_s = 3600
# Lifetime of a nonce; a request with an older one gets 438 and retries. Default 600.
# Bounds 30..86400. Unit: seconds.
nonce_lifetime_s = 600.0
# Also accept RFC 5766 channel numbers 0x5000-0x7FFF (coturn's clients pick them) besides
# RFC 8656's 0x4000-0x4FFF. Default false.
rfc5766_channels = false
# Lifetime of the REST credentials minted for each participant. Calls outlive them: only a
# new allocation needs valid ones. Default 3600. Bounds 60..604800. Unit: seconds.
credential_ttl_s = 3600.0
# Host (name or IP) put in the turn: URLs sent to clients. Default "" (the first listen IP).
announce_host = ""
# SOFTWARE attribute in responses. Default "" (none: do not advertise a version).
software = ""
"""


def _f(default: Any, lo: float | None = None, hi: float | None = None, *,
       choices: tuple[str, ...] | None = None, kind: str | None = None) -> Any:
    meta: dict[str, Any] = {"lo": lo, "hi": hi, "choices": choices, "kind": kind}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnConfig:
    # Run the embedded relay in the daemon (ignored by ``sfu turn``, which always runs it).
    enabled: bool = _f(False)
    # UDP and TCP listeners, "IP:PORT" ("[::1]:3478" for IPv6; port 0 = any free port, the
    # same for UDP and TCP).
    listen: list[str] = _f(["127.0.0.1:3478"])
    # TLS listener "IP:PORT"; needs tls_cert and tls_key. "" = no TLS.
    tls_listen: str = _f("")
    tls_cert: str = _f("")
    tls_key: str = _f("")
    realm: str = _f("sfu")
    users_file: str = _f("")
    secret_file: str = _f("")
    # IPs the relay sockets bind to, at most one per family. [] = the listen IPs.
    relay_ips: list[str] = _f([])
    # Public IPv4 announced instead of the IPv4 relay IP (1:1 NAT). "" = announce relay_ips.
    external_ip: str = _f("", kind="ip_or_empty")
    relay_port_min: int = _f(49152, 1024, 65535)
    relay_port_max: int = _f(65535, 1024, 65535)
    allow_peers: list[str] = _f([])
    deny_peers: list[str] = _f([])
    user_quota: int = _f(12, 1, 100000)
    total_quota: int = _f(1000, 1, 1000000)
    # Per-allocation cap on relayed bytes/s, both directions together. 0 = unlimited.
    bandwidth_bytes_per_s: int = _f(0, 0, 10**10)
    max_lifetime_s: int = _f(3600, 600, 86400)
    nonce_lifetime_s: float = _f(600.0, 30, 86400)
    # Accept RFC 5766 channel numbers up to 0x7FFF (coturn's clients) as well as 0x4000-0x4FFF.
    rfc5766_channels: bool = _f(False)
    # Lifetime of the REST credentials the daemon mints per participant.
    credential_ttl_s: float = _f(3600.0, 60, 7 * 86400)
    # Host clients are told to use in turn: URLs. "" = the first listen IP.
    announce_host: str = _f("")
    software: str = _f("")

    def listen_addrs(self) -> list[tuple[str, int]]:
        return [parse_hostport(a, f"turn.listen[{i}]") for i, a in enumerate(self.listen)]

    def tls_addr(self) -> tuple[str, int] | None:
        return parse_hostport(self.tls_listen, "turn.tls_listen") if self.tls_listen else None

    def effective_relay_ips(self) -> list[str]:
        if self.relay_ips:
            return list(self.relay_ips)
        out: list[str] = []
        for ip, _ in self.listen_addrs():
            if ip not in out:
                out.append(ip)
        return out

    def validate(self, prefix: str = "turn") -> None:
        """Cross-field and format checks; raise TurnConfigError naming the dotted key."""
        if not self.listen:
            raise TurnConfigError(f"{prefix}.listen", "needs at least one IP:PORT")
        self.listen_addrs()
        if self.tls_listen:
            self.tls_addr()
            if not self.tls_cert or not self.tls_key:
                raise TurnConfigError(f"{prefix}.tls_listen", "needs tls_cert and tls_key")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise TurnConfigError(f"{prefix}.tls_cert", "set both tls_cert and tls_key")
        if not self.realm:
            raise TurnConfigError(f"{prefix}.realm", "must not be empty")
        if self.relay_port_min > self.relay_port_max:
            raise TurnConfigError(f"{prefix}.relay_port_min", "must not exceed relay_port_max")
        families: set[int] = set()
        for i, ip in enumerate(self.effective_relay_ips()):
            where = f"{prefix}.relay_ips[{i}]" if self.relay_ips else f"{prefix}.listen"
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                raise TurnConfigError(where, f"not an IP address: {ip!r}") from None
            if addr.is_unspecified:
                raise TurnConfigError(where, "a relay IP must be a specific address "
                                             "(set relay_ips when listening on 0.0.0.0 or ::)")
            if addr.version in families:
                raise TurnConfigError(where, "at most one relay IP per address family")
            families.add(addr.version)
        if self.external_ip and ipaddress.ip_address(self.external_ip).version != 4:
            raise TurnConfigError(f"{prefix}.external_ip", "must be an IPv4 address")
        for name in ("allow_peers", "deny_peers"):
            for i, cidr in enumerate(getattr(self, name)):
                try:
                    parse_network(cidr)
                except ValueError as exc:
                    raise TurnConfigError(f"{prefix}.{name}[{i}]", str(exc)) from None


def parse_hostport(text: str, where: str = "") -> tuple[str, int]:
    """"IP:PORT" or "[IPv6]:PORT" with an explicit IP address."""
    host, sep, port_s = text.rpartition(":")
    if not sep or not host:
        raise TurnConfigError(where, f"expected IP:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = str(ipaddress.ip_address(host))
        port = int(port_s)
    except ValueError:
        raise TurnConfigError(where, f"expected IP:PORT with an explicit IP, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise TurnConfigError(where, f"port {port} out of range 0..65535 (0: any free port)")
    return ip, port


def _check(path: str, tp: Any, value: Any, meta: typing.Mapping[str, Any]) -> Any:
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, tp) or (tp is not bool and isinstance(value, bool)):
        raise TurnConfigError(path, f"must be {tp.__name__}, got {type(value).__name__}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise TurnConfigError(path, f"must be {lo}..{hi}")
    kind = meta.get("kind")
    if kind == "ip_or_empty" and value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise TurnConfigError(path, "must be an IP address or empty") from None
    return value


def load_table(data: typing.Mapping[str, Any], prefix: str = "turn") -> TurnConfig:
    """Build and validate a TurnConfig from a ``[turn]`` table; unknown keys are errors."""
    hints = typing.get_type_hints(TurnConfig)
    fields = {f.name: f for f in dataclasses.fields(TurnConfig)}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        path = f"{prefix}.{name}"
        if name not in fields:
            raise TurnConfigError(path, "unknown key")
        tp = hints[name]
        meta = fields[name].metadata
        if typing.get_origin(tp) is list:
            if not isinstance(value, list):
                raise TurnConfigError(path, "must be an array")
            (item_tp,) = typing.get_args(tp)
            kwargs[name] = [_check(f"{path}[{i}]", item_tp, v, meta) for i, v in enumerate(value)]
        else:
            kwargs[name] = _check(path, tp, value, meta)
    cfg = TurnConfig(**kwargs)
    cfg.validate(prefix)
    return cfg


def load_file(path: str | Path) -> TurnConfig:
    """The ``[turn]`` table of a TOML file (other tables are the daemon's and are ignored)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TurnConfigError("", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TurnConfigError("", f"invalid TOML in {path}: {exc}") from None
    table = data.get("turn", {})
    if not isinstance(table, dict):
        raise TurnConfigError("turn", "must be a table")
    return load_table(table)
