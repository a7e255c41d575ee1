"""Long-term credentials (RFC 8489 §9.2): static users, TURN REST ephemeral users, nonces.

REST credentials are compatible with coturn's ``use-auth-secret``: the username is
``expiry:identity`` (``expiry`` in Unix seconds; coturn also accepts ``identity:expiry`` and a
bare ``expiry``) and the password is ``base64(HMAC-SHA1(secret, username))``. Several secrets may
be configured at once so a secret can be rotated without cutting anybody off.

Nonces are stateless: ``<expiry>`` and an HMAC over the expiry and the client's IP address under
a per-process key. A nonce that is ours but expired (or bound to another IP) is stale (438).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from turn.errors import TurnConfigError
from turn.stun import long_term_key

__all__ = [
    "Credentials",
    "Nonces",
    "UserKey",
    "load_secrets_file",
    "load_users_file",
    "long_term_key",
    "mint_rest_credentials",
    "rest_password",
]


def rest_password(secret: str | bytes, username: str) -> str:
    """base64(HMAC-SHA1(secret, username)), as coturn computes it."""
    key = secret.encode() if isinstance(secret, str) else secret
    return base64.b64encode(hmac.new(key, username.encode(), hashlib.sha1).digest()).decode()


def mint_rest_credentials(secret: str | bytes, identity: str, now: float,
                          ttl_s: float) -> tuple[str, str]:
    """Ephemeral TURN credentials valid until ``now + ttl_s`` (``now`` in Unix seconds)."""
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    expiry = int(now + ttl_s)
    username = f"{expiry}:{identity}" if identity else str(expiry)
    return username, rest_password(secret, username)


def parse_rest_username(username: str, separator: str = ":") -> tuple[int, str] | None:
    """``(expiry, identity)`` of a REST username, or None when it is not one."""
    left, sep, right = username.partition(separator)
    if not sep:
        return (int(left), "") if left.isascii() and left.isdigit() else None
    if left.isascii() and left.isdigit():
        return int(left), right
    if right.isascii() and right.isdigit():
        return int(right), left
    return None


@dataclass(frozen=True, slots=True)
class UserKey:
    """A key a request's MESSAGE-INTEGRITY may be checked against."""

    key: bytes
    # The name quotas count against: the identity of a REST user, the name of a static user.
    identity: str
    # Unix time after which no new allocation may be made with it (None: never expires).
    expires_at: float | None


class Credentials:
    """Username → candidate keys, for static users and REST secrets, in one realm."""

    def __init__(self, realm: str, users: Mapping[str, str] | None = None,
                 secrets: Iterable[str | bytes] = (), separator: str = ":") -> None:
        if not realm:
            raise ValueError("realm must not be empty")
        self.realm = realm
        self.separator = separator
        self._static = {name: long_term_key(name, realm, pw) for name, pw in (users or {}).items()}
        self._secrets = [s.encode() if isinstance(s, str) else bytes(s) for s in secrets]

    @property
    def empty(self) -> bool:
        return not self._static and not self._secrets

    def keys_for(self, username: str) -> list[UserKey]:
        """Every key that could be this user's: its static key, one per REST secret."""
        out: list[UserKey] = []
        static = self._static.get(username)
        if static is not None:
            out.append(UserKey(static, username, None))
        if self._secrets:
            parsed = parse_rest_username(username, self.separator)
            if parsed is not None:
                expiry, identity = parsed
                for secret in self._secrets:
                    pw = rest_password(secret, username)
                    out.append(UserKey(long_term_key(username, self.realm, pw),
                                       identity or username, float(expiry)))
        return out


class Nonces:
    """Stateless nonces bound to the client IP, valid for ``lifetime_s`` (monotonic time)."""

    def __init__(self, secret: bytes, lifetime_s: float = 600.0) -> None:
        if len(secret) < 16:
            raise ValueError("nonce secret must be at least 16 bytes")
        self._secret = secret
        self.lifetime_s = lifetime_s

    def _mac(self, expiry: str, ip: str) -> str:
        return hmac.new(self._secret, f"{expiry}|{ip}".encode(), hashlib.sha256).hexdigest()[:24]

    def issue(self, ip: str, now: float) -> str:
        expiry = f"{int((now + self.lifetime_s) * 1000):x}"
        return f"{expiry}.{self._mac(expiry, ip)}"

    def is_valid(self, nonce: str, ip: str, now: float) -> bool:
        expiry, dot, mac = nonce.partition(".")
        if not dot or not expiry or len(expiry) > 16:
            return False
        try:
            expires_ms = int(expiry, 16)
        except ValueError:
            return False
        if not hmac.compare_digest(mac, self._mac(expiry, ip)):
            return False
        return expires_ms > now * 1000


def load_users_file(path: str | Path) -> dict[str, str]:
    """``name:password`` per line; blank lines and ``#`` comments are skipped."""
    users: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TurnConfigError("users_file", f"cannot read {path}: {exc.strerror}") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, password = line.partition(":")
        if not sep or not name or not password:
            raise TurnConfigError("users_file", f"{path}:{lineno}: expected name:password")
        users[name] = password
    return users


def load_secrets_file(path: str | Path) -> list[str]:
    """One REST secret per line (several for rotation); blank lines and comments skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TurnConfigError("secret_file", f"cannot read {path}: {exc.strerror}") from None
    secrets = [s.strip() for s in text.splitlines() if s.strip() and not s.startswith("#")]
    if not secrets:
        raise TurnConfigError("secret_file", f"{path} holds no secret")
    for s in secrets:
        if len(s) < 16:
            raise TurnConfigError("secret_file", "a REST secret must be at least 16 characters")
    return secrets
