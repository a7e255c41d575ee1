"""Request bodies: the media type, strict JSON decoding. Pure: bytes in, a value or ApiError.

Strict like signaling's framing: not UTF-8, not JSON, a repeated key, ``NaN``/``Infinity``, a
number out of double range or a lone UTF-16 surrogate (``"\\ud800"``) is a 400
``malformed_request``; a body that is not ``application/json`` (or ``application/*+json``) is a
415. What the JSON says is checked against the route's schema afterwards (422).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

from sfu.api import errors as AE
from sfu.api.errors import ApiError

_SURROGATE_RE: Final = re.compile("[\ud800-\udfff]")
_MAX_SNIPPET: Final = 200


def check_media_type(content_type: str, charset: str | None) -> None:
    """415 unless the body is declared as JSON in UTF-8."""
    ctype = content_type.lower()
    if ctype != "application/json" and not (ctype.startswith("application/")
                                            and ctype.endswith("+json")):
        raise ApiError(415, AE.UNSUPPORTED_MEDIA_TYPE,
                       f"the body must be application/json, not {ctype[:_MAX_SNIPPET]!r}")
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise ApiError(415, AE.UNSUPPORTED_MEDIA_TYPE,
                       f"the body must be UTF-8, not {charset[:_MAX_SNIPPET]!r}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:_MAX_SNIPPET]!r}")
            seen.add(key)
    return obj


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"number {literal[:_MAX_SNIPPET]} is out of range")
    return value


def _no_constant(literal: str) -> Any:
    raise ValueError(f"{literal} is not JSON")


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE_RE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def decode(raw: bytes) -> Any:
    """The JSON value of ``raw``; 400 ``malformed_request`` when it is not strict JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, AE.MALFORMED_REQUEST, f"the body is not UTF-8: {exc}") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_finite,
                           parse_constant=_no_constant)
    except RecursionError:
        raise ApiError(400, AE.MALFORMED_REQUEST, "invalid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, our hooks, int digit limits
        raise ApiError(400, AE.MALFORMED_REQUEST,
                       f"invalid JSON: {str(exc)[:_MAX_SNIPPET]}") from None
    if "\\u" in text and _has_surrogate(value):
        raise ApiError(400, AE.MALFORMED_REQUEST, "a string contains a lone UTF-16 surrogate")
    return value
