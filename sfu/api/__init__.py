"""The REST API for business applications, under ``/api/`` on the HTTP port (docs/api.md).

``routes.py`` holds the route table and the pure handlers over the room service
(``table.py`` the table's types); ``usage.py`` the store-backed handlers (usage records,
failed webhooks), ``times.py`` the time parameters they take;
``openapi.py`` builds the OpenAPI 3.1 document and the request validators from that table;
``schemas.py`` the JSON Schemas (shared objects come from the signaling contract);
``auth.py`` bearer tokens and grants; ``roles.py`` the grants of minted join tokens;
``ratelimit.py`` the per API key token buckets; ``jsonbody.py`` strict body decoding;
``errors.py`` the error codes and statuses; ``server.py`` the aiohttp shell.
"""

from sfu.api.server import ApiServer

__all__ = ["ApiServer"]
