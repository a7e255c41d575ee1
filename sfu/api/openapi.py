"""The OpenAPI 3.1 document and the request validators, both built from the route table.

:func:`build_document` turns :data:`sfu.api.routes.ROUTES` and :func:`sfu.api.schemas.components`
into the document served at ``/api/openapi.json``; :class:`RequestValidators` validates each
request's path and query parameters and body against the schemas *in that document*. Handlers,
validation and documentation therefore cannot drift apart: a route that is not in the table
does not exist, and a schema the handlers validate with is the schema the document shows.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match
from multidict import MultiMapping

from sfu.api import errors as AE
from sfu.api.errors import ApiError
from sfu.api.schemas import PREFIX, components, ref
from sfu.api.table import Route
from sfu.api.times import parse_date_time

OPENAPI_VERSION: Final = "3.1.0"
SECURITY_SCHEME: Final = "bearerAuth"

_ERROR_DESCRIPTIONS: Final = {
    400: "`malformed_request`: the body is not JSON (or is missing when required), or a "
         "query parameter is given more than once.",
    401: "A `token_*` code: the bearer token is missing, malformed, expired, not yet valid, "
         "signed by an unknown key or with a bad signature.",
    403: "`permission_denied`: the token lacks the grant, or is limited to another room.",
    404: "`room_not_found`, or `not_found` for a participant or track.",
    409: "`room_exists`: a room of that name exists.",
    413: "`request_too_large`: the body exceeds `api.max_request_bytes`.",
    415: "`unsupported_media_type`: a body that is not `application/json`.",
    422: "`invalid_request`: a parameter or the body breaks its schema (the message names "
         "where).",
    429: "`rate_limited`: over the API key's rate limit (`api.rate_limit_per_s`); retry after "
         "`Retry-After` seconds.",
    501: "`not_implemented`: the server has no HS256 API key to sign tokens with.",
    503: "`store_unavailable`: this server keeps no store (usage records, webhooks).",
}

_SUCCESS_DESCRIPTIONS: Final = {200: "OK.", 201: "Created.", 204: "Done; no content."}

_TAGS: Final = (
    {"name": "rooms", "description": "Create, list, inspect, update and delete rooms."},
    {"name": "participants", "description": "A room's participants and their tracks."},
    {"name": "tokens", "description": "Join tokens and meeting links."},
    {"name": "usage", "description": "Participant sessions' usage records (call-detail "
                                     "records)."},
    {"name": "webhooks", "description": "Webhook deliveries the server gave up on, and "
                                        "their replay."},
    {"name": "meta", "description": "This document."},
)

_DESCRIPTION: Final = """\
The sfu daemon's REST API for business applications: create rooms, mint join tokens and
meeting links, and manage calls. See docs/api.md.

