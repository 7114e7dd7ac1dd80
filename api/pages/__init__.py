"""The browser pages of `atlas serve`: an index, feature pages, circuit views and GraphiQL, all
server-rendered from the same read-only connection, named SQL and limits as the GraphQL API.

    routes(limits) -> list of Starlette routes; api/app.py mounts them (see api/pages/routes.py)
"""

from api.pages.routes import routes

__all__ = ["routes"]
