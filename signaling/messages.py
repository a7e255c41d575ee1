"""Signaling messages: JSON framing and validation against the protocol's JSON Schemas.

The schemas in ``signaling/schemas/`` are the contract (``docs/protocol.md`` describes it): one
file per message, ``client.<type>.json`` for client → server and ``server.<type>.json`` for
server → client, plus ``common.json`` with the shared ``$defs``. Validators are built once, at
import. :func:`parse_client_message` turns a WebSocket frame into a validated ``dict`` or raises
:class:`~signaling.errors.ProtocolError` carrying the wire code; :func:`validate_server_message`
checks what the server is about to send.
"""

from __future__ import annotations

import copy
import json
import math
import re
from importlib import resources
from typing import Any, NoReturn

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource

from signaling import errors as E
from signaling.errors import ProtocolError

SCHEMA_BASE_URI = "https://sfu.invalid/schemas/"

# error.message is at most 1024 characters on the wire (server.error.json).
_MAX_ERROR_CHARS = 1000
_MAX_REPR_CHARS = 80
# Lone UTF-16 surrogates: JSON can smuggle them in with "\ud800" escapes, and a str holding one
# cannot be encoded to UTF-8 later (for example when relaying a participant's name to others).
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _load_schemas() -> dict[str, dict[str, Any]]:
    folder = resources.files("signaling") / "schemas"
    schemas: dict[str, dict[str, Any]] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            schema = json.loads(entry.read_text("utf-8"))
            if schema.get("$id") != SCHEMA_BASE_URI + entry.name:  # a packaging bug, not input
                raise RuntimeError(f"schema {entry.name} has $id {schema.get('$id')!r}")
            schemas[entry.name.removesuffix(".json")] = schema
    return schemas


_SCHEMAS = _load_schemas()
_REGISTRY: Registry[Any] = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in _SCHEMAS.values()
).crawl()


def _inline_refs(node: Any, resolver: Any) -> Any:  # resolver: referencing's Resolver
    """``node`` with every ``$ref`` replaced by its target, looked up in the registry.

    Following a ``$ref`` through the registry on every validation costs about three quarters of
    the validation time; the protocol's refs are never recursive, so they are resolved once here.
    """
    if isinstance(node, dict):
        if "$ref" in node:
            resolved = resolver.lookup(node["$ref"])
            return _inline_refs(resolved.contents, resolved.resolver)
        return {key: _inline_refs(value, resolver) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline_refs(value, resolver) for value in node]
    return node


def _validators(direction: str) -> dict[str, Any]:
    prefix = direction + "."
    validators: dict[str, Any] = {}
    for name, schema in sorted(_SCHEMAS.items()):
        if name.startswith(prefix):
            resolver = _REGISTRY.resolver(base_uri=schema["$id"])
            validators[name.removeprefix(prefix)] = Draft202012Validator(
                _inline_refs(schema, resolver), registry=_REGISTRY
            )
    return validators


_CLIENT_VALIDATORS = _validators("client")
_SERVER_VALIDATORS = _validators("server")

_REQUEST_ID_VALIDATOR = Draft202012Validator(_inline_refs(
    {"$ref": "common.json#/$defs/request_id"}, _REGISTRY.resolver(base_uri=SCHEMA_BASE_URI)
))

CLIENT_TYPES: frozenset[str] = frozenset(_CLIENT_VALIDATORS)
SERVER_TYPES: frozenset[str] = frozenset(_SERVER_VALIDATORS)


class MessageError(ProtocolError):
    """A client message was refused.

    ``request_id`` is the message's ``id`` when the message was an object whose ``id`` is itself
    valid, so that the ``error`` can echo it; otherwise None.
    """

    def __init__(self, code: str, message: str, request_id: str | int | None = None) -> None:
        super().__init__(code, message)
        self.request_id = request_id


def schema_names() -> list[str]:
    """Every message schema's name (``client.offer``, …, ``server.join``, …), sorted."""
    return sorted(name for name in _SCHEMAS if name != "common")


def load_schema(name: str) -> dict[str, Any]:
    """A copy of the schema called ``name`` (a message schema's name, or ``common``)."""
    try:
        return copy.deepcopy(_SCHEMAS[name])
    except KeyError:
        raise KeyError(f"no schema named {name!r}") from None