Authentication: `Authorization: Bearer <JWT>`, the same access tokens signaling takes, with
admin grants (`roomCreate`, `roomList`, `roomAdmin`, `roomRecord`) — `sfu token create
--admin --no-join --identity my-backend` prints one. A token whose grant names a `room` acts
on that room only. Errors are `{"error": {"code": ..., "message": ...}}`.
"""


def error_statuses(route: Route) -> list[int]:
    """The error statuses ``route`` may answer, from its shape (422: every route refuses the
    query parameters it does not take)."""
    statuses = {422, *route.errors}
    if route.grants:
        statuses |= {401, 403, 429}
    if route.path_params:
        statuses.add(404)
    if route.query:
        statuses.add(400)
    if route.body is not None:
        statuses |= {400, 413, 415}
    if route.store_handler is not None:
        statuses.add(503)
    return sorted(statuses)


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _content(route: Route) -> dict[str, Any]:
    assert route.response is not None
    if route.media_type == "application/json":
        return _json(ref(route.response))
    # a text stream (JSON Lines): OpenAPI 3.1 describes it as a string; each line is a
    # ``route.response`` (what OpenAPI 3.2 will call its itemSchema)
    return {route.media_type: {"schema": {
        "type": "string", "description": f"One `{route.response}` JSON object per line.",
        "contentMediaType": route.media_type}}}


def _responses(route: Route) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": _SUCCESS_DESCRIPTIONS[route.status]}
    if route.response is not None:
        ok["content"] = _content(route)
    if route.location:
        ok["headers"] = {"Location": {"description": "The created resource's path.",
                                      "required": True, "schema": {"type": "string"}}}
    if route.links:
        ok["links"] = {name: {"operationId": op, "parameters": dict(params)}
                       for name, (op, params) in route.links.items()}
    responses: dict[str, Any] = {str(route.status): ok}
    for status in error_statuses(route):
        response: dict[str, Any] = {"description": _ERROR_DESCRIPTIONS[status],
                                    "content": _json(ref("Error"))}
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {
                "description": "The RFC 6750 Bearer challenge.", "required": True,
                "schema": {"type": "string"}}}
        elif status == 429:
            response["headers"] = {"Retry-After": {
                "description": "Seconds to wait before retrying.", "required": True,
                "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
        responses[str(status)] = response
    return responses


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.operation_id, "summary": route.summary,
        "description": route.description, "tags": [route.tag],
    }
    params = [{"name": p.name, "in": "path", "required": True, "description": p.description,
               "schema": p.schema} for p in route.path_params]
    params += [{"name": p.name, "in": "query", "required": p.required,
                "description": p.description, "schema": p.schema} for p in route.query]
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": route.body_required, "content": _json(ref(route.body))}
    op["responses"] = _responses(route)
    op["security"] = [{SECURITY_SCHEME: []}] if route.grants else []
    return op


def build_document(routes: Iterable[Route], *, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        item = paths.setdefault(route.path, {})
        method = route.method.lower()
        if method in item:
            raise ValueError(f"two routes for {route.method} {route.path}")
        item[method] = _operation(route)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "sfu REST API", "version": version, "description": _DESCRIPTION,
                 "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}},
        "tags": list(_TAGS),
        "paths": paths,
        "components": {
            "schemas": components(),
            "securitySchemes": {SECURITY_SCHEME: {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "An access token with admin grants (docs/protocol.md, Tokens)."}},
        },
    }


# -- validation ------------------------------------------------------------------------------

_MAX_REPR_CHARS: Final = 80
_MAX_MESSAGE_CHARS: Final = 1000
_NO_TRAILING_NEWLINE: Final = "(?!\\n)"
#: a JSON number, as a query parameter that admits numbers may spell one
_NUMERAL: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def _is_date_time(value: object) -> bool:
    if isinstance(value, str):
        parse_date_time(value)  # ValueError says why not
    return True


#: the formats the validators check (JSON Schema only annotates ``format`` by default)
FORMATS: Final = FormatChecker(formats=())
FORMATS.checks("date-time", raises=ValueError)(_is_date_time)


def _inline(node: Any, schemas: Mapping[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """``node`` with every ``#/components/schemas/X`` replaced by ``X`` (never recursive)."""
    if isinstance(node, dict):
        target = node.get("$ref")
        if isinstance(target, str) and target.startswith(PREFIX):
            name = target.removeprefix(PREFIX)
            if name in seen:  # pragma: no cover - the schemas are not recursive
                raise ValueError(f"recursive schema {name!r}")
            rest = {k: _inline(v, schemas, seen) for k, v in node.items() if k != "$ref"}
            return {**_inline(schemas[name], schemas, (*seen, name)), **rest}
        return {k: _inline(v, schemas, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, schemas, seen) for v in node]
    return node


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_REPR_CHARS else text[:_MAX_REPR_CHARS - 1] + "…"


def describe(where: str, error: ValidationError) -> str:
    """``body.permission.hidden: 'x' is not of type 'boolean'`` — where, then the fault."""
    path = where + "".join(f"[{part}]" if isinstance(part, int) else f".{part}"
                           for part in error.absolute_path)
    message = error.message
    if error.validator == "pattern":  # without the lookahead that only guards Python's "$"
        pattern = str(error.validator_value).removesuffix(_NO_TRAILING_NEWLINE)
        message = f"{_show(error.instance)} does not match {pattern!r}"
    elif error.validator == "format" and error.cause is not None:
        message = f"{_show(error.instance)} is not a {error.validator_value!r} ({error.cause})"
    instance = repr(error.instance)
    if len(instance) > _MAX_REPR_CHARS:
        message = message.replace(instance, _show(error.instance))
    text = f"{path}: {message}"
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[:_MAX_MESSAGE_CHARS - 1] + "…"


