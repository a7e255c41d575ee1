"""Daemon configuration: TOML into frozen dataclasses, every key validated by dotted path.

Defaults live only in the dataclasses below. ``config.example.toml`` documents every key;
a test proves it loads and mentions each one. Bounds are declared next to each field with
``_f(default, lo, hi)`` or ``choices=...``; :func:`load` rejects unknown keys, wrong types and
out-of-range values with a :class:`ConfigError` whose message starts with the dotted key.
Secrets never live in the file itself: they come from an environment variable or a file.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sfu.rooms import EVENT_TYPES
from sfu.webhooks import SecretError, parse_secret
from turn.config import TurnConfig
from turn.errors import TurnConfigError

__all__ = ["Config", "ConfigError", "load", "loads", "defaults", "DEV_API_KEY", "DEV_API_SECRET"]

# Embedded development credentials, used only when the daemon runs without a config file.
DEV_API_KEY = "devkey"
DEV_API_SECRET = "secret-dev-only-do-not-use-in-production"


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of bounds."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


def _f(default: Any, lo: float | None = None, hi: float | None = None, *,
       choices: tuple[str, ...] | None = None, kind: str | None = None) -> Any:
    meta: dict[str, Any] = {"lo": lo, "hi": hi, "choices": choices, "kind": kind}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)




@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    http_host: str = _f("127.0.0.1", kind="host")
    http_port: int = _f(7880, 1, 65535)
    drain_timeout_s: float = _f(30.0, 0, 3600)


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    enabled: bool = _f(True)
    host: str = _f("127.0.0.1", kind="host")
    port: int = _f(6789, 1, 65535)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingConfig:
    format: str = _f("console", choices=("console", "json"))
    level: str = _f("info", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True, slots=True, kw_only=True)
class HmacKey:
    key: str = _f("")
    secret_env: str = _f("")
    secret_file: str = _f("")


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicKey:
    kid: str = _f("")
    alg: str = _f("RS256", choices=("RS256", "ES256"))
    pem_file: str = _f("")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthConfig:
    leeway_s: float = _f(10.0, 0, 300)
    hmac_keys: list[HmacKey] = _f([])
    public_keys: list[PublicKey] = _f([])


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcConfig:
    bind_host: str = _f("127.0.0.1", kind="host")
    udp_port: int = _f(7882, 1024, 65535)
    node_ip: str = _f("", kind="ip_or_empty")
    socket_rcvbuf_bytes: int = _f(4 * 1024 * 1024, 65536, 256 * 1024 * 1024)
    socket_sndbuf_bytes: int = _f(4 * 1024 * 1024, 65536, 256 * 1024 * 1024)
    data_max_message_bytes: int = _f(65536, 1024, 262144)
    video_codecs: list[str] = _f(["VP8", "H264"], choices=("VP8", "H264"))
    audio_codecs: list[str] = _f(["opus"], choices=("opus",))
    allow_dtx: bool = _f(True)
    allow_stereo: bool = _f(False)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomConfig:
    auto_create: bool = _f(True)
    max_participants: int = _f(0, 0, 100000)
    empty_timeout_s: float = _f(300.0, 1, 86400)
    speaker_update_interval_ms: int = _f(500, 50, 10000)
    connection_quality_interval_s: float = _f(2.0, 0.5, 60)


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalingConfig:
    max_message_bytes: int = _f(65536, 1024, 16 * 1024 * 1024)
    rate_limit_per_s: float = _f(50.0, 1, 100000)
    rate_limit_burst: int = _f(100, 1, 1000000)
    resume_window_s: float = _f(30.0, 0, 3600)
    token_refresh_before_s: float = _f(300.0, 10, 86400)
    token_refresh_ttl_s: float = _f(21600.0, 60, 7 * 86400)
    ping_interval_s: float = _f(10.0, 1, 300)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    rate_limit_per_s: float = _f(20.0, 0.1, 100000)
    rate_limit_burst: int = _f(40, 1, 1000000)
    max_request_bytes: int = _f(4 * 1024 * 1024, 1024, 16 * 1024 * 1024)
    cors_origins: list[str] = _f([])
    join_base_url: str = _f("")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreConfig:
    path: str = _f("sfu-data/sfu.db")
    checkpoint_interval_s: float = _f(10.0, 1, 10)


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookEndpointConfig:
    url: str = _f("")
    name: str = _f("")
    secret_env: str = _f("")
    secret_file: str = _f("")
    events: list[str] = _f([], choices=EVENT_TYPES)

    @property
    def key(self) -> str:
        """The endpoint's name in the outbox (its rows survive a URL change)."""
        return self.name or self.url


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhooksConfig:
    endpoints: list[WebhookEndpointConfig] = _f([])
    timeout_s: float = _f(10.0, 0.5, 120)
    retry_initial_s: float = _f(1.0, 0.05, 3600)
    retry_max_s: float = _f(600.0, 0.05, 86400)
    max_age_s: float = _f(86400.0, 1, 7 * 86400)
    max_in_flight: int = _f(16, 1, 1024)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    rtc: RtcConfig = field(default_factory=RtcConfig)
    room: RoomConfig = field(default_factory=RoomConfig)
    signaling: SignalingConfig = field(default_factory=SignalingConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)
    # Set by the loader, never by the file: True when running on embedded development defaults.
    development: bool = field(default=False, metadata={"internal": True})

    def api_secrets(self, environ: typing.Mapping[str, str] | None = None) -> dict[str, str]:
        """API key → secret, resolved from each key's environment variable or file."""
        env = os.environ if environ is None else environ
        out: dict[str, str] = {}
        for i, k in enumerate(self.auth.hmac_keys):
            path = f"auth.hmac_keys[{i}]"
            if k.secret_env:
                value = env.get(k.secret_env, "")
                if not value:
                    raise ConfigError(f"{path}.secret_env",
                                      f"environment variable {k.secret_env} is not set")
            else:
                try:
                    value = Path(k.secret_file).read_text().strip()
                except OSError as exc:
                    raise ConfigError(f"{path}.secret_file", f"cannot read: {exc.strerror}") from None
            if len(value) < 32 and not self.development:
                raise ConfigError(path, "secret must be at least 32 characters")
            out[k.key] = value
        if self.development and not out:
            out[DEV_API_KEY] = DEV_API_SECRET
        return out

    def webhook_keys(self, environ: typing.Mapping[str, str] | None = None) -> dict[str, bytes]:
        """Endpoint key → HMAC key, from each ``whsec_`` secret's variable or file."""
        env = os.environ if environ is None else environ
        out: dict[str, bytes] = {}
        for i, e in enumerate(self.webhooks.endpoints):
            path = f"webhooks.endpoints[{i}]"
            if e.secret_env:
                value = env.get(e.secret_env, "")
                if not value:
                    raise ConfigError(f"{path}.secret_env",
                                      f"environment variable {e.secret_env} is not set")
                where = f"{path}.secret_env"
            else:
                try:
                    value = Path(e.secret_file).read_text().strip()
                except OSError as exc:
                    raise ConfigError(f"{path}.secret_file",
                                      f"cannot read: {exc.strerror}") from None
                where = f"{path}.secret_file"
            try:
                out[e.key] = parse_secret(value)
            except SecretError as exc:
                raise ConfigError(where, f"the secret {exc}") from None
        return out


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "a boolean", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _check_scalar(path: str, tp: Any, value: Any, meta: typing.Mapping[str, Any]) -> Any:
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, tp) and not (tp is not bool and isinstance(value, bool))
    if not ok:
        raise ConfigError(path, f"must be {_type_name(tp)}, got {type(value).__name__}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = lo if lo is not None else "-inf"
        hi_s = hi if hi is not None else "inf"
        fmt = (lambda x: f"{x:g}") if tp is float else str
        raise ConfigError(path, f"must be {fmt(lo_s)}..{fmt(hi_s)}")  # type: ignore[no-untyped-call]
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(path, f"must be one of {', '.join(choices)}")
    kind = meta.get("kind")
    if kind == "host":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ConfigError(path, "must be an explicit IP address (e.g. 127.0.0.1 or ::)") from None
    elif kind == "ip_or_empty" and value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ConfigError(path, "must be an IP address or empty") from None
    return value


def _build(cls: Any, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(path, "must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(where, "unknown key")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        sub = f"{path}.{name}" if path else name
        tp = hints[name]
        meta = fields[name].metadata
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, sub)
        elif typing.get_origin(tp) is list:
            (item_tp,) = typing.get_args(tp)
            if not isinstance(value, list):
                raise ConfigError(sub, "must be an array")
            if dataclasses.is_dataclass(item_tp):
                kwargs[name] = [_build(item_tp, v, f"{sub}[{i}]") for i, v in enumerate(value)]
            else:
                kwargs[name] = [_check_scalar(f"{sub}[{i}]", item_tp, v, meta)
                                for i, v in enumerate(value)]
        elif isinstance(tp, types.UnionType):
            raise TypeError(f"unsupported config type at {sub}")  # pragma: no cover
        else:
            kwargs[name] = _check_scalar(sub, tp, value, meta)
    return cls(**kwargs)


def _validate(cfg: Config) -> None:
    """Cross-field checks that one key's bounds cannot express."""
    seen: set[str] = set()
    for i, k in enumerate(cfg.auth.hmac_keys):
        path = f"auth.hmac_keys[{i}]"
        if not k.key:
            raise ConfigError(f"{path}.key", "must not be empty")
        if k.key in seen:
            raise ConfigError(f"{path}.key", f"duplicate key {k.key!r}")
        seen.add(k.key)
        if bool(k.secret_env) == bool(k.secret_file):
            raise ConfigError(path, "set exactly one of secret_env or secret_file")
    kids: set[str] = set()
    for i, pk in enumerate(cfg.auth.public_keys):
        path = f"auth.public_keys[{i}]"
        if not pk.kid:
            raise ConfigError(f"{path}.kid", "must not be empty")
        if pk.kid in kids:
            raise ConfigError(f"{path}.kid", f"duplicate kid {pk.kid!r}")
        kids.add(pk.kid)
        if not pk.pem_file:
            raise ConfigError(f"{path}.pem_file", "must not be empty")
    if not cfg.development and not cfg.auth.hmac_keys and not cfg.auth.public_keys:
        raise ConfigError("auth", "configure at least one of auth.hmac_keys or auth.public_keys")
    try:
        cfg.turn.validate("turn")
    except TurnConfigError as exc:
        raise ConfigError(exc.path, exc.message) from None
    for key in ("video_codecs", "audio_codecs"):
        values = getattr(cfg.rtc, key)
        if len(set(values)) != len(values):
            raise ConfigError(f"rtc.{key}", "lists a codec twice")
    if not cfg.rtc.video_codecs and not cfg.rtc.audio_codecs:
        raise ConfigError("rtc.video_codecs", "audio_codecs and video_codecs are both empty")
    names: set[str] = set()
    for i, e in enumerate(cfg.webhooks.endpoints):
        path = f"webhooks.endpoints[{i}]"
        if not _is_http_url(e.url):
            raise ConfigError(f"{path}.url", "must be an http(s) URL without fragment")
        if bool(e.secret_env) == bool(e.secret_file):
            raise ConfigError(path, "set exactly one of secret_env or secret_file")
        if e.key in names:
            raise ConfigError(f"{path}.name", f"two endpoints are named {e.key!r}")
        names.add(e.key)
    if cfg.webhooks.retry_max_s < cfg.webhooks.retry_initial_s:
        raise ConfigError("webhooks.retry_max_s", "must be >= webhooks.retry_initial_s")
    for i, origin in enumerate(cfg.api.cors_origins):
        if origin != "*" and not _is_origin(origin):
            raise ConfigError(f"api.cors_origins[{i}]",
                              "must be \"*\" or an origin like https://app.example.com "
                              "(scheme, host and optional port; no path)")
    if cfg.api.join_base_url and not _is_base_url(cfg.api.join_base_url):
        raise ConfigError("api.join_base_url",
                          "must be an http(s) URL without query or fragment, or empty")
    if cfg.metrics.enabled and (cfg.metrics.host, cfg.metrics.port) == (
            cfg.server.http_host, cfg.server.http_port):
        raise ConfigError("metrics.port", "must differ from server.http_port on the same host")


def _is_origin(text: str) -> bool:
    """``scheme://host[:port]`` exactly, as browsers send it in ``Origin``."""
    try:
        url = urllib.parse.urlsplit(text)
        url.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return (url.scheme in ("http", "https") and bool(url.hostname) and not url.path
            and not url.query and not url.fragment and not url.username
            and not url.password and text == text.strip())


def _is_http_url(text: str) -> bool:
    try:
        url = urllib.parse.urlsplit(text)
        url.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return (url.scheme in ("http", "https") and bool(url.hostname) and not url.fragment
            and text == text.strip())


def _is_base_url(text: str) -> bool:
    try:
        url = urllib.parse.urlsplit(text)
        url.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return (url.scheme in ("http", "https") and bool(url.hostname) and not url.query
            and not url.fragment and not url.username and not url.password
            and text == text.strip())


def loads(text: str) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"invalid TOML: {exc}") from None
    cfg: Config = _build(Config, data, "")
    _validate(cfg)
    return cfg


def load(path: str | os.PathLike[str]) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from None
    cfg = loads(text)
    cfg.api_secrets()  # secrets must resolve now, not at the first join
    cfg.webhook_keys()
    return cfg


def defaults() -> Config:
    """The embedded development configuration used when no file is given."""
    return Config(development=True)


def leaf_keys(cls: Any = Config, prefix: str = "") -> list[str]:
    """Every dotted key a config file may set (list-of-table items as ``name[].key``)."""
    out: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            out += leaf_keys(tp, path + ".")
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            out += leaf_keys(typing.get_args(tp)[0], path + "[].")
        else:
            out.append(path)
    return out
