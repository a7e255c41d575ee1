"""Access tokens: LiveKit-style JWTs carrying a ``video`` grant.

A token is signed either with HS256 by an API key (the key is named by the ``iss`` claim and its
secret is shared with the server) or with RS256 / ES256 by a key named by the header ``kid``
(the server holds only the PEM public key).

Verification is pure: the caller passes ``now`` (unix seconds); nothing here reads the clock,
logs, or touches the network. The key is chosen from the server's own table *before* the
signature is checked, and PyJWT is only ever allowed that one key's algorithm, so a token can
never pick its own algorithm (no ``alg: none``, no HS256 signed with an RSA public key).

Every rejection is an :class:`~signaling.errors.AuthError` with a distinct wire code. Error
messages may name a claim, ``iss``, ``kid`` or ``alg`` value but never contain the token.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from signaling.errors import (
    TOKEN_ALG_NOT_ALLOWED,
    TOKEN_BAD_SIGNATURE,
    TOKEN_EXPIRED,
    TOKEN_MALFORMED,
    TOKEN_MISSING,
    TOKEN_MISSING_ROOM_JOIN,
    TOKEN_NOT_YET_VALID,
    TOKEN_UNKNOWN_KEY,
    TOKEN_WRONG_ROOM,
    AuthError,
)

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "MAX_TOKEN_LENGTH",
    "MIN_HMAC_SECRET_BYTES",
    "SOURCES",
    "Claims",
    "TokenVerifier",
    "VideoGrant",
    "check_room_join",
    "mint_token",
    "parse_ttl",
]

SOURCES: Final = ("camera", "microphone", "screen_share", "screen_share_audio")

HMAC_ALGORITHM: Final = "HS256"
ASYMMETRIC_ALGORITHMS: Final = ("RS256", "ES256")
_ALLOWED_ALGORITHMS: Final = frozenset((HMAC_ALGORITHM, *ASYMMETRIC_ALGORITHMS))

# RFC 7518 section 3.2: an HS256 key must be at least as long as the hash output.
MIN_HMAC_SECRET_BYTES: Final = 32
MIN_RSA_KEY_BITS: Final = 2048
# Longer tokens are refused before any base64 or JSON work is done on them.
MAX_TOKEN_LENGTH: Final = 16 * 1024

# PyJWT checks only the signature (and its own header rules); every claim is checked here, so
# that the clock is the injected ``now`` and every failure maps to one of our codes.
_DECODE_OPTIONS: Final[Any] = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
    "enforce_minimum_key_length": True,
}
_UNVERIFIED_OPTIONS: Final[Any] = {"verify_signature": False}

_PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def _show(value: object) -> str:
    """repr() of an untrusted value, bounded so an error message stays short."""
    text = repr(value)
    return text if len(text) <= 64 else text[:61] + "..."


def _malformed(message: str) -> AuthError:
    return AuthError(TOKEN_MALFORMED, message)


# --- the video grant ---------------------------------------------------------------------------

# (attribute, camelCase claim name) for every boolean field of the grant.
_BOOL_FIELDS: Final = (
    ("room_join", "roomJoin"),
    ("can_publish", "canPublish"),
    ("can_subscribe", "canSubscribe"),
    ("can_publish_data", "canPublishData"),
    ("can_update_own_metadata", "canUpdateOwnMetadata"),
    ("room_admin", "roomAdmin"),
    ("room_create", "roomCreate"),
    ("room_list", "roomList"),
    ("room_record", "roomRecord"),
    ("hidden", "hidden"),
)
# Written by to_claim() even when they hold their default, so that a reader which defaults
# them differently still sees exactly the permissions that were granted.
_ALWAYS_WRITTEN: Final = frozenset(("canPublish", "canSubscribe", "canPublishData"))


@dataclass(frozen=True, slots=True, kw_only=True)
class VideoGrant:
    """What a token allows; the JWT's ``video`` claim (camelCase on the wire)."""

    room_join: bool = False
    room: str = ""
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    # Empty means every source may be published.
    can_publish_sources: tuple[str, ...] = ()
    can_update_own_metadata: bool = False
    room_admin: bool = False
    room_create: bool = False
    room_list: bool = False
    room_record: bool = False
    hidden: bool = False

    def __post_init__(self) -> None:
        sources = tuple(self.can_publish_sources)
        for source in sources:
            if source not in SOURCES:
                raise ValueError(
                    f"unknown publish source {source!r}; expected one of {', '.join(SOURCES)}"
                )
        object.__setattr__(self, "can_publish_sources", tuple(dict.fromkeys(sources)))

    def can_publish_source(self, source: str) -> bool:
        """True if a track from ``source`` may be published under this grant."""
        if not self.can_publish:
            return False
        return not self.can_publish_sources or source in self.can_publish_sources

    @classmethod
    def from_claim(cls, obj: object) -> VideoGrant:
        """Parse the ``video`` claim. Unknown keys are ignored; wrong types are TOKEN_MALFORMED."""
        if not isinstance(obj, Mapping):
            raise _malformed(f"claim 'video' must be an object, got {type(obj).__name__}")
        values: dict[str, Any] = {}
        for attribute, name in _BOOL_FIELDS:
            if name in obj:
                value = obj[name]
                if not isinstance(value, bool):
                    raise _malformed(
                        f"claim 'video.{name}' must be a boolean, got {type(value).__name__}"
                    )
                values[attribute] = value
        if "room" in obj:
            room = obj["room"]
            if not isinstance(room, str):
                raise _malformed(f"claim 'video.room' must be a string, got {type(room).__name__}")
            values["room"] = room
        if "canPublishSources" in obj:
            sources = obj["canPublishSources"]
            if not isinstance(sources, list):
                raise _malformed(
                    f"claim 'video.canPublishSources' must be a list, got {type(sources).__name__}"
                )
            for index, source in enumerate(sources):
                if not isinstance(source, str):
                    raise _malformed(
                        f"claim 'video.canPublishSources[{index}]' must be a string, "
                        f"got {type(source).__name__}"
                    )
                if source not in SOURCES:
                    raise _malformed(
                        f"claim 'video.canPublishSources[{index}]' is {_show(source)}; "
                        f"expected one of {', '.join(SOURCES)}"
                    )
            values["can_publish_sources"] = tuple(sources)
        return cls(**values)

    def to_claim(self) -> dict[str, Any]:
        """The camelCase ``video`` claim; :meth:`from_claim` of it gives back an equal grant.

        ``roomJoin`` and ``room`` are written when set, the three publish/subscribe permissions
        always, and every other field only when it differs from its default.
        """
        claim: dict[str, Any] = {}
        if self.room_join:
            claim["roomJoin"] = True
        if self.room:
            claim["room"] = self.room
        for attribute, name in _BOOL_FIELDS:
            if name == "roomJoin":
                continue
            value = getattr(self, attribute)
            if name in _ALWAYS_WRITTEN or value != _GRANT_DEFAULTS[attribute]:
                claim[name] = value
        if self.can_publish_sources:
            claim["canPublishSources"] = list(self.can_publish_sources)
        return claim


