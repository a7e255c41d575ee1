"""turn.config and turn.cli argument handling: a [turn] TOML table, flags laid over it, and
errors that name the dotted key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from turn.cli import build_parser, config_from_args, main
from turn.config import EXAMPLE, TurnConfig, load_file, load_table, parse_hostport
from turn.errors import TurnConfigError


def test_defaults_are_secure_and_valid() -> None:
    cfg = TurnConfig()
    cfg.validate()
    assert cfg.allow_peers == [] and cfg.user_quota == 12 and cfg.max_lifetime_s == 3600
    assert cfg.effective_relay_ips() == ["127.0.0.1"]
    assert not cfg.rfc5766_channels


def test_load_table_checks_keys_types_bounds_and_formats() -> None:
    cfg = load_table({"listen": ["127.0.0.1:3478", "[::1]:3478"], "allow_peers": ["10.0.0.0/8"],
                      "user_quota": 3, "nonce_lifetime_s": 60})
    assert cfg.listen_addrs() == [("127.0.0.1", 3478), ("::1", 3478)]
    assert cfg.effective_relay_ips() == ["127.0.0.1", "::1"]
    assert cfg.nonce_lifetime_s == 60.0
    cases: list[tuple[dict[str, Any], str]] = [
        ({"bogus": 1}, "turn.bogus: unknown key"),
        ({"user_quota": "3"}, "turn.user_quota: must be int, got str"),
        ({"user_quota": True}, "turn.user_quota: must be int, got bool"),
        ({"user_quota": 0}, "turn.user_quota: must be 1..100000"),
        ({"listen": "127.0.0.1:3478"}, "turn.listen: must be an array"),
        ({"listen": ["localhost:3478"]}, "turn.listen[0]: expected IP:PORT with an explicit IP"),
        ({"listen": ["0.0.0.0:3478"]}, "turn.listen: a relay IP must be a specific address"),
        ({"allow_peers": ["10.0.0.0/40"]}, "turn.allow_peers[0]: not an IP network"),
        ({"relay_ips": ["127.0.0.1", "127.0.0.2"]},
         "turn.relay_ips[1]: at most one relay IP per address family"),
        ({"tls_listen": "127.0.0.1:5349"}, "turn.tls_listen: needs tls_cert and tls_key"),
        ({"tls_cert": "c.pem"}, "turn.tls_cert: set both tls_cert and tls_key"),
        ({"relay_port_min": 60000, "relay_port_max": 50000},
         "turn.relay_port_min: must not exceed relay_port_max"),
        ({"external_ip": "nope"}, "turn.external_ip: must be an IP address or empty"),
    ]
    for table, message in cases:
        with pytest.raises(TurnConfigError) as exc:
            load_table(table)
        assert str(exc.value).startswith(message), (table, str(exc.value))


def test_wildcard_listen_needs_relay_ips() -> None:
    cfg = load_table({"listen": ["0.0.0.0:3478"], "relay_ips": ["192.0.2.10"]})
    assert cfg.effective_relay_ips() == ["192.0.2.10"]


def test_parse_hostport() -> None:
    assert parse_hostport("[2001:db8::1]:5349") == ("2001:db8::1", 5349)
    assert parse_hostport("127.0.0.1:0") == ("127.0.0.1", 0)
    for bad in ("127.0.0.1", "127.0.0.1:99999", ":3478", "host:1"):
        with pytest.raises(TurnConfigError):
            parse_hostport(bad)


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "sfu.toml"
    path.write_text('[server]\nhttp_port = 1\n\n[turn]\nrealm = "file"\nlisten = ["127.0.0.1:4000"]\n'
                    'allow_peers = ["192.0.2.0/24"]\nuser_quota = 5\n')
    assert load_file(path).realm == "file"
    args = build_parser().parse_args([
        "--config", str(path), "--realm", "flag", "--allow-peer", "127.0.0.1/32",
        "--allow-peer", "::1/128", "--user", "alice:pw", "--user", "bob:p:w",
        "--relay-ports", "50000-50100", "--rfc5766-channels"])
    cfg, users = config_from_args(args)
    assert cfg.realm == "flag"
    assert cfg.listen == ["127.0.0.1:4000"]  # from the file
    assert cfg.allow_peers == ["127.0.0.1/32", "::1/128"]  # a repeated flag replaces the list
    assert cfg.user_quota == 5
    assert (cfg.relay_port_min, cfg.relay_port_max) == (50000, 50100)
    assert cfg.rfc5766_channels
    assert users == {"alice": "pw", "bob": "p:w"}


@pytest.mark.parametrize(("argv", "message"), [
    ([], "config error: turn: no credentials"),
    (["--user", "alice"], "config error: --user: expected NAME:PASS"),
    (["--user", "a:b", "--listen", "nope"], "config error: turn.listen[0]: expected IP:PORT"),
    (["--user", "a:b", "--relay-ports", "5"], "config error: --relay-ports: expected MIN-MAX"),
    (["--user", "a:b", "--config", "/nonexistent.toml"], "config error: cannot read"),
])
def test_cli_configuration_errors_exit_2(argv: list[str], message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(message)


def test_cli_rejects_unknown_keys_in_the_turn_table(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.toml"
    path.write_text("[turn]\nuser = \"alice:pw\"\n")
    assert main(["--config", str(path)]) == 2
    assert "turn.user: unknown key" in capsys.readouterr().err


def test_example_section_loads_mentions_every_key_and_shows_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "example.toml"
    path.write_text(EXAMPLE)
    assert load_file(path) == TurnConfig()
    import dataclasses

    lines = EXAMPLE.splitlines()
    for f in dataclasses.fields(TurnConfig):
        [i] = [i for i, line in enumerate(lines) if line.startswith(f"{f.name} = ")]
        assert lines[i - 1].startswith("#"), f"{f.name} has no comment above it"
