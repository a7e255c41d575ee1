"""turn.auth: coturn-compatible TURN REST credentials, long-term keys, nonces, credential files."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from turn.auth import (
    Credentials,
    Nonces,
    load_secrets_file,
    load_users_file,
    long_term_key,
    mint_rest_credentials,
    parse_rest_username,
    rest_password,
)
from turn.errors import TurnConfigError


def test_mint_rest_credentials_matches_coturns_formula() -> None:
    username, password = mint_rest_credentials("north", "alice", now=1_700_000_000.5, ttl_s=3600)
    assert username == "1700003600:alice"
    expected = base64.b64encode(hmac.new(b"north", b"1700003600:alice", hashlib.sha1).digest())
    assert password == expected.decode()
    # The value coturn's own docs compute for secret "north", username "1433895918:user".
    assert rest_password("north", "1433895918:user") == base64.b64encode(
        hmac.new(b"north", b"1433895918:user", hashlib.sha1).digest()).decode()
    assert mint_rest_credentials("s", "", 10, 5)[0] == "15"
    with pytest.raises(ValueError):
        mint_rest_credentials("s", "x", 10, 0)


@pytest.mark.parametrize(("username", "parsed"), [
    ("1700003600:alice", (1700003600, "alice")),
    ("alice:1700003600", (1700003600, "alice")),  # coturn accepts identity:expiry too
    ("1700003600", (1700003600, "")),
    ("1700003600:a:b", (1700003600, "a:b")),
    ("alice", None), ("", None), ("x:y", None), ("-5:a", None), ("1e9:a", None),
    ("١٢٣:a", None),  # non-ASCII digits
])
def test_parse_rest_username(username: str, parsed: tuple[int, str] | None) -> None:
    assert parse_rest_username(username) == parsed


def test_credentials_offer_static_and_rest_keys() -> None:
    creds = Credentials("r", {"alice": "pw", "1700003600:bob": "static"}, ["s1-0123456789abcdef"])
    [static] = creds.keys_for("alice")
    assert static.key == long_term_key("alice", "r", "pw") and static.expires_at is None
    both = creds.keys_for("1700003600:bob")
    assert [k.expires_at for k in both] == [None, 1700003600.0]
    assert both[1].identity == "bob"
    assert both[1].key == long_term_key("1700003600:bob", "r",
                                        rest_password("s1-0123456789abcdef", "1700003600:bob"))
    assert creds.keys_for("mallory") == []
    assert Credentials("r").empty
    with pytest.raises(ValueError):
        Credentials("")


def test_nonces_expire_bind_to_the_ip_and_resist_forgery() -> None:
    nonces = Nonces(b"k" * 32, lifetime_s=60)
    n = nonces.issue("192.0.2.1", now=1000.0)
    assert nonces.is_valid(n, "192.0.2.1", 1059.9)
    assert not nonces.is_valid(n, "192.0.2.1", 1060.0)
    assert not nonces.is_valid(n, "192.0.2.2", 1001.0)
    expiry, mac = n.split(".")
    assert not nonces.is_valid(f"{int(expiry, 16) + 10**6:x}.{mac}", "192.0.2.1", 1001.0)
    for junk in ("", ".", "zz.zz", "1" * 40 + ".x", n + "x"):
        assert not nonces.is_valid(junk, "192.0.2.1", 1001.0)
    assert not Nonces(b"j" * 32).is_valid(n, "192.0.2.1", 1001.0)
    with pytest.raises(ValueError):
        Nonces(b"short")


def test_users_and_secrets_files(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("# static users\nalice:pw\n\nbob:p:w:with:colons\n")
    assert load_users_file(users) == {"alice": "pw", "bob": "p:w:with:colons"}
    users.write_text("nopassword\n")
    with pytest.raises(TurnConfigError, match=r"users_file: .*:1: expected name:password"):
        load_users_file(users)
    secrets = tmp_path / "secret"
    secrets.write_text("new-secret-0123456789\nold-secret-0123456789\n")
    assert load_secrets_file(secrets) == ["new-secret-0123456789", "old-secret-0123456789"]
    secrets.write_text("short\n")
    with pytest.raises(TurnConfigError, match="at least 16 characters"):
        load_secrets_file(secrets)
    with pytest.raises(TurnConfigError, match="secret_file: cannot read"):
        load_secrets_file(tmp_path / "missing")