_GRANT_DEFAULTS: Final[Mapping[str, Any]] = {
    attribute: getattr(VideoGrant(), attribute) for attribute, _ in _BOOL_FIELDS
}


# --- claims and verification -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Claims:
    """The verified content of a token."""

    identity: str  # `sub`; "" only when the grant has no roomJoin
    name: str
    metadata: str
    issuer: str  # `iss`: for HS256 tokens, the API key that signed it; "" when absent
    key_id: str  # header `kid` that verified an RS256/ES256 token; "" for HS256
    expires_at: float  # `exp`, unix seconds
    not_before: float | None  # `nbf`, unix seconds
    grant: VideoGrant


def _numeric_date(payload: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim as float; None when absent; TOKEN_MALFORMED when not a finite number."""
    if name not in payload:
        return None
    value = payload[name]
    # bool is an int subclass, and Python's json accepts NaN and Infinity: refuse all three.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _malformed(f"claim {name!r} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise _malformed(f"claim {name!r} is out of range") from None
    if not math.isfinite(number):
        raise _malformed(f"claim {name!r} must be a finite number")
    return number


# Longest values the signaling schemas let the server relay (ParticipantInfo).
_CLAIM_MAX_CHARS: Final = {"sub": 256, "name": 256, "metadata": 65536, "iss": 256}


def _optional_str(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name, "")
    if not isinstance(value, str):
        raise _malformed(f"claim {name!r} must be a string, got {type(value).__name__}")
    limit = _CLAIM_MAX_CHARS.get(name)
    if limit is not None and len(value) > limit:
        raise _malformed(f"claim {name!r} is longer than {limit} characters")
    return value


def _load_public_key(kid: str, alg: str, pem: bytes | str) -> _PublicKey:
    """Load and check one configured verification key; ValueError names the kid."""
    if alg not in ASYMMETRIC_ALGORITHMS:
        raise ValueError(
            f"public key {kid!r}: algorithm {alg!r} is not one of {', '.join(ASYMMETRIC_ALGORITHMS)}"
        )
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = load_pem_public_key(data)
    except ValueError as exc:
        raise ValueError(f"public key {kid!r}: not a PEM public key ({exc})") from None
    if alg == "RS256":
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError(f"public key {kid!r}: RS256 needs an RSA key")
        if key.key_size < MIN_RSA_KEY_BITS:
            raise ValueError(
                f"public key {kid!r}: RSA key is {key.key_size} bits, "
                f"at least {MIN_RSA_KEY_BITS} required"
            )
        return key
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"public key {kid!r}: ES256 needs an EC P-256 key")
    return key


def _check_hmac_secret(api_key: str, secret: str) -> bytes:
    """The secret as bytes; ValueError when it is too short or looks like an asymmetric key."""
    data = secret.encode()
    if len(data) < MIN_HMAC_SECRET_BYTES:
        raise ValueError(
            f"secret for api key {api_key!r} is {len(data)} bytes, "
            f"at least {MIN_HMAC_SECRET_BYTES} required"
        )
    try:
        jwt.get_algorithm_by_name(HMAC_ALGORITHM).prepare_key(data)
    except jwt.InvalidKeyError:
        raise ValueError(
            f"secret for api key {api_key!r} looks like a PEM/SSH/DER key, not an HMAC secret"
        ) from None
    return data


class TokenVerifier:
    """Checks tokens against the server's configured keys.

    ``hmac_secrets`` maps API key -> secret (HS256; the token names its key in ``iss``).
    ``public_keys`` maps kid -> (``"RS256"`` or ``"ES256"``, PEM public key); the token names
    its key in the header ``kid``. ``leeway_s`` is the clock skew allowed on ``exp`` and
    ``nbf``. Bad configuration raises ValueError here, not on the first token.
    """

    __slots__ = ("_hmac_secrets", "_public_keys", "_leeway_s")

    def __init__(
        self,
        hmac_secrets: Mapping[str, str],
        public_keys: Mapping[str, tuple[str, bytes | str]] | None = None,
        *,
        leeway_s: float = 10.0,
    ) -> None:
        if not math.isfinite(leeway_s) or leeway_s < 0:
            raise ValueError(f"leeway_s must be a finite number >= 0, got {leeway_s!r}")
        self._leeway_s = float(leeway_s)
        self._hmac_secrets: dict[str, bytes] = {}
        for api_key, secret in hmac_secrets.items():
            if not api_key:
                raise ValueError("api key must not be empty")
            self._hmac_secrets[api_key] = _check_hmac_secret(api_key, secret)
        self._public_keys: dict[str, tuple[str, _PublicKey]] = {}
        for kid, (alg, pem) in (public_keys or {}).items():
            if not kid:
                raise ValueError("public key id (kid) must not be empty")
            self._public_keys[kid] = (alg, _load_public_key(kid, alg, pem))

    def verify(self, token: str, now: float) -> Claims:
        """Verify ``token`` at unix time ``now``; AuthError with a distinct code on rejection."""
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, got {now!r}")
        if not isinstance(token, str):
            raise _malformed(f"token must be a string, got {type(token).__name__}")
        if not token:
            raise AuthError(TOKEN_MISSING, "no token given")
        if len(token) > MAX_TOKEN_LENGTH:
            raise _malformed(f"token is longer than {MAX_TOKEN_LENGTH} characters")

        key_id, issuer, alg, key = self._select_key(token)
        try:
            payload = jwt.decode(token, key, algorithms=[alg], options=_DECODE_OPTIONS)
        except jwt.InvalidSignatureError:
            raise AuthError(TOKEN_BAD_SIGNATURE, "token signature does not verify") from None
        except jwt.InvalidAlgorithmError:  # unreachable: _select_key already matched alg
            raise AuthError(TOKEN_ALG_NOT_ALLOWED, f"token algorithm {alg!r} not allowed") from None
        except jwt.InvalidTokenError as exc:
            raise _malformed(f"token does not decode: {exc}") from None

        claims = self._claims(payload, issuer=issuer, key_id=key_id)
        if claims.expires_at < now - self._leeway_s:
            raise AuthError(TOKEN_EXPIRED, "token has expired")
        if claims.not_before is not None and claims.not_before > now + self._leeway_s:
            raise AuthError(TOKEN_NOT_YET_VALID, "token is not valid yet")
        return claims

    def _select_key(self, token: str) -> tuple[str, str, str, _PublicKey | bytes]:
        """(kid, iss, alg, key) from the server's table, chosen by the unverified token.

        Only the key's configured algorithm is returned; a token asking for anything else is
        refused here, before any signature work.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise _malformed(f"token header does not decode: {exc}") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise _malformed("token header 'alg' must be a string")
        if alg not in _ALLOWED_ALGORITHMS:
            raise AuthError(TOKEN_ALG_NOT_ALLOWED, f"token algorithm {_show(alg)} is not allowed")

        kid = header.get("kid")  # PyJWT has already refused a non-string kid
        if kid is not None and kid in self._public_keys:
            key_alg, public_key = self._public_keys[kid]
            if alg != key_alg:
                raise AuthError(
                    TOKEN_ALG_NOT_ALLOWED,
                    f"token algorithm {alg!r} does not match key {_show(kid)} ({key_alg})",
                )
            return kid, "", alg, public_key

        try:
            unverified = jwt.decode(token, options=_UNVERIFIED_OPTIONS)
        except jwt.InvalidTokenError as exc:
            raise _malformed(f"token payload does not decode: {exc}") from None
        issuer = unverified.get("iss")
        if issuer is not None and not isinstance(issuer, str):
            raise _malformed(f"claim 'iss' must be a string, got {type(issuer).__name__}")
        if issuer and issuer in self._hmac_secrets:
            if alg != HMAC_ALGORITHM:
                raise AuthError(
                    TOKEN_ALG_NOT_ALLOWED,
                    f"token algorithm {alg!r} does not match api key {_show(issuer)} "
                    f"({HMAC_ALGORITHM})",
                )
            return "", issuer, alg, self._hmac_secrets[issuer]

        if alg == HMAC_ALGORITHM:
            if not issuer:
                raise AuthError(TOKEN_UNKNOWN_KEY, "HS256 token has no 'iss' naming its api key")
            raise AuthError(TOKEN_UNKNOWN_KEY, f"unknown api key {_show(issuer)}")
        if kid is None:
            raise AuthError(TOKEN_UNKNOWN_KEY, f"{alg} token has no 'kid' header naming its key")
        raise AuthError(TOKEN_UNKNOWN_KEY, f"unknown key id {_show(kid)}")

    @staticmethod
    def _claims(payload: Mapping[str, Any], *, issuer: str, key_id: str) -> Claims:
        expires_at = _numeric_date(payload, "exp")
        if expires_at is None:
            raise _malformed("token has no 'exp' claim")
        not_before = _numeric_date(payload, "nbf")
        _numeric_date(payload, "iat")  # unused, but a token with a bad one is not well formed
        identity = _optional_str(payload, "sub")
        name = _optional_str(payload, "name")
        metadata = _optional_str(payload, "metadata")
        if not issuer:  # asymmetric path: report the (signed) iss claim if there is one
            issuer = _optional_str(payload, "iss")
        grant = VideoGrant.from_claim(payload["video"]) if "video" in payload else VideoGrant()
        if grant.room_join and not identity:
            raise _malformed("token grants roomJoin but has no 'sub' identity")
        return Claims(
            identity=identity,
            name=name,
            metadata=metadata,
            issuer=issuer,
            key_id=key_id,
            expires_at=expires_at,
            not_before=not_before,
            grant=grant,
        )


def check_room_join(claims: Claims, requested_room: str | None) -> None:
    """Refuse a join the token does not allow.

    TOKEN_MISSING_ROOM_JOIN without ``roomJoin``; TOKEN_WRONG_ROOM when the grant names no room
    or a non-empty ``requested_room`` differs from it.
    """
    grant = claims.grant
    if not grant.room_join:
        raise AuthError(TOKEN_MISSING_ROOM_JOIN, "token does not grant roomJoin")
    if not grant.room:
        raise AuthError(TOKEN_WRONG_ROOM, "token grants roomJoin but names no room")
    if requested_room and requested_room != grant.room:
        raise AuthError(
            TOKEN_WRONG_ROOM,
            f"token is for room {_show(grant.room)}, not {_show(requested_room)}",
        )


# --- minting ------------------------------------------------------------------------------------


def mint_token(
    api_key: str,
    api_secret: str,
    *,
    identity: str,
    now: float,
    ttl_s: float,
    grant: VideoGrant,
    name: str = "",
    metadata: str = "",
    jti: str | None = None,
) -> str:
    """An HS256 token for ``identity`` that :meth:`TokenVerifier.verify` accepts.

    ``iat`` and ``nbf`` are ``floor(now)``, ``exp`` is ``floor(now + ttl_s)`` (integer
    NumericDates, as other JWT libraries expect). ``jti`` is random unless given.
    """
    if not api_key:
        raise ValueError("api key must not be empty")
    secret = _check_hmac_secret(api_key, api_secret)
    if not math.isfinite(now):
        raise ValueError(f"now must be finite, got {now!r}")
    if not math.isfinite(ttl_s) or ttl_s <= 0:
        raise ValueError(f"ttl_s must be a finite number > 0, got {ttl_s!r}")
    if grant.room_join and not identity:
        raise ValueError("a token granting roomJoin needs an identity")
    issued_at = math.floor(now)
    payload: dict[str, Any] = {
        "iss": api_key,
        "sub": identity,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": math.floor(now + ttl_s),
        "jti": jti if jti is not None else secrets.token_urlsafe(16),
        "video": grant.to_claim(),
    }
    if name:
        payload["name"] = name
    if metadata:
        payload["metadata"] = metadata
    return jwt.encode(payload, secret, algorithm=HMAC_ALGORITHM)


_TTL_RE: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd]?)")
_TTL_UNIT_S: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_ttl(text: str) -> float:
    """``"6h"``, ``"30m"``, ``"90s"``, ``"2d"`` or plain seconds ``"3600"`` -> seconds (> 0)."""
    match = _TTL_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"invalid ttl {text!r}: expected a number of seconds, optionally followed by "
            "s, m, h or d (e.g. '90s', '30m', '6h', '2d')"
        )
    seconds = float(match.group(1)) * _TTL_UNIT_S[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"invalid ttl {text!r}: must be greater than zero")
    return seconds