def _validator(schema: dict[str, Any], schemas: Mapping[str, Any]) -> Draft202012Validator:
    inlined = _inline(copy.deepcopy(schema), schemas)
    Draft202012Validator.check_schema(inlined)
    return Draft202012Validator(inlined, format_checker=FORMATS)


def _invalid(where: str, validator: Draft202012Validator, value: Any) -> None:
    error = best_match(validator.iter_errors(value))
    if error is not None:
        raise ApiError(422, AE.INVALID_REQUEST, describe(where, error))


def _types(schema: Mapping[str, Any]) -> set[str]:
    """The JSON types an (inlined) schema admits, through ``anyOf`` / ``oneOf``."""
    kind = schema.get("type")
    types = {kind} if isinstance(kind, str) else set(kind or ())
    for branch in (*schema.get("anyOf", ()), *schema.get("oneOf", ())):
        types |= _types(branch)
    return types


@dataclass(frozen=True, slots=True)
class _Query:
    """A query parameter's validator, and how to read its text: a parameter that admits
    numbers takes a JSON numeral as a number; an ``integer`` one is handed over as an int."""

    validator: Draft202012Validator
    required: bool
    numeric: bool
    integer: bool

    @classmethod
    def of(cls, param: Mapping[str, Any], schemas: Mapping[str, Any]) -> _Query:
        validator = _validator(param["schema"], schemas)
        types = _types(validator.schema) - {"null"}
        return cls(validator, bool(param.get("required")), bool(types & {"number", "integer"}),
                   types == {"integer"})

    def value(self, where: str, text: str) -> Any:
        value: Any = text
        numeral = _NUMERAL.fullmatch(text) if self.numeric else None
        if numeral is not None:
            try:
                value = float(text) if numeral.group(1) or numeral.group(2) else int(text)
            except ValueError:  # more digits than int() reads: not a number we take
                pass
        _invalid(where, self.validator, value)
        return int(value) if self.integer else value


class RequestValidators:
    """Each route's path parameter, query parameter and body validators, from the
    document's own schemas."""

    def __init__(self, document: Mapping[str, Any], routes: Iterable[Route]) -> None:
        schemas = document["components"]["schemas"]
        self._path: dict[str, dict[str, Draft202012Validator]] = {}
        self._query: dict[str, dict[str, _Query]] = {}
        self._body: dict[str, Draft202012Validator] = {}
        for route in routes:
            op = document["paths"][route.path][route.method.lower()]
            params = op.get("parameters", [])
            self._path[route.operation_id] = {
                param["name"]: _validator(param["schema"], schemas)
                for param in params if param["in"] == "path"}
            self._query[route.operation_id] = {
                param["name"]: _Query.of(param, schemas)
                for param in params if param["in"] == "query"}
            body = op.get("requestBody")
            if body is not None:
                self._body[route.operation_id] = _validator(
                    body["content"]["application/json"]["schema"], schemas)

    def path(self, route: Route, values: Mapping[str, str]) -> dict[str, str]:
        out = {}
        for name, validator in self._path[route.operation_id].items():
            value = values[name]
            _invalid(f"path.{name}", validator, value)
            out[name] = value
        return out

    def query(self, route: Route, values: MultiMapping[str]) -> dict[str, Any]:
        """The query parameters given, typed: 422 for one the route does not take (a typo
        must not pass silently) or a value that breaks its schema, 400 for one given twice."""
        params = self._query[route.operation_id]
        for name in values:
            if name not in params:
                raise ApiError(422, AE.INVALID_REQUEST,
                               f"query.{_short_name(name)}: unknown query parameter")
        out = {}
        for name, param in params.items():
            given = values.getall(name, [])
            if len(given) > 1:
                raise ApiError(400, AE.MALFORMED_REQUEST,
                               f"query.{name}: given {len(given)} times (give it once)")
            if given:
                out[name] = param.value(f"query.{name}", given[0])
            elif param.required:  # pragma: no cover - no route has a required one yet
                raise ApiError(422, AE.INVALID_REQUEST, f"query.{name}: required")
        return out

    def body(self, route: Route, value: Any) -> dict[str, Any]:
        _invalid("body", self._body[route.operation_id], value)
        return cast(dict[str, Any], value)  # every body schema is an object


def _short_name(name: str) -> str:
    return name if len(name) <= 40 and re.fullmatch(r"[\w.\-\[\]]*", name) else _show(name)
