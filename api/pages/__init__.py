"""The browser pages of `atlas serve`: an index, feature pages, circuit views and GraphiQL, all
server-rendered from the same read-only connection, named SQL and limits as the GraphQL API.

    routes(limits) -> list of Starlette routes; api/app.py mounts them first, and fallback() last
    (a 404 naming any other path; see api/pages/routes.py)
"""

from api.pages.routes import fallback, routes

__all__ = ["fallback", "routes"]
