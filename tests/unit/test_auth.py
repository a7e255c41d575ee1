"""signaling.auth: token minting, verification (one code per failure), grants, room checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from signaling.auth import (
    MAX_TOKEN_LENGTH,
    SOURCES,
    Claims,
    TokenVerifier,
    VideoGrant,
    check_room_join,
    mint_token,
    parse_ttl,
)
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

API_KEY = "APIdevkey"
SECRET = "s3cret-for-tests-only-0123456789abcdef"  # >= 32 bytes
OTHER_SECRET = "another-secret-for-tests-0123456789abcdef"
NOW = 1_700_000_000.0
LEEWAY_S = 10.0
JOIN = VideoGrant(room_join=True, room="lobby")


# --- helpers ------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64url(json.dumps(obj).encode())


def hs256_raw(header: Any, payload: Any, secret: bytes) -> str:
    """An HS256-signed compact JWS built by hand, so any header and any secret can be used."""
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def hs256_over(header_segment: str, payload_segment: str, secret: bytes) -> str:
    """HS256 over arbitrary (possibly non-JSON) segments."""
    signing_input = f"{header_segment}.{payload_segment}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def payload(**overrides: Any) -> dict[str, Any]:
    """A valid HS256 payload for API_KEY at NOW; a value of ... removes the claim."""
    claims: dict[str, Any] = {
        "iss": API_KEY,
        "sub": "alice",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 3600,
        "video": {"roomJoin": True, "room": "lobby"},
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not ...}


def hs256(**overrides: Any) -> str:
    return hs256_raw({"alg": "HS256", "typ": "JWT"}, payload(**overrides), SECRET.encode())


@dataclass(frozen=True)
class Keys:
    rsa_private: rsa.RSAPrivateKey
    rsa_public_pem: bytes
    ec_private: ec.EllipticCurvePrivateKey
    ec_public_pem: bytes
    other_rsa_private: rsa.RSAPrivateKey
    other_ec_private: ec.EllipticCurvePrivateKey


def public_pem(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def keys() -> Keys:
    rsa_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_private = ec.generate_private_key(ec.SECP256R1())
    return Keys(
        rsa_private=rsa_private,
        rsa_public_pem=public_pem(rsa_private),
        ec_private=ec_private,
        ec_public_pem=public_pem(ec_private),
        other_rsa_private=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        other_ec_private=ec.generate_private_key(ec.SECP256R1()),
    )


@pytest.fixture(scope="module")
def verifier(keys: Keys) -> TokenVerifier:
    return TokenVerifier(
        {API_KEY: SECRET},
        {"rsa-1": ("RS256", keys.rsa_public_pem), "ec-1": ("ES256", keys.ec_public_pem)},
        leeway_s=LEEWAY_S,
    )


def asym(private: Any, alg: str, kid: str | None, **overrides: Any) -> str:
    claims = payload(**{"iss": ..., **overrides})
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, private, algorithm=alg, headers=headers)


def rejected(verifier: TokenVerifier, token: str, now: float = NOW) -> AuthError:
    with pytest.raises(AuthError) as info:
        verifier.verify(token, now)
    # Whatever the failure, the message never carries the token or its signature.
    assert token not in info.value.message or not token
    signature = token.rsplit(".", 1)[-1]
    if len(signature) >= 8:
        assert signature not in info.value.message
    return info.value


# --- round trips --------------------------------------------------------------------------------


def test_mint_then_verify_round_trips(verifier: TokenVerifier) -> None:
    grant = VideoGrant(
        room_join=True,
        room="lobby",
        can_subscribe=False,
        can_publish_sources=("camera", "microphone"),
        hidden=True,
    )
    token = mint_token(
        API_KEY,
        SECRET,
        identity="alice",
        now=NOW + 0.75,
        ttl_s=600,
        grant=grant,
        name="Alice",
        metadata='{"role":"host"}',
    )
    claims = verifier.verify(token, NOW + 1)
    assert claims == Claims(
        identity="alice",
        name="Alice",
        metadata='{"role":"host"}',
        issuer=API_KEY,
        key_id="",
        expires_at=NOW + 600,
        not_before=NOW,
        grant=grant,
    )


def test_minted_token_claims_on_the_wire() -> None:
    token = mint_token(
        API_KEY, SECRET, identity="bob", now=NOW, ttl_s=60, grant=JOIN, jti="fixed-jti"
    )
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    assert jwt.decode(token, options={"verify_signature": False}) == {
        "iss": API_KEY,
        "sub": "bob",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 60,
        "jti": "fixed-jti",
        "video": {
            "roomJoin": True,
            "room": "lobby",
            "canPublish": True,
            "canSubscribe": True,
            "canPublishData": True,
        },
    }


def test_minted_jti_is_random() -> None:
    def mint() -> str:
        token = mint_token(API_KEY, SECRET, identity="a", now=NOW, ttl_s=60, grant=JOIN)
        return str(jwt.decode(token, options={"verify_signature": False})["jti"])

    assert mint() != mint()


@pytest.mark.parametrize(
    ("alg", "kid", "key_attr"), [("RS256", "rsa-1", "rsa_private"), ("ES256", "ec-1", "ec_private")]
)
def test_asymmetric_round_trip(
    verifier: TokenVerifier, keys: Keys, alg: str, kid: str, key_attr: str
) -> None:
    token = asym(getattr(keys, key_attr), alg, kid, iss="issuer-service", name="Alice")
    claims = verifier.verify(token, NOW)
    assert claims.key_id == kid
    assert claims.issuer == "issuer-service"
    assert claims.identity == "alice"
    assert claims.name == "Alice"
    assert claims.grant == JOIN


def test_token_without_video_claim_has_default_grant(verifier: TokenVerifier) -> None:
    claims = verifier.verify(hs256(video=..., sub=...), NOW)
    assert claims.grant == VideoGrant()
    assert claims.identity == ""
    assert claims.not_before == NOW


def test_nbf_is_optional(verifier: TokenVerifier) -> None:
    assert verifier.verify(hs256(nbf=...), NOW).not_before is None


def test_kid_that_is_not_configured_falls_back_to_iss(verifier: TokenVerifier) -> None:
    token = hs256_raw({"alg": "HS256", "kid": "whatever"}, payload(), SECRET.encode())
    assert verifier.verify(token, NOW).issuer == API_KEY


# --- rejections ---------------------------------------------------------------------------------


def test_empty_token_is_missing(verifier: TokenVerifier) -> None:
    assert rejected(verifier, "").code == TOKEN_MISSING


@pytest.mark.parametrize(
    "token",
    [
        "not a jwt",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.@@@.###",
        f"{b64url(b'not json')}.{b64json(payload())}.c2ln",
        f"{b64json(['a', 'list'])}.{b64json(payload())}.c2ln",
        f"{b64json({'typ': 'JWT'})}.{b64json(payload())}.c2ln",  # no alg
        f"{b64json({'alg': 5})}.{b64json(payload())}.c2ln",
        f"{b64json({'alg': 'HS256', 'kid': 7})}.{b64json(payload())}.c2ln",
        f"{b64json({'alg': 'HS256', 'crit': ['exp-ext']})}.{b64json(payload())}.c2ln",
        hs256_over(b64json({"alg": "HS256"}), b64url(b"not json"), SECRET.encode()),
        hs256_over(b64json({"alg": "HS256"}), b64json(["a", "list"]), SECRET.encode()),
        "x" * (MAX_TOKEN_LENGTH + 1),
    ],
    ids=[
        "text",
        "one-segment",
        "two-segments",
        "four-segments",
        "not-base64",
        "header-not-json",
        "header-not-object",
        "header-no-alg",
        "header-alg-not-string",
        "header-kid-not-string",
        "header-unknown-crit",
        "payload-not-json",
        "payload-not-object",
        "too-long",
    ],
)
def test_undecodable_tokens_are_malformed(verifier: TokenVerifier, token: str) -> None:
    assert rejected(verifier, token).code == TOKEN_MALFORMED


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"exp": ...}, "'exp'"),
        ({"exp": "1700003600"}, "'exp'"),
        ({"exp": True}, "'exp'"),
        ({"exp": float("nan")}, "'exp'"),  # json.dumps writes NaN, Python's json reads it
        ({"exp": float("inf")}, "'exp'"),
        ({"exp": 10**400}, "'exp'"),
        ({"nbf": "now"}, "'nbf'"),
        ({"iat": None}, "'iat'"),
        ({"sub": 42}, "'sub'"),
        ({"sub": ...}, "'sub'"),  # roomJoin needs an identity
        ({"sub": ""}, "'sub'"),
        ({"name": ["Alice"]}, "'name'"),
        ({"metadata": {"a": 1}}, "'metadata'"),
        ({"iss": 123}, "'iss'"),
        ({"video": "room=lobby"}, "'video'"),
        ({"video": {"roomJoin": "true", "room": "lobby"}}, "'video.roomJoin'"),
    ],
)
def test_bad_claims_are_malformed(
    verifier: TokenVerifier, overrides: dict[str, Any], field: str
) -> None:
    error = rejected(verifier, hs256(**overrides))
    assert error.code == TOKEN_MALFORMED
    assert field in error.message


def test_bad_claims_in_asymmetric_token_are_malformed(verifier: TokenVerifier, keys: Keys) -> None:
    error = rejected(verifier, asym(keys.rsa_private, "RS256", "rsa-1", exp=...))
    assert error.code == TOKEN_MALFORMED


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_not_allowed(verifier: TokenVerifier, alg: str) -> None:
    unsigned = f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(payload())}."
    assert rejected(verifier, unsigned).code == TOKEN_ALG_NOT_ALLOWED
    with_kid = f"{b64json({'alg': alg, 'kid': 'rsa-1'})}.{b64json(payload())}."
    assert rejected(verifier, with_kid).code == TOKEN_ALG_NOT_ALLOWED


@pytest.mark.parametrize("alg", ["HS384", "HS512", "PS256", "RS512", "ES384", "EdDSA", "hs256", ""])
def test_unsupported_algorithms_are_not_allowed(verifier: TokenVerifier, alg: str) -> None:
    token = hs256_over(b64json({"alg": alg}), b64json(payload()), SECRET.encode())
    assert rejected(verifier, token).code == TOKEN_ALG_NOT_ALLOWED


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_hs384_signed_with_the_real_secret_is_not_allowed(verifier: TokenVerifier) -> None:
    token = jwt.encode(payload(), SECRET, algorithm="HS384")
    assert rejected(verifier, token).code == TOKEN_ALG_NOT_ALLOWED


@pytest.mark.parametrize("iss", [API_KEY, "unknown-issuer", ...])
def test_hs256_signed_with_rsa_public_pem_naming_kid_is_not_allowed(
    verifier: TokenVerifier, keys: Keys, iss: Any
) -> None:
    """The classic confusion attack: the public key is public, so HMAC with it proves nothing."""
    token = hs256_raw({"alg": "HS256", "kid": "rsa-1"}, payload(iss=iss), keys.rsa_public_pem)
    error = rejected(verifier, token)
    assert error.code == TOKEN_ALG_NOT_ALLOWED
    assert "RS256" in error.message


def test_hs256_signed_with_ec_public_pem_naming_kid_is_not_allowed(
    verifier: TokenVerifier, keys: Keys
) -> None:
    token = hs256_raw({"alg": "HS256", "kid": "ec-1"}, payload(), keys.ec_public_pem)
    assert rejected(verifier, token).code == TOKEN_ALG_NOT_ALLOWED


def test_rs256_token_naming_hmac_api_key_is_not_allowed(
    verifier: TokenVerifier, keys: Keys
) -> None:
    token = jwt.encode(payload(), keys.rsa_private, algorithm="RS256")  # iss=API_KEY, no kid
    error = rejected(verifier, token)
    assert error.code == TOKEN_ALG_NOT_ALLOWED
    assert "HS256" in error.message


@pytest.mark.parametrize(
    ("alg", "kid", "key_attr"),
    [("ES256", "rsa-1", "ec_private"), ("RS256", "ec-1", "rsa_private")],
)
def test_asymmetric_alg_swapped_between_kids_is_not_allowed(
    verifier: TokenVerifier, keys: Keys, alg: str, kid: str, key_attr: str
) -> None:
    token = asym(getattr(keys, key_attr), alg, kid)
    assert rejected(verifier, token).code == TOKEN_ALG_NOT_ALLOWED


@pytest.mark.parametrize(
    "token",
    [
        hs256(iss="unknown-key"),
        hs256(iss=...),
        hs256(iss=""),
        hs256_raw({"alg": "HS256", "kid": "unknown-kid"}, payload(iss=...), SECRET.encode()),
    ],
    ids=["unknown-iss", "no-iss", "empty-iss", "unknown-kid-no-iss"],
)
def test_hs256_with_unknown_api_key(verifier: TokenVerifier, token: str) -> None:
    assert rejected(verifier, token).code == TOKEN_UNKNOWN_KEY


@pytest.mark.parametrize("kid", ["rsa-2", None])
def test_asymmetric_with_unknown_kid(verifier: TokenVerifier, keys: Keys, kid: str | None) -> None:
    assert rejected(verifier, asym(keys.rsa_private, "RS256", kid)).code == TOKEN_UNKNOWN_KEY


def test_no_public_keys_configured(keys: Keys) -> None:
    only_hmac = TokenVerifier({API_KEY: SECRET})
    assert rejected(only_hmac, asym(keys.ec_private, "ES256", "ec-1")).code == TOKEN_UNKNOWN_KEY
    assert only_hmac.verify(hs256(), NOW).identity == "alice"


def test_wrong_hmac_secret_is_bad_signature(verifier: TokenVerifier) -> None:
    token = hs256_raw({"alg": "HS256"}, payload(), OTHER_SECRET.encode())
    assert rejected(verifier, token).code == TOKEN_BAD_SIGNATURE


def test_tampered_payload_is_bad_signature(verifier: TokenVerifier) -> None:
    header, _, signature = hs256().split(".")
    forged = f"{header}.{b64json(payload(video={'roomJoin': True, 'room': 'vip'}))}.{signature}"
    assert rejected(verifier, forged).code == TOKEN_BAD_SIGNATURE


@pytest.mark.parametrize("signature", ["", "AAAA", b64url(b"\x00" * 32)])
def test_wrong_length_or_empty_signature_is_bad_signature(
    verifier: TokenVerifier, signature: str
) -> None:
    header, body, _ = hs256().split(".")
    assert rejected(verifier, f"{header}.{body}.{signature}").code == TOKEN_BAD_SIGNATURE


@pytest.mark.parametrize(
    ("alg", "kid", "key_attr"),
    [("RS256", "rsa-1", "other_rsa_private"), ("ES256", "ec-1", "other_ec_private")],
)
def test_asymmetric_signed_by_other_key_is_bad_signature(
    verifier: TokenVerifier, keys: Keys, alg: str, kid: str, key_attr: str
) -> None:
    token = asym(getattr(keys, key_attr), alg, kid)
    assert rejected(verifier, token).code == TOKEN_BAD_SIGNATURE


def test_truncated_es256_signature_is_bad_signature(verifier: TokenVerifier, keys: Keys) -> None:
    header, body, signature = asym(keys.ec_private, "ES256", "ec-1").split(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    assert len(raw) == 64
    for cut in (raw[:60], raw[:32], raw + b"\x00"):
        token = f"{header}.{body}.{b64url(cut)}"
        assert rejected(verifier, token).code == TOKEN_BAD_SIGNATURE


def test_signature_is_checked_before_claims(verifier: TokenVerifier) -> None:
    """A forger learns nothing about claim checks: expired or malformed, it is a bad signature."""
    for claims in (payload(exp=NOW - 3600), payload(exp=...), payload(video=5)):
        token = hs256_raw({"alg": "HS256"}, claims, OTHER_SECRET.encode())
        assert rejected(verifier, token).code == TOKEN_BAD_SIGNATURE


# --- time ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exp", "now", "code"),
    [
        (NOW, NOW, None),
        (NOW, NOW + LEEWAY_S, None),  # exactly at the leeway edge: still valid
        (NOW, NOW + LEEWAY_S + 0.001, TOKEN_EXPIRED),
        (NOW, NOW + 86400, TOKEN_EXPIRED),
        (NOW + 0.5, NOW + LEEWAY_S + 0.5, None),  # fractional NumericDates are honoured
    ],
)
def test_expiry_with_leeway(
    verifier: TokenVerifier, exp: float, now: float, code: str | None
) -> None:
    token = hs256(exp=exp, nbf=NOW - 7200, iat=NOW - 7200)
    if code is None:
        assert verifier.verify(token, now).expires_at == exp
    else:
        assert rejected(verifier, token, now).code == code


@pytest.mark.parametrize(
    ("nbf", "now", "code"),
    [
        (NOW, NOW, None),
        (NOW + LEEWAY_S, NOW, None),  # exactly at the leeway edge: already valid
        (NOW + LEEWAY_S + 0.001, NOW, TOKEN_NOT_YET_VALID),
        (NOW + 600, NOW, TOKEN_NOT_YET_VALID),
        (NOW + 600, NOW + 600 - LEEWAY_S, None),
    ],
)
def test_not_before_with_leeway(
    verifier: TokenVerifier, nbf: float, now: float, code: str | None
) -> None:
    token = hs256(nbf=nbf, exp=NOW + 3600)
    if code is None:
        assert verifier.verify(token, now).not_before == nbf
    else:
        assert rejected(verifier, token, now).code == code


def test_zero_leeway() -> None:
    strict = TokenVerifier({API_KEY: SECRET}, leeway_s=0)
    token = hs256(nbf=NOW, exp=NOW + 60)
    assert strict.verify(token, NOW).identity == "alice"
    assert strict.verify(token, NOW + 60).identity == "alice"
    assert rejected(strict, token, NOW + 60.001).code == TOKEN_EXPIRED
    assert rejected(strict, token, NOW - 0.001).code == TOKEN_NOT_YET_VALID


def test_minted_token_lifetime(verifier: TokenVerifier) -> None:
    token = mint_token(API_KEY, SECRET, identity="a", now=NOW, ttl_s=60, grant=JOIN)
    assert verifier.verify(token, NOW - LEEWAY_S).identity == "a"
    assert verifier.verify(token, NOW + 60 + LEEWAY_S).identity == "a"
    assert rejected(verifier, token, NOW + 61 + LEEWAY_S).code == TOKEN_EXPIRED
    assert rejected(verifier, token, NOW - LEEWAY_S - 1).code == TOKEN_NOT_YET_VALID


@pytest.mark.parametrize("now", [float("nan"), float("inf")])
def test_verify_refuses_a_broken_clock(verifier: TokenVerifier, now: float) -> None:
    with pytest.raises(ValueError, match="now must be finite"):
        verifier.verify(hs256(), now)


# --- configuration ------------------------------------------------------------------------------


def test_verifier_configuration_errors(keys: Keys) -> None:
    small_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p384 = ec.generate_private_key(ec.SECP384R1())
    private_pem = keys.rsa_private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"hmac_secrets": {API_KEY: "short"}}, "at least 32"),
        ({"hmac_secrets": {"": SECRET}}, "api key must not be empty"),
        ({"hmac_secrets": {API_KEY: keys.rsa_public_pem.decode()}}, "looks like a PEM"),
        ({"public_keys": {"k": ("HS256", keys.rsa_public_pem)}}, "not one of RS256, ES256"),
        ({"public_keys": {"k": ("RS256", keys.ec_public_pem)}}, "RS256 needs an RSA key"),
        ({"public_keys": {"k": ("ES256", keys.rsa_public_pem)}}, "ES256 needs an EC P-256"),
        ({"public_keys": {"k": ("ES256", public_pem(p384))}}, "ES256 needs an EC P-256"),
        ({"public_keys": {"k": ("RS256", public_pem(small_rsa))}}, "1024 bits"),
        ({"public_keys": {"k": ("RS256", private_pem)}}, "not a PEM public key"),
        ({"public_keys": {"k": ("RS256", b"garbage")}}, "not a PEM public key"),
        ({"public_keys": {"": ("RS256", keys.rsa_public_pem)}}, "kid"),
        ({"leeway_s": -1.0}, "leeway_s"),
        ({"leeway_s": float("inf")}, "leeway_s"),
    ]
    for kwargs, message in cases:
        args = {"hmac_secrets": {API_KEY: SECRET}, **kwargs}
        with pytest.raises(ValueError, match=message):
            TokenVerifier(**args)


def test_public_key_pem_may_be_str(keys: Keys) -> None:
    verifier = TokenVerifier({}, {"rsa-1": ("RS256", keys.rsa_public_pem.decode())})
    assert verifier.verify(asym(keys.rsa_private, "RS256", "rsa-1"), NOW).key_id == "rsa-1"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"api_secret": "short"}, "at least 32"),
        ({"api_key": ""}, "api key must not be empty"),
        ({"ttl_s": 0}, "ttl_s"),
        ({"ttl_s": -5}, "ttl_s"),
        ({"ttl_s": float("inf")}, "ttl_s"),
        ({"now": float("nan")}, "now must be finite"),
        ({"identity": ""}, "needs an identity"),
    ],
)
def test_mint_token_errors(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "api_key": API_KEY,
        "api_secret": SECRET,
        "identity": "alice",
        "now": NOW,
        "ttl_s": 60,
        "grant": JOIN,
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        mint_token(**args)


def test_mint_token_without_room_join_may_have_no_identity(verifier: TokenVerifier) -> None:
    admin = VideoGrant(room_admin=True, room_list=True)
    token = mint_token(API_KEY, SECRET, identity="", now=NOW, ttl_s=60, grant=admin)
    claims = verifier.verify(token, NOW)
    assert claims.identity == ""
    assert claims.grant == admin


# --- check_room_join ----------------------------------------------------------------------------


def claims_with(grant: VideoGrant) -> Claims:
    return Claims(
        identity="alice",
        name="",
        metadata="",
        issuer=API_KEY,
        key_id="",
        expires_at=NOW + 60,
        not_before=None,
        grant=grant,
    )


@pytest.mark.parametrize(
    ("grant", "requested", "code"),
    [
        (JOIN, "lobby", None),
        (JOIN, None, None),
        (JOIN, "", None),
        (JOIN, "other", TOKEN_WRONG_ROOM),
        (JOIN, "Lobby", TOKEN_WRONG_ROOM),
        (VideoGrant(room_join=True), "lobby", TOKEN_WRONG_ROOM),
        (VideoGrant(room_join=True), None, TOKEN_WRONG_ROOM),
        (VideoGrant(room="lobby"), "lobby", TOKEN_MISSING_ROOM_JOIN),
        (VideoGrant(room_admin=True, room="lobby"), None, TOKEN_MISSING_ROOM_JOIN),
        (VideoGrant(), "other", TOKEN_MISSING_ROOM_JOIN),
    ],
)
def test_check_room_join(grant: VideoGrant, requested: str | None, code: str | None) -> None:
    if code is None:
        check_room_join(claims_with(grant), requested)
    else:
        with pytest.raises(AuthError) as info:
            check_room_join(claims_with(grant), requested)
        assert info.value.code == code


# --- VideoGrant ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "grant",
    [
        VideoGrant(),
        JOIN,
        VideoGrant(room_join=True, room="r", can_publish=False, can_publish_data=False),
        VideoGrant(can_publish_sources=SOURCES),
        VideoGrant(
            room_join=True,
            room="r",
            can_subscribe=False,
            can_publish_sources=("screen_share",),
            can_update_own_metadata=True,
            room_admin=True,
            room_create=True,
            room_list=True,
            room_record=True,
            hidden=True,
        ),
    ],
)
def test_grant_claim_round_trip(grant: VideoGrant) -> None:
    assert VideoGrant.from_claim(grant.to_claim()) == grant
    assert VideoGrant.from_claim(json.loads(json.dumps(grant.to_claim()))) == grant


def test_grant_to_claim_is_camel_case_and_omits_defaults() -> None:
    assert VideoGrant().to_claim() == {
        "canPublish": True,
        "canSubscribe": True,
        "canPublishData": True,
    }
    grant = VideoGrant(
        room_join=True, room="r", can_publish_sources=("camera",), can_update_own_metadata=True
    )
    assert grant.to_claim() == {
        "roomJoin": True,
        "room": "r",
        "canPublish": True,
        "canSubscribe": True,
        "canPublishData": True,
        "canUpdateOwnMetadata": True,
        "canPublishSources": ["camera"],
    }


def test_grant_from_livekit_claim_ignores_unknown_keys() -> None:
    claim = {
        "roomJoin": True,
        "room": "lobby",
        "canPublish": False,
        "canPublishSources": ["camera", "microphone", "camera"],
        "ingressAdmin": True,
        "agent": False,
    }
    assert VideoGrant.from_claim(claim) == VideoGrant(
        room_join=True,
        room="lobby",
        can_publish=False,
        can_publish_sources=("camera", "microphone"),
    )


@pytest.mark.parametrize(
    ("claim", "field"),
    [
        (None, "'video'"),
        ([], "'video'"),
        ("roomJoin", "'video'"),
        ({"roomJoin": 1}, "'video.roomJoin'"),
        ({"roomJoin": "true"}, "'video.roomJoin'"),
        ({"room": 5}, "'video.room'"),
        ({"room": None}, "'video.room'"),
        ({"canPublish": None}, "'video.canPublish'"),
        ({"canSubscribe": 0}, "'video.canSubscribe'"),
        ({"canPublishData": "no"}, "'video.canPublishData'"),
        ({"canUpdateOwnMetadata": []}, "'video.canUpdateOwnMetadata'"),
        ({"roomAdmin": 1.0}, "'video.roomAdmin'"),
        ({"roomCreate": {}}, "'video.roomCreate'"),
        ({"roomList": "yes"}, "'video.roomList'"),
        ({"roomRecord": 1}, "'video.roomRecord'"),
        ({"hidden": "false"}, "'video.hidden'"),
        ({"canPublishSources": "camera"}, "'video.canPublishSources'"),
        ({"canPublishSources": [1]}, "'video.canPublishSources[0]'"),
        ({"canPublishSources": ["camera", "webcam"]}, "'video.canPublishSources[1]'"),
        ({"canPublishSources": ["CAMERA"]}, "'video.canPublishSources[0]'"),
    ],
)
def test_grant_from_claim_type_errors(claim: Any, field: str) -> None:
    with pytest.raises(AuthError) as info:
        VideoGrant.from_claim(claim)
    assert info.value.code == TOKEN_MALFORMED
    assert field in info.value.message


def test_grant_rejects_unknown_source() -> None:
    with pytest.raises(ValueError, match="unknown publish source 'webcam'"):
        VideoGrant(can_publish_sources=("webcam",))


@pytest.mark.parametrize(
    ("grant", "source", "allowed"),
    [
        (VideoGrant(), "camera", True),
        (VideoGrant(), "screen_share_audio", True),
        (VideoGrant(can_publish=False), "camera", False),
        (VideoGrant(can_publish_sources=("microphone",)), "microphone", True),
        (VideoGrant(can_publish_sources=("microphone",)), "camera", False),
        (VideoGrant(can_publish=False, can_publish_sources=("camera",)), "camera", False),
    ],
)
def test_grant_can_publish_source(grant: VideoGrant, source: str, allowed: bool) -> None:
    assert grant.can_publish_source(source) is allowed


# --- parse_ttl ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3600", 3600.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("6h", 21600.0),
        ("2d", 172800.0),
        ("1.5h", 5400.0),
        (" 10m ", 600.0),
        ("1", 1.0),
    ],
)
def test_parse_ttl(text: str, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "h", "6 h", "6H", "-5m", "+5m", "5w", "1h30m", "1e3", "inf", "nan", ".5h", "5.h", "٣s"],
)
def test_parse_ttl_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="invalid ttl"):
        parse_ttl(text)


@pytest.mark.parametrize("text", ["0", "0s", "0.0h"])
def test_parse_ttl_rejects_zero(text: str) -> None:
    with pytest.raises(ValueError, match="greater than zero"):
        parse_ttl(text)


@pytest.mark.parametrize(("claim", "limit"), [("sub", 256), ("name", 256)])
def test_overlong_identity_claims_are_malformed(verifier: TokenVerifier, claim: str,
                                                limit: int) -> None:
    assert verifier.verify(hs256(**{claim: "x" * limit}), NOW)
    err = rejected(verifier, hs256(**{claim: "x" * (limit + 1)}))
    assert err.code == TOKEN_MALFORMED and claim in err.message
