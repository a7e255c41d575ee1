"""Request bodies: the media type, strict JSON decoding. Pure: bytes in, a value or ApiError.

Strict like signaling's framing: not UTF-8, not JSON, a repeated key, ``NaN``/``Infinity``, a
number out of double range or a lone UTF-16 surrogate (``"\\ud800"``) is a 400
``malformed_request``; a body that is not ``application/json`` (or ``application/*+json``) is a
415. What the JSON says is checked against the route's schema afterwards (422).
"""

from __future__ import annotations

from typing import Any, Final

from sfu.api import errors as AE
from sfu.api.errors import ApiError
from signaling.messages import has_surrogate, loads_strict

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


def decode(raw: bytes) -> Any:
    """The JSON value of ``raw``; 400 ``malformed_request`` when it is not strict JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, AE.MALFORMED_REQUEST, f"the body is not UTF-8: {exc}") from None
    try:
        value = loads_strict(text)  # the signaling parser's strict JSON
    except RecursionError:
        raise ApiError(400, AE.MALFORMED_REQUEST, "invalid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, our hooks, int digit limits
        raise ApiError(400, AE.MALFORMED_REQUEST,
                       f"invalid JSON: {str(exc)[:_MAX_SNIPPET]}") from None
    if "\\u" in text and has_surrogate(value):
        raise ApiError(400, AE.MALFORMED_REQUEST, "a string contains a lone UTF-16 surrogate")
    return value
