"""The HTTP body of a GraphQL request, checked before strawberry sees it.

``guard_graphql_body(app, limits)`` wraps the ASGI app. For ``POST /graphql`` it:
1. refuses a body over ``limits.max_body_bytes`` with 413 naming the limit (by Content-Length
   before reading, or while reading a body sent without one), so a huge body is never held;
2. answers a client that disconnects before its body is complete with nothing, and logs one
   line (not a traceback per connection);
3. refuses, with 400 and a message that says what is wrong, a body that is not UTF-8, not JSON,
   nested too deeply to parse, or not an object (or a list, which strawberry refuses as a batch)
   with a string ``query``, an object ``variables`` and a string ``operationName``;
4. refuses a query text over ``limits.max_query_bytes`` with 413 naming the limit;
5. hands the buffered body on unchanged.
"""

from __future__ import annotations

import json
import logging

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from api.limits import ApiLimits

log = logging.getLogger("atlas.api")


class BodyRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def check_body(body: bytes, limits: ApiLimits) -> None:
    """Raise BodyRefused unless ``body`` is a GraphQL request object within the limits (steps 3-4)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyRefused(400, f"the request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise BodyRefused(400, "the request body is JSON nested too deeply to parse") from None
    except ValueError as exc:
        raise BodyRefused(400, f"the request body is not valid JSON: {exc}") from None
    if isinstance(data, list):
        return  # a batch: strawberry refuses it (batching is off) with its own 400
    if not isinstance(data, dict):
        raise BodyRefused(
            400, f'the request body must be a JSON object like {{"query": "..."}}, not a JSON {type(data).__name__}'
        )
    query = data.get("query")
    if not isinstance(query, str):
        raise BodyRefused(400, "the request body has no 'query' string")
    if not isinstance(data.get("variables"), (dict, type(None))):
        raise BodyRefused(400, "'variables' must be a JSON object")
    if not isinstance(data.get("operationName"), (str, type(None))):
        raise BodyRefused(400, "'operationName' must be a string")
    n = len(query.encode("utf-8"))
    if n > limits.max_query_bytes:
        raise BodyRefused(413, f"the query text is {n} bytes, over the limit of {limits.max_query_bytes} bytes")


def guard_graphql_body(app, limits: ApiLimits):
    def too_large(n: str) -> BodyRefused:
        return BodyRefused(413, f"the request body is {n} bytes, over the limit of {limits.max_body_bytes} bytes")

    async def guarded(scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != "/graphql":
            return await app(scope, receive, send)
        try:
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
                raise too_large(declared.decode())
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    log.warning(
                        "client %s disconnected before sending its whole request body (%d bytes read)",
                        _peer(scope),
                        size,
                    )
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limits.max_body_bytes:
                    raise too_large(f"more than {limits.max_body_bytes}")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            content_type = dict(scope["headers"]).get(b"content-type", b"")
            if b"json" in content_type:
                check_body(body, limits)
        except BodyRefused as exc:
            return await JSONResponse({"errors": [{"message": exc.message}]}, status_code=exc.status)(
                scope, receive, send
            )

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        try:
            await app(scope, replay, send)
        except (ClientDisconnect, OSError):
            log.warning("client %s disconnected during its request", _peer(scope))

    return guarded


def _peer(scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"
