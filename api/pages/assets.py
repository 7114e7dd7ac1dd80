"""Browser assets the server serves itself, so that every page works with no network.

Two kinds:
- *vendor* files: GraphiQL, React and ReactDOM, pinned in ``frontend/package-lock.json`` and
  installed by ``make setup`` (``npm ci``) into ``frontend/node_modules``. Only the files named in
  ``VENDOR`` are served (no directory listing, no path from the request reaches the file system).
- atlas's own files in ``api/pages/static`` (style sheet, the GraphiQL start-up script).

``ATLAS_FRONTEND_DIR`` points at another ``node_modules`` (a packaged install). A machine without
the vendor files still serves every data page and the JSON API; only GraphiQL's page says what is
missing and how to install it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATIC = Path(__file__).resolve().parent / "static"
QUERIES = REPO / "docs" / "queries"

# served name -> path inside node_modules (the UMD builds: no bundler, no CDN)
VENDOR = {
    "react.production.min.js": "react/umd/react.production.min.js",
    "react-dom.production.min.js": "react-dom/umd/react-dom.production.min.js",
    "graphiql.min.js": "graphiql/graphiql.min.js",
    "graphiql.min.css": "graphiql/graphiql.min.css",
}
OWN = {"atlas.css", "graphiql-init.js"}


def node_modules() -> Path:
    return Path(os.environ.get("ATLAS_FRONTEND_DIR", REPO / "frontend" / "node_modules"))


def vendor_path(name: str) -> Path | None:
    """The file behind /assets/vendor/NAME, or None when it is not one of ours or not installed."""
    rel = VENDOR.get(name)
    if rel is None:
        return None
    path = node_modules() / rel
    return path if path.is_file() else None


def own_path(name: str) -> Path | None:
    return STATIC / name if name in OWN else None


def missing_vendor() -> list[str]:
    return [rel for name, rel in VENDOR.items() if vendor_path(name) is None]


@dataclass(frozen=True)
class ExampleQuery:
    name: str  # file stem, e.g. 'drivers_via'
    title: str  # the file's first comment line
    query: str


def example_queries() -> list[ExampleQuery]:
    """The example queries of docs/queries (the ones tests run against an atlas), by file name."""
    out = []
    for path in sorted(QUERIES.glob("*.graphql")):
        text = path.read_text()
        first = text.splitlines()[0] if text else ""
        out.append(ExampleQuery(path.stem, first.lstrip("# ").strip() or path.stem, text))
    return out


def examples_json() -> str:
    return json.dumps([e.__dict__ for e in example_queries()])
