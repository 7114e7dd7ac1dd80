"""GraphiQL served from atlas's own assets (api/pages/assets.py), with the example queries of
docs/queries one click away: each example is a link that opens GraphiQL with that query."""

from __future__ import annotations

from api.pages import assets
from api.pages.html import Html, href, page, tag


def graphiql_page(example: str | None) -> tuple[Html, int]:
    missing = assets.missing_vendor()
    if missing:
        return page(
            "GraphiQL",
            tag(
                "main",
                tag("h1", "GraphiQL is not installed"),
                tag(
                    "p",
                    "These front-end files are missing: ",
                    ", ".join(missing),
                    ". Run `make setup` (it runs `npm ci` in frontend/); "
                    "the data pages and POST /graphql work without them.",
                    class_="error",
                ),
            ),
        ), 503
    examples = assets.example_queries()
    chosen = next((e for e in examples if e.name == example), None)
    bar = tag(
        "div",
        tag("b", "Examples: "),
        [
            tag("a", e.name, href=href("graphql", example=e.name), title=e.title, class_="example-query")
            for e in examples
        ],
        class_="examples",
    )
    body = tag(
        "div",
        id="graphiql",
        data_endpoint="/graphql",
        data_query=chosen.query if chosen else "",
        data_example=chosen.name if chosen else "",
    )
    return page(
        "GraphiQL",
        bar,
        body,
        styles=("/assets/vendor/graphiql.min.css",),
        scripts=(
            "/assets/vendor/react.production.min.js",
            "/assets/vendor/react-dom.production.min.js",
            "/assets/vendor/graphiql.min.js",
            "/assets/graphiql-init.js",
        ),
    ), 200
