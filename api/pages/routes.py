"""HTTP routes of the pages. Each data page is one synchronous builder (api/pages/data.py) run in a
worker thread with the request's ``Context`` (the atlas version the request holds, the API's
limits and time-outs), rendered as HTML (api/pages/render.py) or, with ``?format=json``, as the
builder's JSON. Errors: a missing or malformed id -> 404 naming it; an argument over its limit
-> 400 naming the limit; a time-out -> 503. Every page carries the Content-Security-Policy.
"""

from __future__ import annotations

import anyio
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from api.context import Context
from api.errors import TimeLimit
from api.limits import ApiLimits
from api.pages import assets, data, render
from api.pages.graphiql import graphiql_page
from api.pages.html import CSP, page, tag
from atlas.errors import AtlasError, NotFoundError

SECURITY = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _html(body: str, status: int = 200, csp: str = CSP) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={"Content-Security-Policy": csp, **SECURITY})


def _error(exc: Exception, as_json: bool) -> Response:
    if isinstance(exc, NotFoundError):
        status, title = 404, "Not found"
    elif isinstance(exc, TimeLimit):
        status, title = 503, "Time limit"
    else:
        status, title = 400, "Bad request"
    if as_json:
        return JSONResponse({"error": str(exc)}, status_code=status, headers=SECURITY)
    return _html(
        page(
            title,
            tag(
                "main",
                tag("h1", title),
                tag("p", str(exc), class_="error"),
                tag("p", tag("a", "back to the index", href="/")),
            ),
        ),
        status,
    )


def _view(builder, renderer, limits: ApiLimits):
    async def endpoint(request: Request) -> Response:
        as_json = request.query_params.get("format") == "json"
        ctx = Context(request.scope["atlas_version"], limits)
        try:
            result = await anyio.to_thread.run_sync(builder, ctx, dict(request.path_params), dict(request.query_params))
        except AtlasError as exc:
            return _error(exc, as_json)
        if as_json:
            return JSONResponse(result, headers=SECURITY)
        return _html(renderer(result))

    return endpoint


async def graphiql(request: Request) -> Response:
    if "text/html" not in request.headers.get("accept", ""):  # a client, not a browser: queries are POST only
        return JSONResponse(
            {"error": "GET /graphql serves GraphiQL to browsers; send queries by POST"},
            status_code=405,
            headers=SECURITY,
        )
    body, status = graphiql_page(request.query_params.get("example"))
    return _html(body, status)  # GraphiQL 3 runs under the same CSP: no inline script or style


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    path = assets.own_path(name)
    if path is None:
        return _error(NotFoundError(f"asset {name!r} is not one of atlas's files"), False)
    return FileResponse(path, headers={"Cache-Control": "no-cache", **SECURITY})


async def vendor(request: Request) -> Response:
    name = request.path_params["name"]
    path = assets.vendor_path(name)
    if path is None:
        return _error(
            NotFoundError(
                f"front-end file {name!r} is not installed (run `make setup`)"
                if name in assets.VENDOR
                else f"front-end file {name!r} is not one atlas serves"
            ),
            False,
        )
    return FileResponse(path, headers={"Cache-Control": "public, max-age=86400", **SECURITY})


async def favicon(_request: Request) -> Response:
    return Response(status_code=204)


async def not_found(request: Request) -> Response:
    as_json = request.query_params.get("format") == "json" or "text/html" not in request.headers.get("accept", "")
    return _error(NotFoundError(f"there is no page at {request.url.path!r}"), as_json)


def fallback() -> Route:
    """Last route of the app: any other GET is a 404 naming the path."""
    return Route("/{path:path}", not_found, methods=["GET"])


def routes(limits: ApiLimits) -> list[Route]:
    """The page routes; GET /graphql is GraphiQL (POST /graphql stays the API's)."""
    return [
        Route("/", _view(data.index, render.index, limits), methods=["GET"]),
        Route("/feature/{model}/{source}/{index}", _view(data.feature, render.feature, limits), methods=["GET"]),
        Route("/circuit/drivers", _view(data.drivers, render.drivers, limits), methods=["GET"]),
        Route("/circuit/paths", _view(data.paths, render.paths, limits), methods=["GET"]),
        Route("/graphql", graphiql, methods=["GET"]),
        Route("/assets/vendor/{name}", vendor, methods=["GET"]),
        Route("/assets/{name}", asset, methods=["GET"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
    ]
