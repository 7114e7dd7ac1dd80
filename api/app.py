"""The ASGI app: GraphQL (with GraphiQL in the browser) and graph export over one atlas.

    uvicorn-style: build_app("atlas.duckdb")  # or `atlas serve --db atlas.duckdb`

Routes: ``POST /graphql``, ``GET /graph/{model}/{source}/{index}`` (neighbourhood as circuit-tracer
graph JSON), and the browser pages of api/pages (index ``/``, feature pages, circuit views, GraphiQL
at ``GET /graphql`` from local assets). Every request holds one
version of the atlas from start to end (api/context.py), so a publish never breaks a request.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.asgi import GraphQL

from api import export, pages
from api.context import AtlasDatabase, Context
from api.errors import BadArgument
from api.http_guard import guard_graphql_body
from api.limits import ApiLimits
from api.schema import build_schema
from api.types.enums import EdgeKind
from atlas.errors import AtlasError


def _closing(database: AtlasDatabase):
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        database.close()

    return lifespan


class AtlasGraphQL(GraphQL[Context, None]):  # strawberry's view, typed by its context and (no) root value
    """The GraphQL endpoint: a request's context is the atlas version it holds, and the limits."""

    def __init__(self, limits: ApiLimits):
        super().__init__(
            build_schema(limits), graphql_ide=None, allow_queries_via_get=False, multipart_uploads_enabled=False
        )
        self.limits = limits

    async def get_context(self, request, response) -> Context:
        return Context(request.scope["atlas_version"], self.limits)


class AtlasApp:
    """The ASGI app: holds one atlas version for the whole of each HTTP request (see AtlasDatabase)."""

    def __init__(self, inner: ASGIApp, database: AtlasDatabase):
        self.inner = inner  # the routes, behind the GraphQL body guard
        self.database = database  # the atlas versions; for tests and logs (the lifespan closes it)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: the routes' (which close the database)
            await self.inner(scope, receive, send)
            return
        version = self.database.acquire()
        scope["atlas_version"] = version
        try:
            await self.inner(scope, receive, send)
        finally:
            self.database.release(version)


def build_app(db_path: str | Path, limits: ApiLimits = ApiLimits()) -> AtlasApp:
    database = AtlasDatabase(db_path, limits)
    gql = AtlasGraphQL(limits)

    async def graph_route(request: Request) -> JSONResponse:
        ctx = Context(request.scope["atlas_version"], limits)
        p = request.path_params
        try:
            fid = ctx.catalog.fid(f"{p['model']}/{p['source']}/{p['index']}")
            kind = request.query_params.get("kind", "virtual")
            if kind not in {k.value for k in EdgeKind}:
                raise BadArgument(f"kind {kind!r} is not one of virtual, era, twera")
            top_k = request.query_params.get("topK", "10")
            if re.fullmatch(r"[1-9][0-9]{0,5}", top_k) is None:
                raise BadArgument(f"topK {top_k!r} is not a positive integer")
            return JSONResponse(await anyio.to_thread.run_sync(export.neighbourhood, ctx, fid, kind, int(top_k)))
        except AtlasError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404 if "not in the atlas" in str(exc) else 400)

    routes = Starlette(
        routes=[
            *pages.routes(limits),  # the browser pages and GraphiQL from local assets (api/pages)
            Route("/graphql", gql, methods=["POST"]),
            Route("/graph/{model}/{source}/{index}", graph_route),
            pages.fallback(),  # any other GET: a 404 page naming the path
        ],
        lifespan=_closing(database),
    )
    return AtlasApp(guard_graphql_body(routes, limits), database)


def app_from_env():
    """The app for `atlas serve --workers N`: each uvicorn worker process builds its own."""
    import os

    return build_app(os.environ["ATLAS_SERVE_DB"])