def parse_client_message(data: str | bytes, max_bytes: int) -> dict[str, Any]:
    """Decode and validate one client frame (text or binary).

    Raises :class:`MessageError` (a ProtocolError) with MESSAGE_TOO_LARGE, MALFORMED_MESSAGE,
    UNKNOWN_TYPE or INVALID_MESSAGE; its ``request_id`` is the id to echo, if any.
    """
    if isinstance(data, str):
        text = data
        if len(text) > max_bytes:  # every character takes at least one byte
            _too_large(len(text.encode("utf-8", "surrogatepass")), max_bytes)
        if not text.isascii():
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > max_bytes:
                _too_large(size, max_bytes)
            if _SURROGATE_RE.search(text):
                raise MessageError(E.MALFORMED_MESSAGE, "text contains a lone UTF-16 surrogate")
    else:
        if len(data) > max_bytes:
            _too_large(len(data), max_bytes)
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MessageError(E.MALFORMED_MESSAGE, f"frame is not valid UTF-8: {exc}") from None

    try:
        msg = loads_strict(text)
    except RecursionError:
        raise MessageError(E.MALFORMED_MESSAGE, "invalid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, our hooks, int digit limits
        raise MessageError(E.MALFORMED_MESSAGE, _clip(f"invalid JSON: {exc}")) from None
    if not isinstance(msg, dict):
        raise MessageError(E.MALFORMED_MESSAGE,
                           f"message must be a JSON object, not {_json_type(msg)}")

    if "type" not in msg:
        raise MessageError(E.UNKNOWN_TYPE, "message has no type", _echo_id(msg))
    msg_type = msg["type"]
    if not isinstance(msg_type, str):
        raise MessageError(E.UNKNOWN_TYPE, f"type must be a string, not {_json_type(msg_type)}",
                           _echo_id(msg))
    validator = _CLIENT_VALIDATORS.get(msg_type)
    if validator is None:
        raise MessageError(E.UNKNOWN_TYPE, f"unknown message type {_short(msg_type)}",
                           _echo_id(msg))
    error = best_match(validator.iter_errors(msg))
    if error is not None:
        raise MessageError(E.INVALID_MESSAGE, _describe(msg_type, error), _echo_id(msg))
    # Only escapes can put a surrogate in a decoded string; validated messages are shallow,
    # so this walk is cheap.
    if "\\u" in text and _has_surrogate(msg):
        raise MessageError(E.MALFORMED_MESSAGE, "string contains a lone UTF-16 surrogate",
                           _echo_id(msg))
    return msg


def validate_server_message(msg: dict[str, Any]) -> None:
    """Raise ProtocolError(INVALID_MESSAGE) unless ``msg`` matches its ``server.<type>`` schema."""
    if not isinstance(msg, dict):
        raise ProtocolError(E.INVALID_MESSAGE,
                            f"server message must be a dict, not {type(msg).__name__}")
    msg_type = msg.get("type")
    if not isinstance(msg_type, str) or msg_type not in _SERVER_VALIDATORS:
        raise ProtocolError(E.INVALID_MESSAGE, f"unknown server message type {_short(msg_type)}")
    error = best_match(_SERVER_VALIDATORS[msg_type].iter_errors(msg))
    if error is not None:
        raise ProtocolError(E.INVALID_MESSAGE, _describe(msg_type, error))


def loads_strict(text: str) -> Any:
    """``json.loads`` for untrusted input: a duplicate key, a number out of float range or
    ``NaN``/``Infinity`` raise ``ValueError`` (deep nesting: ``RecursionError``). The REST
    API parses request bodies with it too."""
    return json.loads(text, object_pairs_hook=_object_without_duplicates,
                      parse_float=_finite_float, parse_constant=_reject_constant)


def has_surrogate(value: Any) -> bool:
    """Whether a decoded JSON value holds a lone UTF-16 surrogate (only ``\\u`` escapes
    can put one there)."""
    return _has_surrogate(value)


# -- helpers ---------------------------------------------------------------------------------

def _echo_id(msg: dict[str, Any]) -> str | int | None:
    """The refused message's ``id`` if it is itself valid (safe to echo), else None."""
    request_id = msg.get("id")
    if _REQUEST_ID_VALIDATOR.is_valid(request_id) and not _has_surrogate(request_id):
        return request_id
    return None


def _too_large(size: int, max_bytes: int) -> NoReturn:
    raise MessageError(E.MESSAGE_TOO_LARGE,
                       f"message is {size} bytes, more than the limit of {max_bytes} bytes")


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {_short(key)}")
            seen.add(key)
    return obj


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"number {_clip(literal, _MAX_REPR_CHARS)} is out of range")
    return value


def _reject_constant(literal: str) -> Any:
    raise ValueError(f"{literal} is not JSON")


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE_RE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _short(value: Any) -> str:
    text = repr(value)
    if len(text) <= _MAX_REPR_CHARS:
        return text
    if isinstance(value, str):
        return f"{value[:40]!r}… ({len(value)} characters)"
    return f"{text[:_MAX_REPR_CHARS]}…"


def _clip(text: str, limit: int = _MAX_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(msg_type: str, error: ValidationError) -> str:
    """``offer.target: 'x' is not one of ['publisher', 'subscriber']`` — path, then the fault."""
    path = msg_type + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
    )
    message = error.message
    instance_repr = repr(error.instance)
    if len(instance_repr) > _MAX_REPR_CHARS:
        message = message.replace(instance_repr, _short(error.instance))
    return _clip(f"{path}: {message}")
